"""Small Kafka helpers for the benchmarks and the scale-out test: unique topics, offsets, lag, bulk produce.

Every run makes its own topics and groups (a random suffix), so nothing here reads or disturbs the
demo's topics or another engineer's run, and `Topics` deletes them again on exit.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Iterable

from kafka import TopicPartition

from shared import kafka_admin
from shared.kafka_clients import Access, access_of, make_admin, make_consumer, make_producer

__all__ = ["Offsets", "Topics", "delete_groups", "produce", "run_id"]


def delete_groups(bootstrap: Access, groups) -> None:
    a = access_of(bootstrap)
    kafka_admin.delete_groups(a.bootstrap, groups, **a.security_kwargs())


def run_id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Topics:
    """Create uniquely named topics; `close()` (or leaving the `with` block) deletes them."""
    bootstrap: Access
    names: list[str] = field(default_factory=list)

    def make(self, prefix: str, partitions: int) -> str:
        name = f"{prefix}-{run_id()}"
        a = access_of(self.bootstrap)
        kafka_admin.create_topics(a.bootstrap, {name: partitions}, **a.security_kwargs())
        self.names.append(name)
        return name

    def close(self) -> None:
        a = access_of(self.bootstrap)
        kafka_admin.delete_topics(a.bootstrap, self.names, **a.security_kwargs())
        self.names.clear()

    def __enter__(self) -> "Topics":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Offsets:
    """End offsets of topics and committed offsets of groups, from one long-lived pair of clients."""

    def __init__(self, bootstrap: Access):
        self.consumer = make_consumer(bootstrap, None, "bench-offsets")
        self.admin = make_admin(bootstrap)
        self._parts: dict[str, list[TopicPartition]] = {}

    def partitions(self, topic: str) -> list[TopicPartition]:
        if topic not in self._parts:
            ids = self.consumer.partitions_for_topic(topic) or set()
            self._parts[topic] = [TopicPartition(topic, p) for p in sorted(ids)]
        return self._parts[topic]

    def end(self, topic: str) -> int:
        """Messages ever written to `topic` (sum of its end offsets; the topics here are never trimmed)."""
        return sum(self.consumer.end_offsets(self.partitions(topic)).values())

    def committed(self, group: str, topic: str) -> int:
        got = self.admin.list_group_offsets({group: None}).get(group, {})
        return sum(max(0, om.offset) for tp, om in got.items() if tp.topic == topic)

    def lag(self, group: str, topic: str) -> int:
        """Messages in `topic` that `group` has not committed yet."""
        return max(0, self.end(topic) - self.committed(group, topic))

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def produce(bootstrap: Access, topic: str, values: Iterable[bytes], keys: Iterable[bytes | None] | None = None,
            partitions: int | None = None) -> int:
    """Send every value and wait for all acknowledgements; with `partitions`, spread round-robin over them
    (so that each consumer of a group gets work whatever the key hash does). Returns the count."""
    producer = make_producer(bootstrap, "bench-produce", max_request_size=4_000_000)
    n = 0
    try:
        keys = iter(keys) if keys is not None else None
        futures = []
        for v in values:
            k = next(keys) if keys is not None else None
            part = n % partitions if partitions else None
            futures.append(producer.send(topic, key=k, value=v, partition=part))
            n += 1
        producer.flush()
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close(timeout=10)
    return n


def read_all(bootstrap: Access, topic: str, expect: int, timeout_s: float = 60.0) -> list:
    """Every record of `topic` from the start, until `expect` records or `timeout_s` (no group, no commit)."""
    import time

    consumer = make_consumer(bootstrap, None, "bench-read")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expect and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        consumer.close()
