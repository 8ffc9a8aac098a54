"""A minimal stage for platform tests, run in-process or as a subprocess that a test kills.

    python -m tests.integration.echo_stage BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP [MARKER_FILE]

It copies each frame to OUT_TOPIC; a frame whose camera id is "poison" is rejected as invalid, raised
with its index before any work (the Stage contract), so the loop dead-letters it and runs the rest.
With MARKER_FILE it writes the file after its first batch is processed and then hangs inside that
batch (before produce and commit), so that the test can SIGKILL it at the worst moment.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from shared import kafka_loop, metrics
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


def main(argv: list[str]) -> None:
    bootstrap, in_topic, out_topic, group = argv[:4]
    marker = Path(argv[4]) if len(argv) > 4 else None
    consumer = kafka_loop.make_consumer(bootstrap, group, "echo-worker")
    producer = kafka_loop.make_producer(bootstrap, "echo-worker")
    kafka_loop.run_stage(echo_stage(in_topic, out_topic, marker), consumer, producer, max_batch_size=50,
                         max_batch_wait_ms=200, health=metrics.Health("echo"), stop=kafka_loop.StopFlag().install())
    kafka_loop.close(consumer, producer)


if __name__ == "__main__":
    main(sys.argv[1:])
