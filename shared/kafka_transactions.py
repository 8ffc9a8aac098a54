"""One batch, one Kafka transaction: a stage's outputs and its input offsets commit together or not at all.

    init(producer)                                   # once, fences an earlier process with the same id
    publish_and_commit(producer, consumer, sends, offsets)
    abort(producer)                                  # after a failure the group can recover from

A consumer reading `read_committed` then sees each output of a batch once, whether the process dies
before, during or after it: an open transaction of a killed process is aborted by the broker (at once when
a process with the same `transactional_id` calls `init`, else after `transaction_timeout_ms`).

kafka-python 3.0.12's own `commit_transaction`, `abort_transaction` and `send_offsets_to_transaction` wait
for the coordinator with no deadline (`TransactionalRequestResult.wait()` without a timeout): a coordinator
that went away would hang the loop where liveness can only kill it. `_wait` calls the same transaction
manager steps with a deadline, and raises KafkaTimeoutError (a broker fault, shared.faults) when it passes.
Two more of its bugs are worked around below: a commit that goes ahead without a batch that failed, and
refused offsets that travel on into the next transaction.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (CommitFailedError, FencedInstanceIdError, IllegalGenerationError, KafkaTimeoutError,
                          RebalanceInProgressError, UnknownMemberIdError)
from kafka.structs import OffsetAndMetadata

# The group moved on while the batch was worked on: abort, and the partitions' new owner reads it again.
GROUP_MOVED = (CommitFailedError, IllegalGenerationError, UnknownMemberIdError, RebalanceInProgressError,
               FencedInstanceIdError)
# Each step's deadline: long enough to ride out a coordinator's failover (the dead node is fenced after
# broker.session.timeout.ms, 9 s, then found again), shorter than the transaction timeout (60 s by default),
# so that the broker does not abort a transaction the loop still waits for.
TIMEOUT_S = 45.0
log = logging.getLogger(__name__)


class Producers:
    """The producer a transactional loop uses, and how to replace it when its transaction coordinator stopped
    answering. kafka-python 3.0.12's transaction manager does not always find the new coordinator after
    the old one's broker died (seen: no request for 45 s after the first retry); a new producer with the
    same transactional id starts clean, and its `init_transactions` aborts the abandoned transaction."""

    def __init__(self, producer: KafkaProducer, make: Callable[[], KafkaProducer] | None = None,
                 max_renewals: int = 3):
        self.producer, self.make, self.max_renewals = producer, make, max_renewals
        self.renewals = 0  # in a row, without a commit between

    def renew(self, why: BaseException) -> bool:
        """Replace the producer; False when there is no way to, or it did not help `max_renewals` times."""
        if self.make is None or self.renewals >= self.max_renewals:
            return False
        self.renewals += 1
        log.warning("the transaction coordinator did not answer (%s): a new producer (%d of %d)", why,
                    self.renewals, self.max_renewals)
        try:
            self.producer.close(timeout=0)
        except Exception as e:  # noqa: BLE001 (a wedged producer: what it held is not committed anyway)
            log.debug("closing the old producer: %s", e)
        self.producer = self.make()
        init(self.producer)
        return True

    def succeeded(self) -> None:
        self.renewals = 0


def _wait(producer: KafkaProducer, what: str, start: Callable[[], Any], timeout_s: float) -> None:
    result = start()
    producer._sender.wakeup()  # noqa: SLF001 (what the public methods do, without their unbounded wait)
    if not result.wait(timeout_ms=int(timeout_s * 1000)):
        raise KafkaTimeoutError(f"the transaction coordinator did not answer {what} within {timeout_s:.0f} s")


def init(producer: KafkaProducer) -> None:
    """Register the transactional id (bounded by the producer's max_block_ms)."""
    producer.init_transactions()


def publish_and_commit(producer: KafkaProducer, consumer: KafkaConsumer | None,
                       sends: Sequence[tuple[str, bytes | None, bytes]],
                       offsets: Mapping[TopicPartition, int], timeout_s: float = TIMEOUT_S) -> None:
    """Send every (topic, key, value) and commit `offsets` (next offset to read, per partition) for the
    consumer's group, atomically. Raises what failed; the caller aborts (GROUP_MOVED) or exits."""
    tm = producer._transaction_manager  # noqa: SLF001
    producer.begin_transaction()
    futures = [producer.send(topic, key=key, value=value) for topic, key, value in sends]
    # Every record acknowledged before the commit is even asked for: kafka-python commits a transaction
    # whose batch failed retriably (a delivery timeout) or whose send() failed at once (no metadata, a topic
    # not authorized), and the offsets would then commit without their outputs.
    producer.flush(timeout=timeout_s)
    for fut in futures:
        if not fut.is_done:
            raise KafkaTimeoutError(f"an output was not acknowledged within {timeout_s:.0f} s")
        if fut.failed():
            raise fut.exception
    if offsets and consumer is not None:
        group = consumer.group_metadata()
        if group.generation_id < 0 or not group.member_id:
            # kafka-python resets its generation when the coordinator forgot the member (its session
            # expired); the broker takes a transactional commit with generation -1 into a live group
            # unfenced, so the partitions' new owner and this zombie would both publish the batch.
            raise CommitFailedError("this member left the group (its session expired) during the batch")
        meta = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        _wait(producer, "the offsets", lambda: tm.send_offsets_to_transaction(meta, group), timeout_s)
    _wait(producer, "the commit", tm.begin_commit, timeout_s)


def abort(producer: KafkaProducer, timeout_s: float = TIMEOUT_S) -> None:
    tm = producer._transaction_manager  # noqa: SLF001
    _wait(producer, "the abort", tm.begin_abort, timeout_s)
    # kafka-python 3.0.12 keeps the offsets of a TxnOffsetCommit the coordinator refused (IllegalGeneration)
    # and sends them again with the next transaction's: the aborted batch's offsets would commit then.
    with tm._lock:  # noqa: SLF001
        tm._pending_txn_offset_commits.clear()  # noqa: SLF001
