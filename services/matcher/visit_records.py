"""A visit's record, the interface of the store that keeps the records, and that store in memory.

A record is a `Visit` as JSON (`to_json`/`from_json`), one per (camera, person), or per unknown track, with
`written_at` (the wall clock of its last write) and, while a process ends it, a mark appended last:
`,"ending":[token, lease deadline]` (`with_mark`; the rest of the record is never re-encoded, so that Lua's
cjson, which writes 14 digits, cannot round its times).
`VisitStore` is what services/matcher/visits.py needs of a store: Redis in the service
(services/matcher/visit_store.py), `MemoryVisitStore` in the unit tests, shared between matchers there the
way replicas share Redis; `StoreGate`, the calls on a store that may be away; `snapshot`/`merged`, the
visit as an event carries it. No Redis here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from shared import metrics

log = logging.getLogger("facestream")

# what a store answers to each write; WAITING: another visit holds the key and is being ended (try again)
STORED, CLAIMED, TAKEN, WAITING = "stored", "claimed", "taken", "waiting"
MARK = ',"ending":'  # a record's `ending` mark, its last member
# A record lives this long past its last write (its visit's gap_s + this): long enough for a scan to end it
# (scan_grace_s + scan_every_s), short enough that a record nobody ends (Redis lost a write) goes by itself.
RECORD_TTL_MARGIN_S = 300.0


FAILED = object()  # what a StoreGate call gives while the store is away


class StoreUnavailable(Exception):
    """The visit store cannot be reached or refused a command: the visits go on in memory."""


class StoreGate:
    """Calls on a store that may be away: `call` gives FAILED on StoreUnavailable, and while the retry delay
    (doubling up to `retry_max_s`) runs, without trying; logs and metrics the state (`pending`: the writes
    waiting)."""

    def __init__(self, clock: Callable[[], float], retry_max_s: float, pending: Callable[[], int]):
        self.clock, self.retry_max_s, self.pending = clock, retry_max_s, pending
        self.down_until, self.failures, self.down_since = -math.inf, 0, None

    def up_to_try(self) -> bool:
        return self.clock() >= self.down_until

    def call(self, fn: Callable, *args: object):
        if not self.up_to_try():
            return FAILED
        try:
            out = fn(*args)
        except StoreUnavailable as e:
            delay = min(self.retry_max_s, 0.5 * 2 ** min(self.failures, 16))
            self.failures += 1
            self.down_until = self.clock() + delay
            metrics.DEPENDENCY_UP.labels("visit-store").set(0)
            metrics.VISIT_WRITES_PENDING.set(self.pending())
            if self.down_since is None:
                self.down_since = self.clock()
                log.warning("matcher: visit store unavailable (%s); deciding visits in memory (a person may be "
                            "announced again), writes kept to retry, next try in %.1f s", e, delay)
            return FAILED
        if self.down_since is not None:
            log.info("matcher: visit store reachable again after %.1f s", self.clock() - self.down_since)
        self.down_since, self.failures, self.down_until = None, 0, -math.inf
        metrics.DEPENDENCY_UP.labels("visit-store").set(1)
        return out


def stable_id(*parts: object) -> str:
    """32 hex digits naming `parts`, the same in every process: ids that a replayed decision repeats."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def event_id(visit_id: str, kind: str) -> str:
    """The id of a visit's event of `kind`: the same decision replayed gets the same id."""
    return stable_id("event", visit_id, kind)


@dataclass(eq=False)
class Visit:
    """One visit, as the store keeps it (`to_json`); the fields after `gap_s` are this process's bookkeeping."""
    visit_id: str
    camera: str
    identity: str | None  # None: an unknown person's visit, one track long
    first_seen: float  # capture time of the visit's first face
    last_seen: float
    faces: int  # faces seen in the visit, over all its tracks
    event_id: str  # of the event that announced it
    score: float
    track_id: str  # the track that announced it
    bbox: tuple[float, ...]
    model_version: str
    gap_s: float  # the visit is over once its camera's clock passes last_seen + gap_s
    stored: bool = field(default=False, repr=False)  # the store holds it (a write was acknowledged)
    attempted: bool = field(default=False, repr=False)  # a write was sent, maybe not acknowledged
    written_at: float = field(default=-math.inf, repr=False)  # wall clock of the last write (in the record)
    local: bool = field(default=False, repr=False)  # another visit holds its key: kept in memory only
    ending_by: str | None = field(default=None, repr=False)  # the record's mark: the token of who ends it
    ending_until: float = field(default=-math.inf, repr=False)  # ... and until when (wall clock)

    FIELDS = ("visit_id", "camera", "identity", "first_seen", "last_seen", "faces", "event_id", "score",
              "track_id", "bbox", "model_version", "gap_s")

    def expired(self, now: float) -> bool:
        return self.last_seen + self.gap_s < now

    @property
    def last_written(self) -> float:
        """When its writer last wrote it (wall clock); last_seen for a record of an older matcher."""
        return self.written_at if math.isfinite(self.written_at) else self.last_seen

    def stale(self, now: float, extra_s: float) -> bool:
        """Nobody wrote it for longer than gap_s + extra_s at `now` (wall clock): its owner stopped."""
        return now - self.last_written > self.gap_s + extra_s

    def ending_elsewhere(self, now: float, token: str) -> bool:
        """Marked `ending` by another process whose lease still runs at `now`."""
        return self.ending_by is not None and self.ending_by != token and self.ending_until > now

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in self.FIELDS}
        d["bbox"] = [round(float(x), 1) for x in self.bbox]
        if math.isfinite(self.written_at):
            d["written_at"] = self.written_at
        return json.dumps(d, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Visit":
        """A record read back; ValueError when it is not one (another program's key, a damaged value)."""
        try:
            d = json.loads(raw)
            v = cls(str(d["visit_id"]), str(d["camera"]), d["identity"], float(d["first_seen"]),
                    float(d["last_seen"]), int(d["faces"]), str(d["event_id"]), float(d["score"]),
                    str(d["track_id"]), tuple(float(x) for x in d["bbox"]), str(d["model_version"]),
                    float(d["gap_s"]), stored=True, attempted=True,
                    written_at=float(d["written_at"]) if d.get("written_at") is not None else -math.inf)
            mark = d.get("ending")
            if isinstance(mark, list) and len(mark) == 2 and isinstance(mark[0], str):
                v.ending_by, v.ending_until = mark[0], float(mark[1])
        except (ValueError, TypeError, KeyError, RecursionError) as e:
            raise ValueError(f"not a visit record ({type(e).__name__}: {e})") from None
        if v.identity is not None and not isinstance(v.identity, str) or len(v.bbox) != 4 or not all(
                map(math.isfinite, (v.first_seen, v.last_seen, v.score, v.gap_s, *v.bbox))) or v.written_at == math.inf:
            raise ValueError("not a visit record (identity, bbox or a number that is not finite)")
        return v


def without_mark(raw: str) -> str:
    """The record without its `ending` mark."""
    at = raw.find(MARK)
    return raw if at < 0 else raw[:at] + "}"


def with_mark(raw: str, token: str, until: float) -> str:
    """The record marked `ending` by `token` until `until` (any former mark replaced)."""
    return without_mark(raw)[:-1] + MARK + json.dumps([token, until], separators=(",", ":")) + "}"


def snapshot(v: Visit) -> Visit:
    """A copy for the announcement: the visit itself goes on changing."""
    return Visit(*(getattr(v, k) for k in Visit.FIELDS))


def merged(mine: Visit, stored: Visit) -> Visit:
    """The visit as it ends: this process's copy, with the totals of the record it claimed when that one
    saw more (another replica continued the visit)."""
    out = snapshot(mine)
    if stored is not mine and stored.visit_id == mine.visit_id:
        out.faces, out.last_seen = max(mine.faces, stored.faces), max(mine.last_seen, stored.last_seen)
        if stored.last_seen > mine.last_seen:
            out.bbox = stored.bbox
    return out


class VisitStore(Protocol):
    """Where visits outlive the process. Every method may raise StoreUnavailable."""

    def get(self, camera: str, identity: str) -> Visit | None:
        """The (camera, identity) visit record, or None."""

    def put(self, writes: Sequence[tuple[Visit, bool]], now: float | None = None, token: str = "") -> list[str]:
        """Write each (visit, stored before) by the writer `token` at `now` (wall clock); per write STORED,
        CLAIMED (it was stored before and its key is gone, or another token's live mark is on it: another
        replica ended it or is ending it, it is not brought back), TAKEN (another visit holds its key) or
        WAITING (another visit holds the key and is marked `ending`: the key is free once it is deleted).
        A mark whose lease ran out at `now` (None: none has) is no mark; the write removes it."""

    def claim_end(self, visit: Visit, now: float | None) -> Visit | None:
        """Atomically delete the visit's record if it still holds that visit and, unless `now` is None, is
        expired at `now`; return the record deleted (truthy) to the one caller that may publish the end,
        None to the others. (The matcher deletes with it only records of ends decided without a store.)"""

    def mark_ending(self, visit: Visit, token: str, now: float, until: float, at: float | None = None,
                    stale_s: float | None = None) -> Visit | None:
        """Phase one of an end: atomically mark the visit's record `ending` by `token` until `until` (wall
        clock) if it holds that visit, no other token's mark runs at `now`, and it is over: given `at` (a
        capture time), last_seen + gap_s < at; given `stale_s`, unwritten for longer than gap_s + stale_s at
        `now`. Returns the record as it was to the one caller that may publish the end, None to the others."""

    def end_marked(self, visit: Visit, token: str) -> bool:
        """Phase two, after the commit: delete the record if it holds the visit marked by `token`."""

    def unmark(self, visit: Visit, token: str) -> bool:
        """The end aborted: remove `token`'s mark from the visit's record (another may end it at once)."""

    def scan_expired(self, now: float) -> list[Visit]:
        """Every record expired at `now`."""


class MemoryVisitStore:
    """A VisitStore in a dict, for tests (several Visits may share one, like replicas share Redis);
    `down = True` makes every call raise StoreUnavailable."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], str] = {}
        self.down = False

    @staticmethod
    def _key(v: Visit) -> tuple[str, str]:
        return (v.camera, v.identity if v.identity is not None else "\0" + v.visit_id)

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("memory store marked down")

    def get(self, camera: str, identity: str) -> Visit | None:
        self._check()
        raw = self.records.get((camera, identity))
        return Visit.from_json(raw) if raw else None

    def put(self, writes: Sequence[tuple[Visit, bool]], now: float | None = None, token: str = "") -> list[str]:
        self._check()
        out = []
        for v, before in writes:
            cur = self.records.get(self._key(v))
            held = Visit.from_json(cur) if cur is not None else None
            if cur is None and before:
                out.append(CLAIMED)
            elif held is not None and held.visit_id != v.visit_id:
                out.append(WAITING if held.ending_by is not None else TAKEN)
            elif held is not None and held.ending_elsewhere(math.inf if now is None else now, token):
                out.append(CLAIMED)
            else:
                self.records[self._key(v)] = v.to_json()
                out.append(STORED)
        return out

    def claim_end(self, visit: Visit, now: float | None) -> Visit | None:
        self._check()
        cur = self.records.get(self._key(visit))
        if cur is None:
            return None
        held = Visit.from_json(cur)
        if held.visit_id != visit.visit_id or now is not None and not held.expired(now):
            return None
        del self.records[self._key(visit)]
        return held

    def mark_ending(self, visit: Visit, token: str, now: float, until: float, at: float | None = None,
                    stale_s: float | None = None) -> Visit | None:
        self._check()
        cur = self.records.get(self._key(visit))
        held = Visit.from_json(cur) if cur is not None else None
        if held is None or held.visit_id != visit.visit_id or held.ending_elsewhere(now, token) or \
                at is not None and not held.expired(at) or stale_s is not None and not held.stale(now, stale_s):
            return None
        self.records[self._key(visit)] = with_mark(cur, token, until)
        return Visit.from_json(without_mark(cur))

    def end_marked(self, visit: Visit, token: str) -> bool:
        return self._finish(visit, token, delete=True)

    def unmark(self, visit: Visit, token: str) -> bool:
        return self._finish(visit, token, delete=False)

    def _finish(self, visit: Visit, token: str, delete: bool) -> bool:
        self._check()
        cur = self.records.get(self._key(visit))
        held = Visit.from_json(cur) if cur is not None else None
        if held is None or held.visit_id != visit.visit_id or held.ending_by != token:
            return False
        if delete:
            del self.records[self._key(visit)]
        else:
            self.records[self._key(visit)] = without_mark(cur)
        return True

    def scan_expired(self, now: float) -> list[Visit]:
        self._check()
        return [v for v in map(Visit.from_json, self.records.values()) if v.expired(now)]
