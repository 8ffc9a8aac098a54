"""Run a stage through the real shared loop (shared.kafka_loop.run_stage), in this process, on the real broker.

The input topic is filled before the clock starts; the clock runs from the first decode (the first batch
has been fetched) to the return of run_stage after the last batch's outputs were acknowledged and its
offsets committed: consume, decode, process, produce, commit, as the service does, minus process start-up
and the group join.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

from bench.kafka_util import delete_groups, produce, run_id
from shared import kafka_loop, metrics


@dataclass
class LoopRig:
    """One input topic and one consumer group for repeated runs of one stage; each run adds fresh input."""
    bootstrap: str
    stage: kafka_loop.Stage
    max_batch_size: int
    max_batch_wait_ms: int = 20
    group: str = ""

    def __post_init__(self) -> None:
        self.group = self.group or f"bench-loop-{self.stage.name}-{run_id()}"

    def run(self, values: list[bytes], keys: list[bytes] | None = None, timeout_s: float = 300.0) -> float:
        """Put `values` on the input topic, then run the loop until every one is processed; seconds."""
        produce(self.bootstrap, self.stage.input_topic, values, keys)
        n, done = len(values), [0]
        first: list[float] = []
        stop = kafka_loop.StopFlag()

        def decode(raw: bytes):
            if not first:
                first.append(time.perf_counter())
            return self.stage.decode(raw)

        def process(items: list) -> list:
            out = self.stage.process(items)
            done[0] += len(items)
            if done[0] >= n:
                stop.set()  # checked by the loop after this batch is produced and committed
            return out

        stage = dataclasses.replace(self.stage, decode=decode, process=process, idle=None)
        consumer = kafka_loop.make_consumer(self.bootstrap, self.group, f"bench-{self.stage.name}",
                                            max_poll_records=self.max_batch_size)
        producer = kafka_loop.make_producer(self.bootstrap, f"bench-{self.stage.name}")
        watchdog = threading.Timer(timeout_s, stop.set)  # a lost input must not hang the benchmark
        watchdog.start()
        try:
            kafka_loop.run_stage(stage, consumer, producer, max_batch_size=self.max_batch_size,
                                 max_batch_wait_ms=self.max_batch_wait_ms, health=metrics.Health(stage.name),
                                 stop=stop)
            end = time.perf_counter()
        finally:
            watchdog.cancel()
            kafka_loop.close(consumer, producer)
        if done[0] < n:
            raise RuntimeError(f"{self.stage.name} loop handled {done[0]} of {n} inputs")
        return end - first[0]

    def close(self) -> None:
        """Delete the consumer group (its offsets would otherwise outlive the run's topics for a while)."""
        delete_groups(self.bootstrap, [self.group])
