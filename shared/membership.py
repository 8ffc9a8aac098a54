"""Group membership that always comes back: around a kafka-python 3.0.12 bug, and honest readiness.

The bug (kafka-python 3.0.12, kafka/coordinator/base.py `join_group_async` and consumer.py `poll`):
a rejoin that only the metadata-snapshot check asked for can be abandoned half way and never resumed.
1. A group leader's first assignment is computed before its topic's metadata arrived (bootstrap metadata
   holds no topics; the topic's comes ~100 ms later), so it assigns nothing; the changed snapshot then
   makes `need_rejoin()` true and a second join starts.
2. When JoinGroup returns, `_perform_assignment` sets `_assignment_snapshot = _metadata_snapshot`, so
   `need_rejoin()` is false while SyncGroup is still in flight. If `poll()`'s timer runs out then, the join
   task is left running, and the next poll never calls `ensure_active_group` again (it checks
   `need_rejoin()` first). The finished join is never completed: the state stays REBALANCING, the
   heartbeat stays disabled, no assignment is applied, the broker expires the member after the session
   timeout (the group goes Empty), and `time_to_next_heartbeat()` returns 0, so `poll` never sleeps:
   the consumer spins in the Fetcher at 50-100% CPU holding nothing, forever.

What we do, keeping kafka-python:
- before the first poll, fetch the topic's metadata and wait until it has partitions (`wait_for_topic`),
  so the first assignment is never computed on an empty view;
- after every poll, `Membership.check`: REBALANCING with `need_rejoin()` false for longer than
  `wedge_s` (a healthy join passes through that state for one SyncGroup round trip) is the wedge: the
  member rejoins (unsubscribe + subscribe, public API), counted in facestream_consumer_rejoins_total;
- readiness is true only with partitions assigned, or when the group truly has none to give (every
  partition of the topic held by another member, asked of the broker); a member that holds nothing while
  some partition has no owner for longer than `orphan_s` rejoins, and after `max_rejoins` fruitless
  rejoins in a row stops the process (liveness fails, the orchestrator restarts it).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from kafka.structs import MemberState

from shared import metrics

log = logging.getLogger(__name__)


class MembershipLost(RuntimeError):
    """The member could not get back into its group: stop, so that the orchestrator restarts the process."""


def wait_for_topic(consumer, topic: str, stop: Callable[[], bool], beat: Callable[[], None],
                   timeout_s: float | None = None, poll_s: float = 1.0) -> int:
    """Block until the broker reports partitions for `topic` (a topic is never auto-created here); returns
    how many. Beats liveness while it waits: waiting for the broker is not a wedged loop."""
    start = time.monotonic()
    warned = False
    while not stop():
        consumer.topics()  # a full metadata fetch: the subscription's topic included
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return len(parts)
        if not warned:
            log.warning("topic %s has no partitions yet (not created?): waiting for it", topic)
            warned = True
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise MembershipLost(f"topic {topic} has no partitions after {timeout_s:.0f} s")
        beat()
        time.sleep(poll_s)
    return 0


class Membership:
    """Watches one consumer's group membership after each poll; see the module docstring."""

    def __init__(self, consumer, stage: str, topic: str, group_id: str, health: metrics.Health,
                 rejoin: Callable[[], None], owned_elsewhere: Callable[[], bool] | None = None,
                 wedge_s: float = 5.0, orphan_s: float = 30.0, max_rejoins: int = 3,
                 clock: Callable[[], float] = time.monotonic):
        self.consumer, self.stage, self.topic, self.group_id = consumer, stage, topic, group_id
        self.health, self.rejoin_fn, self.clock = health, rejoin, clock
        self.owned_elsewhere = owned_elsewhere or (lambda: False)
        self.wedge_s, self.orphan_s, self.max_rejoins = wedge_s, orphan_s, max_rejoins
        self._wedged_since: float | None = None
        self._empty_since: float | None = None
        self._fruitless = 0
        self._checked_group = -1e9

    def _coordinator_state(self) -> tuple[MemberState, bool]:
        coord = self.consumer._coordinator  # kafka-python internals: see the module docstring
        return coord.state, bool(coord.need_rejoin())

    def check(self) -> None:
        now = self.clock()
        state, need = self._coordinator_state()
        if state is MemberState.REBALANCING and not need:
            self._wedged_since = self._wedged_since if self._wedged_since is not None else now
            if now - self._wedged_since > self.wedge_s:
                self._rejoin(f"stuck in REBALANCING for {now - self._wedged_since:.1f} s with no rejoin pending "
                             "(kafka-python's abandoned join)")
            return
        self._wedged_since = None
        assigned = len(self.consumer.assignment())
        if assigned:
            self._empty_since, self._fruitless = None, 0
            self.health.ready = True
            return
        self._empty_since = self._empty_since if self._empty_since is not None else now
        if state is not MemberState.STABLE:
            self.health.ready = False
            return
        if now - self._checked_group >= min(self.orphan_s, 10.0):  # ask the broker at most every 10 s
            self._checked_group = now
            idle_by_right = self.owned_elsewhere()
            self.health.ready = idle_by_right
            if idle_by_right:
                self._empty_since = now
                return
        if now - self._empty_since > self.orphan_s:
            self._rejoin(f"holding no partition for {now - self._empty_since:.0f} s while {self.topic} has "
                         "partitions no member holds")

    def _rejoin(self, why: str) -> None:
        self._fruitless += 1
        if self._fruitless > self.max_rejoins:
            raise MembershipLost(f"{self.stage}: {why}; {self.max_rejoins} rejoins did not help")
        log.warning("%s: %s: rejoining group %s (%d of %d)", self.stage, why, self.group_id, self._fruitless,
                    self.max_rejoins)
        metrics.CONSUMER_REJOINS.labels(self.stage).inc()
        self.health.ready = False
        self._wedged_since = self._empty_since = None
        self.rejoin_fn()


def partitions_owned_by_others(bootstrap: str, group_id: str, topic: str, n_partitions: int,
                               **security: Any) -> bool:
    """Whether the group is Stable and its members hold every partition of `topic` (so holding none is
    right: more members than partitions). kafka-python 3's `describe_groups` answers plain dicts."""
    from kafka import KafkaAdminClient

    admin = None
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **security)
        desc = admin.describe_groups([group_id]).get(group_id) or {}
        if desc.get("group_state") != "Stable":
            return False
        owned: set[int] = set()
        for m in desc.get("members", []):
            a = m.get("member_assignment") or {}
            for tp in a.get("assigned_partitions", []) if isinstance(a, dict) else []:
                if tp.get("topic") == topic:
                    owned.update(tp.get("partitions", []))
        return len(owned) >= n_partitions
    except Exception as e:  # the broker's answer is a hint for readiness, never a reason to stop
        log.debug("describe_groups(%s) failed: %s", group_id, e)
        return False
    finally:
        if admin is not None:
            admin.close()
