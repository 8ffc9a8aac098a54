"""The transactional publish's order of steps, around kafka-python's bugs (fakes of the producer's parts: the
real broker path is tests/integration/test_transactions.py)."""
from __future__ import annotations

import threading

import pytest
from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaTimeoutError, TopicAuthorizationFailedError
from kafka.future import Future
from kafka.structs import ConsumerGroupMetadata

from shared import kafka_transactions

TP = TopicPartition("embeddings", 0)


class Result:
    def wait(self, timeout_ms=None):
        return True


class FakeTM:
    def __init__(self, log):
        self.log, self._lock = log, threading.Condition()
        self._pending_txn_offset_commits = {}

    def send_offsets_to_transaction(self, offsets, group):
        self.log.append(("offsets", group.generation_id))
        self._pending_txn_offset_commits.update(offsets)
        return Result()

    def begin_commit(self):
        self.log.append("commit")
        return Result()

    def begin_abort(self):
        self.log.append("abort")
        return Result()


class FakeProducer:
    def __init__(self, fail: BaseException | None = None):
        self.log: list = []
        self._transaction_manager = FakeTM(self.log)
        self._sender = type("S", (), {"wakeup": lambda self: None})()
        self.fail = fail

    def begin_transaction(self):
        self.log.append("begin")

    def send(self, topic, key=None, value=None):
        f = Future()
        f.failure(self.fail) if self.fail else f.success(None)
        return f

    def flush(self, timeout=None):
        self.log.append("flush")


class FakeConsumer:
    def __init__(self, generation=5, member="m-1"):
        self.md = ConsumerGroupMetadata("g", generation, member)

    def group_metadata(self):
        return self.md


def test_outputs_are_acknowledged_before_the_offsets_and_the_commit():
    p = FakeProducer()
    kafka_transactions.publish_and_commit(p, FakeConsumer(), [("events", b"k", b"v")], {TP: 7})
    assert p.log == ["begin", "flush", ("offsets", 5), "commit"]


def test_a_failed_send_raises_before_any_offset_or_commit_is_sent():
    p = FakeProducer(fail=TopicAuthorizationFailedError("identity-events"))
    with pytest.raises(TopicAuthorizationFailedError):
        kafka_transactions.publish_and_commit(p, FakeConsumer(), [("events", b"k", b"v")], {TP: 7})
    assert "commit" not in p.log and not any(isinstance(x, tuple) for x in p.log)


def test_a_member_whose_session_expired_commits_nothing():
    p = FakeProducer()
    with pytest.raises(CommitFailedError):  # GROUP_MOVED: the loop aborts and reads the batch again
        kafka_transactions.publish_and_commit(p, FakeConsumer(generation=-1, member=""), [("e", None, b"v")], {TP: 7})
    assert "commit" not in p.log
    assert issubclass(CommitFailedError, kafka_transactions.GROUP_MOVED)


def test_an_abort_drops_the_offsets_kafka_python_would_send_with_the_next_transaction():
    p = FakeProducer()
    p._transaction_manager._pending_txn_offset_commits[TP] = 7  # left by a refused TxnOffsetCommit
    kafka_transactions.abort(p)
    assert p._transaction_manager._pending_txn_offset_commits == {} and p.log == ["abort"]


def test_a_coordinator_that_never_answers_times_out():
    class Never(Result):
        def wait(self, timeout_ms=None):
            return False

    p = FakeProducer()
    p._transaction_manager.begin_commit = lambda: Never()
    with pytest.raises(KafkaTimeoutError, match="did not answer the commit"):
        kafka_transactions.publish_and_commit(p, None, [], {}, timeout_s=0.01)


def test_a_wedged_producer_is_replaced_a_bounded_number_of_times():
    made = []

    class Renewable(FakeProducer):
        def init_transactions(self):
            self.log.append("init")

        def close(self, timeout=None):
            self.log.append(("close", timeout))

    def make():
        made.append(Renewable())
        return made[-1]

    first = Renewable()
    producers = kafka_transactions.Producers(first, make, max_renewals=2)
    assert producers.renew(KafkaTimeoutError("x")) and producers.producer is made[0]
    assert first.log == [("close", 0)] and made[0].log == ["init"]  # the new one fences the old transaction
    assert producers.renew(KafkaTimeoutError("x"))
    assert not producers.renew(KafkaTimeoutError("x")), "three in a row without a commit: the process exits"
    producers.succeeded()
    assert producers.renew(KafkaTimeoutError("x"))
    assert not kafka_transactions.Producers(first).renew(KafkaTimeoutError("x")), "nothing to make one with"
