"""The one loop that runs every consuming stage: poll -> decode -> process -> produce -> commit.

Delivery is at-least-once. Offsets are committed only after the broker acknowledged every output of
the batch (auto-commit is off), so a worker killed anywhere in the loop loses nothing: its partitions
go to another member, which reads again from the last commit. A stage that asks for it
(`Stage.transactional`: the matcher) publishes a batch's outputs and commits its offsets in one Kafka
transaction instead (shared/kafka_transactions.py), so that read_committed consumers see each output
once; what it keeps outside Kafka it writes in `Stage.committed`, after the commit.

Bad input costs one dead letter, never the process. A message that cannot be decoded, that the stage
names as invalid (`shared.stage.InvalidMessage`, returned or raised with its index), or whose processing
raised anything else, goes to the dead-letter topic with the reason and where it came from, and its
offset is committed with the rest; the other messages of the batch are processed once, as if it had not
been there. Only the dependency faults declared in `shared.faults` (broker, Redis, GPU memory) stop the
loop without committing: the process exits non-zero, the orchestrator restarts it, and the inputs are
read again once the dependency is back. SIGTERM and SIGINT finish the batch in hand, commit it, and
leave the group cleanly.
"""
from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from typing import Any, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from shared import kafka_transactions, metrics, topics
from shared.kafka_clients import DELIVERY_TIMEOUT_S, make_consumer, make_producer, security_of
from shared.membership import Membership, partitions_owned_by_others, wait_for_topic
from shared.schemas import DEAD_LETTER_MAX_BYTES, dead_letter
from shared.stage import InvalidMessage, Output, Stage, handle

log = logging.getLogger(__name__)
# the clients' factories live in shared.kafka_clients; the loop's callers find them here too
__all__ = ["StopFlag", "close", "make_consumer", "make_producer", "poll_batch", "run_stage"]


class StopFlag:
    """Set by SIGTERM/SIGINT (or by a test); the loop checks it between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_: Any) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def install(self) -> "StopFlag":
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, self.set)
        return self


class _Assignment(ConsumerRebalanceListener):
    def __init__(self, stage: str, health: metrics.Health):
        self.stage, self.health = stage, health

    def on_partitions_revoked(self, revoked):
        log.info("%s: partitions revoked: %s", self.stage, sorted(tp.partition for tp in revoked))
        metrics.ASSIGNED_PARTITIONS.labels(self.stage).set(0)  # eager rebalancing: all go, then some return
        for tp in revoked:  # a partition another member now owns must not keep reporting our old lag
            try:
                metrics.CONSUMER_LAG.remove(self.stage, tp.topic, str(tp.partition))
            except KeyError:
                pass

    def on_partitions_assigned(self, assigned):
        log.info("%s: partitions assigned: %s", self.stage, sorted(tp.partition for tp in assigned))
        metrics.ASSIGNED_PARTITIONS.labels(self.stage).set(len(assigned))
        # Ready with partitions only; a member given none is ready only if the group truly has none to give,
        # which Membership.check asks the broker (an empty first assignment is kafka-python's bug's first step).
        self.health.ready = bool(assigned)


class _InvalidRatio:
    """arroyo's DlqLimit: a burst of invalid messages means a broken producer, not bad luck; stop then."""

    def __init__(self, max_ratio: float, window: int = 1000, min_seen: int = 100):
        self.max_ratio, self.min_seen = max_ratio, min_seen
        self.outcomes: collections.deque[bool] = collections.deque(maxlen=window)

    def add(self, invalid: bool) -> None:
        self.outcomes.append(invalid)
        n = len(self.outcomes)
        if self.max_ratio < 1 and n >= self.min_seen and sum(self.outcomes) / n > self.max_ratio:
            raise RuntimeError(f"{sum(self.outcomes)} of the last {n} messages were invalid "
                               f"(more than {self.max_ratio:.0%}): stopping instead of dead-lettering a whole topic")


def poll_batch(consumer: KafkaConsumer, max_size: int, max_wait_ms: int, idle_ms: int = 200) -> list:
    """Up to `max_size` records: wait up to `idle_ms` for a first one, then `max_wait_ms` to fill the batch."""
    out: list = []
    deadline = None
    while len(out) < max_size:
        if deadline is None:
            timeout = idle_ms
        else:
            timeout = int((deadline - time.monotonic()) * 1000)
            if timeout <= 0:
                break
        got = consumer.poll(timeout_ms=timeout, max_records=max_size - len(out))
        for recs in got.values():
            out.extend(recs)
        if not out:
            return out
        if deadline is None:
            deadline = time.monotonic() + max_wait_ms / 1000
    return out


def run_stage(stage: Stage, consumer: KafkaConsumer, producer: KafkaProducer | kafka_transactions.Producers, *,
              max_batch_size: int, max_batch_wait_ms: int, health: metrics.Health, stop: StopFlag | None = None,
              max_invalid_ratio: float = 0.5, max_batches: int | None = None,
              dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES) -> int:
    """Run until `stop` is set (or `max_batches` batches, for tests); return the number of inputs handled.
    A transactional stage may be given `Producers` (a producer and how to make another): a transaction whose
    coordinator stopped answering (a broker lost) is then abandoned with its producer, and the batch read
    again through a new one, instead of stopping the process."""
    producers = producer if isinstance(producer, kafka_transactions.Producers) else \
        kafka_transactions.Producers(producer)
    stop = StopFlag() if stop is None else stop  # (not `or`: an unset flag is falsy)
    listener = _Assignment(stage.name, health)
    consumer.subscribe([stage.input_topic], listener=listener)
    n_partitions = wait_for_topic(consumer, stage.input_topic, lambda: bool(stop), health.beat)
    membership = _membership(consumer, stage, health, listener, n_partitions)
    if stage.transactional:
        kafka_transactions.init(producers.producer)
    invalid = _InvalidRatio(max_invalid_ratio)
    handled, batches, last_lag = 0, 0, 0.0
    while not stop and (max_batches is None or batches < max_batches):
        records = poll_batch(consumer, max_batch_size, max_batch_wait_ms)
        membership.check()  # raises MembershipLost when rejoining did not help: the process exits non-zero
        health.beat()
        if not records:
            if stage.idle is not None:
                _publish(stage, consumer, producers, stage.idle(), [])
            continue
        batches += 1
        metrics.MESSAGES_IN.labels(stage.name, stage.input_topic).inc(len(records))

        # decode + process (shared.stage.handle, pure): one result per record; bad ones are dead-lettered
        t0 = time.perf_counter()
        results = handle(stage, [rec.value for rec in records])
        metrics.PROCESS_SECONDS.labels(stage.name).observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.labels(stage.name).observe(len(records))
        outputs: list[Output] = []
        for rec, res in zip(records, results):
            if isinstance(res, InvalidMessage):
                outputs.append(_dlq(stage.name, dead_letter_max_bytes, rec, f"{res.kind}: {res.reason}"))
                invalid.add(True)
            else:
                outputs.extend(res)
                invalid.add(False)

        _publish(stage, consumer, producers, outputs, records)
        handled += len(records)
        if time.monotonic() - last_lag > 5:
            _report_lag(consumer, stage.name)
            last_lag = time.monotonic()
    # graceful stop: the last batch was committed above; leave the group so partitions move at once
    return handled


def _membership(consumer: KafkaConsumer, stage: Stage, health: metrics.Health, listener: _Assignment,
                n_partitions: int) -> Membership:
    group = consumer.config["group_id"]
    bootstrap = consumer.config["bootstrap_servers"]
    security = security_of(consumer.config)

    def rejoin() -> None:
        consumer.unsubscribe()
        consumer.subscribe([stage.input_topic], listener=listener)

    return Membership(consumer, stage.name, stage.input_topic, group, health, rejoin,
                      owned_elsewhere=lambda: partitions_owned_by_others(bootstrap, group, stage.input_topic,
                                                                         n_partitions, **security))


def _publish(stage: Stage, consumer: KafkaConsumer, producers: kafka_transactions.Producers, outputs: list[Output],
             records: Sequence) -> None:
    """Every output acknowledged before the inputs are committed; in one transaction for a transactional
    stage. Then `stage.committed`, so that what the stage keeps outside Kafka follows what consumers see."""
    producer = producers.producer
    if not stage.transactional:
        _produce(producer, stage.name, outputs)
        if records:
            _commit(consumer, records, stage.name)
    elif outputs or records:
        try:
            kafka_transactions.publish_and_commit(producer, consumer, [(o.topic, o.key, o.value) for o in outputs],
                                                  _next_offsets(records))
        except kafka_transactions.GROUP_MOVED as e:
            # Outputs discarded, offsets not committed: the partitions' owner reads the batch again. This
            # process forgets what the batch taught it (`stage.aborted`) and reads again from the commit.
            log.warning("%s: the group rebalanced during a transaction; aborted, reading again: %s", stage.name, e)
            kafka_transactions.abort(producer)
            _rewind(consumer, records)
            if stage.aborted is not None:
                stage.aborted()
            return
        except KafkaTimeoutError as e:
            if not producers.renew(e):  # no other producer to be had: a dependency fault, the process exits
                raise
            # The old transaction is aborted by the new producer's init (same id, next epoch); nothing of the
            # batch was committed, so it is read again, and the stage forgets it as after a rebalance.
            _rewind(consumer, records)
            if stage.aborted is not None:
                stage.aborted()
            return
        producers.succeeded()
        for o in outputs:
            metrics.MESSAGES_OUT.labels(stage.name, o.topic).inc()
        if records:
            metrics.COMMITS.labels(stage.name).inc()
    if stage.committed is not None:
        stage.committed()


def _next_offsets(records: Sequence) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for rec in records:
        tp = TopicPartition(rec.topic, rec.partition)
        offsets[tp] = max(offsets.get(tp, -1), rec.offset + 1)
    return offsets


def _rewind(consumer: KafkaConsumer, records: Sequence) -> None:
    """Seek the partitions still ours back to the batch's first offsets."""
    first: dict[TopicPartition, int] = {}
    for rec in records:
        tp = TopicPartition(rec.topic, rec.partition)
        first[tp] = min(first.get(tp, rec.offset), rec.offset)
    owned = consumer.assignment()
    for tp, off in first.items():
        if tp in owned:
            consumer.seek(tp, off)


def _produce(producer: KafkaProducer, stage: str, outputs: list[Output]) -> None:
    """Send and wait for every acknowledgement; a refusal raises, so nothing gets committed for it."""
    if not outputs:
        return
    futures = [(o.topic, producer.send(o.topic, key=o.key, value=o.value)) for o in outputs]
    producer.flush()
    for topic, fut in futures:
        fut.get(timeout=DELIVERY_TIMEOUT_S + 5)  # the producer gives up first, with its own reason
        metrics.MESSAGES_OUT.labels(stage, topic).inc()


def _dlq(stage: str, max_bytes: int, rec: Any, reason: str) -> Output:
    metrics.DEAD_LETTERED.labels(stage, reason.split(":")[0]).inc()
    log.warning("%s: dead-lettering %s[%d]@%d: %s", stage, rec.topic, rec.partition, rec.offset, reason)
    return Output(topics.DEAD_LETTER.name, rec.key,
                  dead_letter(reason, stage, rec.topic, rec.partition, rec.offset, rec.key, rec.value, time.time(),
                              max_bytes))


def _commit(consumer: KafkaConsumer, records: Sequence, stage: str) -> None:
    offsets = _next_offsets(records)
    try:
        consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        metrics.COMMITS.labels(stage).inc()
    except CommitFailedError as e:
        # The group rebalanced while we worked: the new owner reads these again (duplicates, never loss).
        log.warning("%s: commit failed after a rebalance, outputs will be reprocessed: %s", stage, e)


def _report_lag(consumer: KafkaConsumer, stage: str) -> None:
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            pos = consumer.position(tp, timeout_ms=1000)
        except Exception:  # position unknown right after an assignment
            continue
        if pos is not None:
            metrics.CONSUMER_LAG.labels(stage, tp.topic, str(tp.partition)).set(max(0, high - pos))


def close(consumer: KafkaConsumer, producer: KafkaProducer) -> None:
    """Bounded: a transactional producer whose commit failed may never finish a flush."""
    try:
        producer.flush(timeout=10)
    except Exception as e:  # noqa: BLE001 (what was not sent is not committed: it is read again)
        log.warning("close: the producer did not flush within 10 s: %s", e)
    producer.close(timeout=10)
    consumer.close(autocommit=False)
