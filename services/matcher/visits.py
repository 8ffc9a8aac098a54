"""Visits: a person is announced once per stay in front of a camera, not once per track; pure logic.

A visit of an enrolled person to a camera starts with the first track decided as that person and lasts
until they have been away from the camera for `gap_s` (capture time), whatever the tracks, matcher
restarts and replicas in between: its state is a `Visit` record in a `VisitStore` (Redis in the service,
services/matcher/visit_store.py; `MemoryVisitStore` in tests), one per (camera, person). An unknown
person cannot be recognised across tracks, so each unknown track is a visit of its own, ended with it.

    decided(track)  new visit -> announce it ("identified" / "unknown"); a visit in memory or in the
                    store within the gap -> continue it, no event
    extend(track)   faces of a decided track after its decision: the visit's last_seen and faces
    track_ended     an unknown visit ends with its track ("visit-ended")
    tick(now)       visits away for longer than the gap end ("visit-ended"); every `scan_every_s` the store
                    is scanned for expired visits this process does not hold (a predecessor's, a peer's)
    flush()         after Kafka committed the events (Stage.committed): writes the buffered records and
                    deletes the ended ones
    forget()        the batch's transaction aborted (Stage.aborted): drop what memory holds, undo the batch's
                    end marks; the store has the rest

Exactly once, with the Kafka transaction: decisions read the store (cached in memory) and buffer their
writes; `flush` writes them after the transaction holding the events and the input offsets committed. Killed
before the commit, the transaction aborts and the store is as it was: the successor decides those inputs
again. Killed between the commit and `flush` (a millisecond): a visit announced that the store does not
know (the person may be announced again), or an ended visit's record left (ended again, same event id).
Ids hash the inputs (`visit_id`, `event_id`): a replayed decision repeats them, a consumer drops the copy.

An end of a stored visit has two phases: while deciding, `mark_ending` marks the record `ending` (atomic:
this process's token, a lease of `end_lease_s`, longer than a transaction lasts) if the visit is over and no
other lease runs; the winner alone publishes visit-ended; `flush` deletes the record, `forget` unmarks it,
and a kill leaves the lease to run out: another replica ends it then. A record under another's live mark is
being ended, not continued: a person back within the lease starts a new visit at once (its announcement may
reach the partition before the old end; its record is written once the old one is gone). Over: by the
camera's clock (capture time) for a visit held or a camera this process reads, a scan also wanting the
record unwritten for gap_s (wall clock); for another camera, unwritten for gap_s + `scan_grace_s`, so that
a live owner with a backlog (capture time far behind the wall clock) loses none of its visits.

Store away (`StoreUnavailable`): decisions go on from memory (a visit the process does not hold is taken
as new: a possible duplicate), writes wait in memory and are retried with a doubling delay, and ends of the
visits held are published without a mark (their records deleted later). The matcher keeps matching.
"""
from __future__ import annotations

import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from services.matcher.tracks import Decision, Track
from shared import metrics
from services.matcher.visit_records import (CLAIMED, FAILED, RECORD_TTL_MARGIN_S, STORED, WAITING, StoreGate, Visit,
                                            VisitStore, event_id, merged, snapshot, stable_id)

log = logging.getLogger("facestream")

Announcement = tuple[str, Visit]  # (kind, a snapshot of the visit): the matcher turns it into an event


@dataclass
class _Link:
    visit: Visit
    counted: int  # the track's faces already counted into the visit


class Visits:
    """The visits of one matcher process. `gap_s`: away this long and a person's visit is over;
    `unknown_gap_s`: the track gap, which ends an unknown visit; `clock`: the matcher's (wall) clock, for
    write pacing, retries and leases; `scan_grace_s`: how much longer than the gap a record of a camera this
    process does not read stays unwritten before it ends it (its owner may lag: without Redis it writes late);
    `end_lease_s`: how long an end's mark holds off the others (more than a batch and its transaction may
    take: the transaction times out after 40 s by default)."""

    def __init__(self, store: VisitStore, gap_s: float = 60.0, unknown_gap_s: float = 2.0, model_version: str = "",
                 clock: Callable[[], float] = time.time, write_every_s: float = 1.0, scan_every_s: float = 15.0,
                 scan_grace_s: float = 120.0, retry_max_s: float = 30.0, end_lease_s: float = 120.0):
        self.store, self.gap_s, self.unknown_gap_s, self.model_version = store, gap_s, unknown_gap_s, model_version
        self.clock, self.write_every_s, self.scan_every_s = clock, write_every_s, scan_every_s
        self.scan_grace_s, self.retry_max_s, self.end_lease_s = scan_grace_s, retry_max_s, end_lease_s
        self.token = f"{os.getpid():x}-{uuid.uuid4().hex[:12]}"  # this process's name on the marks it sets
        self.open: dict[tuple[str, str], Visit] = {}  # (camera, identity) -> the person's visit
        self.unknown: dict[tuple[str, str], Visit] = {}  # (camera, track id) -> the unknown track's visit
        self.links: dict[tuple[str, str], _Link] = {}  # (camera, track id) of decided tracks -> their visit
        self._dirty: dict[str, Visit] = {}  # visit id -> record to write
        # after the commit, with when they were queued: records to delete (ended while the store was away) and
        # records this process marked `ending`; `_uncommitted`: those queued since the last commit
        self._release: dict[str, tuple[Visit, float]] = {}
        self._ending: dict[str, tuple[Visit, float]] = {}
        self._uncommitted: set[str] = set()
        self._next_scan = -math.inf
        self._gate = StoreGate(clock, retry_max_s, lambda: len(self._dirty))
        self._call = self._gate.call  # fn(*args) on the store, or FAILED while it is away

    # --- decisions -------------------------------------------------------------------------------
    def decided(self, camera: str, t: Track, d: Decision) -> list[Announcement]:
        """A track reached its decision: announce a new visit, or continue the person's visit."""
        if d.identity is None:
            v = self._new(camera, None, t, d, stable_id("visit", camera, "", t.first_seen, self.model_version,
                                                    *t.first_bbox), self.unknown_gap_s)
            self.unknown[(camera, t.track_id)] = v
            return [("unknown", snapshot(v))]
        out: list[Announcement] = []
        key = (camera, d.identity)
        v = self.open.get(key)
        if v is not None and t.first_seen - v.last_seen > v.gap_s:
            out += self._end(v, t.first_seen)  # its end check had not run yet
            v = None
        if v is None:
            v = self._read(camera, d.identity)
            if v is not None and (v.visit_id in self._ending or v.visit_id in self._release
                                  or v.ending_elsewhere(self.clock(), self.token)):
                v = None  # being ended, here or elsewhere: the person starts a new visit
            if v is not None:
                v.gap_s = self.gap_s
                if t.first_seen - v.last_seen > v.gap_s:
                    out += self._end(v, t.first_seen)  # a predecessor's visit that nobody ended yet
                    v = None
                else:
                    v.written_at = -math.inf  # its writer's clock, not ours: write it at the next flush
                    self.open[key] = v
        if v is not None:  # the same visit: no event
            self._link(camera, t, v, 0)
            return out
        v = self._new(camera, d.identity, t, d, stable_id("visit", camera, d.identity, t.first_seen, self.model_version),
                      self.gap_s)
        self.open[key] = v
        return out + [("identified", snapshot(v))]

    def extend(self, camera: str, t: Track) -> None:
        """Count the faces a decided track gained since its decision (or the last call) into its visit."""
        link = self.links.get((camera, t.track_id))
        if link is None or len(t.votes) == link.counted:
            return
        if not self._holds(link.visit):  # ended or claimed by another replica meanwhile
            del self.links[(camera, t.track_id)]
            return
        self._link(camera, t, link.visit, link.counted)

    def track_ended(self, camera: str, t: Track) -> list[Announcement]:
        """A track ended: an unknown visit ends with it; a person's visit outlives its tracks."""
        self.extend(camera, t)
        self.links.pop((camera, t.track_id), None)
        v = self.unknown.get((camera, t.track_id))
        return self._end(v, None) if v is not None else []

    def tick(self, now_of: Callable[[str], float | None], now: float) -> list[Announcement]:
        """End the visits whose camera's clock (`now_of(camera)`, capture time; None: a camera this process
        has no clock for) passed last_seen + gap; every `scan_every_s`, also those of the store that this
        process does not hold: by their camera's clock and unwritten for the gap, or, for a camera without a
        clock here, unwritten for the gap + `scan_grace_s` (`now`: the wall clock)."""
        out: list[Announcement] = []
        for v in list(self.open.values()):
            cam_now = now_of(v.camera)
            at = cam_now if cam_now is not None else now - self.scan_grace_s
            if v.expired(at):
                out += self._end(v, at)
        if now >= self._next_scan:
            self._next_scan = now + self.scan_every_s
            found = self._call(self.store.scan_expired, now)
            found = [] if found is FAILED else found
            held = {v.visit_id for v in (*self.open.values(), *self.unknown.values())} | set(self._release) | \
                set(self._ending)
            for v in found:
                if v.visit_id in held or v.ending_elsewhere(now, self.token):
                    continue
                at = now_of(v.camera)
                stale_s = 0.0 if at is not None else self.scan_grace_s
                if (at is None or v.expired(at)) and v.stale(now, stale_s) and (won := self._mark(v, at, stale_s)):
                    out.append(("visit-ended", merged(v, won)))
        return out

    def forget(self) -> None:
        """Drop every visit held in memory (the Kafka transaction of the batch that changed them aborted): the
        store has what was committed, and the next decisions read it again; the batch's ends are undone (their
        marks removed; where the store is away, their leases run out), so that a scan ends them again. Lost:
        writes still waiting (the last second of a visit's faces; everything while the store is away)."""
        self.open.clear()
        self.unknown.clear()
        self.links.clear()
        self._dirty.clear()
        for vid in self._uncommitted:
            self._release.pop(vid, None)
            marked = self._ending.pop(vid, None)
            if marked is not None:
                self._call(self.store.unmark, marked[0], self.token)
        self._uncommitted.clear()
        self._next_scan = -math.inf  # the replay's first tick scans: it ends those visits again

    def cameras(self) -> set[str]:
        """Cameras with a visit in memory or being ended (their clocks must be kept)."""
        return {v.camera for v in (*self.open.values(), *self.unknown.values(), *(v for v, _ in self._ending.values()))}

    # --- the store -------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write what the committed decisions changed (Stage.committed: only after Kafka committed them).
        Paced: a visit that only gained faces is written at most every `write_every_s`. Ended visits' records
        are deleted first (a new visit may want the same key)."""
        now = self.clock()
        self._uncommitted.clear()  # what was queued is committed now
        for queue in (self._release, self._ending):
            for vid, (v, queued) in list(queue.items()):
                if now - queued > v.gap_s + RECORD_TTL_MARGIN_S:  # its record has expired on its own by now
                    del queue[vid]
        writes = [v for v in self._dirty.values() if not v.attempted or now - v.written_at >= self.write_every_s]
        if not (writes or self._release or self._ending) or not self._gate.up_to_try():
            return
        before = [v.written_at for v in writes]
        for v in writes:
            v.attempted, v.written_at = True, now

        def write() -> list[str]:
            for vid, (v, _) in list(self._ending.items()):
                if not self.store.end_marked(v, self.token):
                    log.warning("matcher: the end of visit %s of %s on %s was taken over after this process's "
                                "lease ran out: it may be published twice", v.visit_id, v.identity, v.camera)
                del self._ending[vid]
            for vid, (v, _) in list(self._release.items()):
                self.store.claim_end(v, None)
                del self._release[vid]
            return self.store.put([(v, v.stored) for v in writes], now, self.token) if writes else []

        results = self._call(write)
        if results is FAILED:
            for v, w in zip(writes, before):
                v.written_at = w
            return
        for v, res in zip(writes, results):
            if res == WAITING:  # another visit's end holds the key: tried again after write_every_s
                continue
            self._dirty.pop(v.visit_id, None)
            if res == STORED:
                v.stored = True
            elif res == CLAIMED:  # another replica ended it (its owner lagged): it is over here too
                log.info("matcher: visit %s of %s on %s was ended elsewhere", v.visit_id, v.identity, v.camera)
                self._forget(v)
            else:  # TAKEN: two replicas started a visit at once (a rebalance); ours lives on in memory
                v.local = True
        metrics.VISIT_WRITES_PENDING.set(len(self._dirty))

    @property
    def degraded(self) -> str | None:
        """Why the visits run from memory alone, or None."""
        if self._gate.down_since is None:
            return None
        return f"visit store unreachable, deciding visits in memory ({len(self._dirty)} write(s) pending)"

    # --- internals -------------------------------------------------------------------------------
    def _new(self, camera: str, identity: str | None, t: Track, d: Decision, visit_id: str, gap_s: float) -> Visit:
        score = round(d.score, 4) if math.isfinite(d.score) else -1.0
        v = Visit(visit_id, camera, identity, t.first_seen, t.last_seen, 0, event_id(visit_id, "identified"
                  if identity is not None else "unknown"), score, t.track_id,
                  tuple(float(x) for x in t.bbox), self.model_version, gap_s)
        self._link(camera, t, v, 0)
        return v

    def _link(self, camera: str, t: Track, v: Visit, counted: int) -> None:
        v.faces += len(t.votes) - counted
        v.last_seen = max(v.last_seen, t.last_seen)
        v.bbox = t.bbox  # a tuple of floats (the schema's), replaced, never changed in place
        self.links[(camera, t.track_id)] = _Link(v, len(t.votes))
        if not v.local:
            self._dirty[v.visit_id] = v

    def _holds(self, v: Visit) -> bool:
        if v.identity is not None:
            return self.open.get((v.camera, v.identity)) is v
        return self.unknown.get((v.camera, v.track_id)) is v

    def _forget(self, v: Visit) -> None:
        self._dirty.pop(v.visit_id, None)
        if v.identity is not None:
            if self.open.get((v.camera, v.identity)) is v:
                del self.open[(v.camera, v.identity)]
        else:
            self.unknown.pop((v.camera, v.track_id), None)

    def _end(self, v: Visit, at: float | None) -> list[Announcement]:
        """End a visit this process holds (over at `at`, capture time; None: with its track): publish its end
        if its mark wins (always when never stored)."""
        self._forget(v)
        if not v.stored:
            if v.attempted:  # a write may have landed unacknowledged: remove it, or a scan would end it again
                self._queue(self._release, v)
            return [("visit-ended", snapshot(v))]
        won = self._mark(v, at, None, blind=True)
        return [("visit-ended", merged(v, won))] if won else []

    def _mark(self, v: Visit, at: float | None, stale_s: float | None, blind: bool = False) -> Visit | None:
        """Phase one of the end of `v` (`VisitStore.mark_ending`): the record it held, or None when another
        process ends it. With the store away, a visit this process holds (`blind`) ends without a mark (its
        record is deleted later); one it found in a scan waits for the next scan."""
        now = self.clock()
        won = self._call(self.store.mark_ending, v, self.token, now, now + self.end_lease_s, at, stale_s)
        if won is FAILED:
            if not blind:
                return None
            won = v
            self._queue(self._release, v)
        elif won is not None:
            self._queue(self._ending, v)
        return won

    def _queue(self, queue: dict[str, tuple[Visit, float]], v: Visit) -> None:
        """What to do with the record of `v` once the transaction committed (undone if it aborts)."""
        queue[v.visit_id] = (v, self.clock())
        self._uncommitted.add(v.visit_id)

    def _read(self, camera: str, identity: str) -> Visit | None:
        v = self._call(self.store.get, camera, identity)
        return None if v is FAILED else v
