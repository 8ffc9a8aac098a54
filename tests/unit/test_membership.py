"""The membership watchdog (shared/membership.py) on a stand-in consumer: pure logic, no broker."""

import pytest
from kafka.structs import MemberState

from shared import metrics
from shared.membership import Membership, MembershipLost


class FakeCoordinator:
    def __init__(self):
        self.state, self.rejoin_pending = MemberState.STABLE, False

    def need_rejoin(self):
        return self.rejoin_pending


class FakeConsumer:
    def __init__(self):
        self._coordinator = FakeCoordinator()
        self.parts: set = set()

    def assignment(self):
        return self.parts


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def watch(owned_elsewhere=lambda: False, **kw):
    consumer, clock, rejoins = FakeConsumer(), Clock(), []
    health = metrics.Health("test")
    m = Membership(consumer, "test", "frames", "g", health, lambda: rejoins.append(clock.t),
                   owned_elsewhere=owned_elsewhere, wedge_s=5, orphan_s=30, max_rejoins=2, clock=clock, **kw)
    return m, consumer, clock, rejoins, health


def test_partitions_make_a_member_ready():
    m, consumer, clock, rejoins, health = watch()
    consumer.parts = {("frames", 0)}
    m.check()
    assert health.ready and rejoins == []


def test_the_abandoned_join_is_detected_and_rejoined():
    m, consumer, clock, rejoins, health = watch()
    consumer._coordinator.state = MemberState.REBALANCING  # need_rejoin() false: kafka-python's wedge
    for t in (0, 2, 4, 5):
        clock.t = t
        m.check()
    assert rejoins == []
    clock.t = 5.5
    m.check()
    assert rejoins == [5.5] and not health.ready


def test_a_normal_join_in_progress_is_left_alone():
    m, consumer, clock, rejoins, health = watch()
    consumer._coordinator.state, consumer._coordinator.rejoin_pending = MemberState.REBALANCING, True
    for t in range(0, 300, 10):  # a join may wait for another member's rebalance timeout
        clock.t = t
        m.check()
    assert rejoins == [] and not health.ready


def test_a_member_with_nothing_to_get_is_ready_and_stays():
    m, consumer, clock, rejoins, health = watch(owned_elsewhere=lambda: True)
    for t in range(0, 200, 5):
        clock.t = t
        m.check()
    assert health.ready and rejoins == []


def test_a_member_holding_nothing_while_partitions_are_orphaned_rejoins_then_gives_up():
    m, consumer, clock, rejoins, health = watch()
    for t in range(0, 95):
        clock.t = t
        m.check()
    assert rejoins == [31, 63] and not health.ready  # 30 s without a partition, each time
    clock.t = 95
    with pytest.raises(MembershipLost, match="2 rejoins did not help"):
        m.check()
