"""A minimal stage for platform tests, run in-process or as a subprocess that a test kills.

    python -m tests.integration.echo_stage BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP [MARKER_FILE]
    python -m tests.integration.echo_stage BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP --transactional TXN_ID [DIE_MARKER]

It copies each frame to OUT_TOPIC; a frame whose camera id is "poison" is rejected as invalid, raised
with its index before any work (the Stage contract), so the loop dead-letters it and runs the rest.
With MARKER_FILE it writes the file after its first batch is processed and then hangs inside that
batch (before produce and commit), so that the test can SIGKILL it at the worst moment.

`--transactional TXN_ID` runs it as a transactional stage (the matcher's mode). With DIE_MARKER, and while
that file does not exist, the process writes it and SIGKILLs itself inside its first transaction: after its
outputs reached the broker, before the commit.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

from shared import kafka_loop, kafka_transactions, metrics
from shared.schemas import Frame
from shared.stage import InvalidMessage, Output, Stage


def echo_stage(in_topic: str, out_topic: str, marker: Path | None = None) -> Stage:
    def process(frames: list[Frame]) -> list[list[Output]]:
        for i, f in enumerate(frames):
            if f.camera_id == "poison":
                raise InvalidMessage("poison camera", index=i)
        if marker is not None:
            marker.write_text(str(len(frames)))
            time.sleep(3600)  # killed here, mid-batch
        return [[Output(out_topic, f.camera_id.encode(), f.encode())] for f in frames]

    return Stage("echo", in_topic, Frame.decode, process)


def die_inside_the_first_transaction(producer, marker: Path) -> None:
    wait = kafka_transactions._wait

    def wait_or_die(p, what, start, timeout_s):
        if what == "the commit" and not marker.exists():
            p.flush()  # the outputs are in the log, uncommitted
            marker.write_text("killed inside a transaction")
            os.kill(os.getpid(), signal.SIGKILL)
        return wait(p, what, start, timeout_s)

    kafka_transactions._wait = wait_or_die


def main(argv: list[str]) -> None:
    bootstrap, in_topic, out_topic, group = argv[:4]
    txn_id = argv[5] if len(argv) > 5 and argv[4] == "--transactional" else None
    marker = Path(argv[6 if txn_id else 4]) if len(argv) > (6 if txn_id else 4) else None
    consumer = kafka_loop.make_consumer(bootstrap, group, "echo-worker", isolation_level="read_committed")
    producer = kafka_loop.make_producer(bootstrap, "echo-worker", **(
        {"transactional_id": txn_id, "transaction_timeout_ms": 10_000} if txn_id else {}))
    stage = echo_stage(in_topic, out_topic, None if txn_id else marker)
    if txn_id:
        stage = dataclasses.replace(stage, transactional=True)
        if marker is not None:
            die_inside_the_first_transaction(producer, marker)
    kafka_loop.run_stage(stage, consumer, producer, max_batch_size=50,
                         max_batch_wait_ms=200, health=metrics.Health("echo"), stop=kafka_loop.StopFlag().install())
    kafka_loop.close(consumer, producer)


if __name__ == "__main__":
    main(sys.argv[1:])
