"""The matcher's visits in Redis: one key per (camera, person), written atomically by Lua scripts.

Layout under a prefix (default `facestream:visits`; services/matcher/main.py):
    {p}:{camera}:{sha256(identity)[:16]}   a person's visit to a camera: JSON (services.matcher.visits.Visit)
    {p}:{camera}:u-{visit_id}              an unknown track's visit
Each key expires `gap_s` + RECORD_TTL_MARGIN_S after its last write, so nothing piles up if nobody ends it.
Ending a visit takes two phases (services/matcher/visits.py): `mark_ending` appends a mark with a lease to the
record (SET KEEPTTL: the TTL stays), `end_marked` deletes it once the Kafka transaction committed, `unmark`
removes the mark when it aborted; a mark whose lease ran out counts as none.
Only commands on these keys are used (GET, SET, DEL, SCAN, EVAL, EVALSHA with the key in KEYS[]), so that
an ACL user limited to `{p}:*` suffices. Scripts run with EVALSHA and fall back to EVAL (never SCRIPT LOAD,
which such a user may not have). Every Redis error, a connection lost or a command refused, is raised as
`StoreUnavailable`: the matcher goes on from memory (services/matcher/visits.py), and a refusal is logged
(a wrong ACL or prefix) rather than taken for the input's fault.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Sequence

import redis

from services.matcher.visit_records import (CLAIMED, RECORD_TTL_MARGIN_S, STORED, TAKEN, WAITING, StoreUnavailable,
                                            Visit)
from services.redis_access import UNREACHABLE

log = logging.getLogger("facestream")
DEFAULT_PREFIX = "facestream:visits"

# Lua helpers: the mark of a decoded record (a live one, at a wall time) and the record without it.
_MARKS = """
local function mark_of(held)
  local m = held['ending']
  if type(m) == 'table' and type(m[1]) == 'string' then return m[1], tonumber(m[2]) or 0 end
  return nil, 0
end
local function unmarked(cur)
  local at = string.find(cur, ',"ending":', 1, true)
  if at then return string.sub(cur, 1, at - 1) .. '}' end
  return cur
end
"""
# KEYS[1]; ARGV: record JSON, TTL in ms, visit id, "1" if the visit was stored before, wall time ("" for
# none: every mark lives), the writer's token.
# 1 stored; 0 claimed (stored before and key gone, or another token's live mark: another replica ended it
# or is ending it); -1 taken (another visit's key); -2 waiting (another visit's key, that visit being ended)
_PUT = _MARKS + """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, held = pcall(cjson.decode, cur)
  if ok and type(held) == 'table' then
    local by, till = mark_of(held)
    if held['visit_id'] ~= ARGV[3] then
      if by then return -2 end
      return -1
    end
    if by and by ~= ARGV[6] and (ARGV[5] == '' or till > tonumber(ARGV[5])) then return 0 end
  end
elseif ARGV[4] == '1' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS[1]; ARGV: visit id, time ("" for none). Deletes the record if it holds that visit and, given a time,
# last_seen + gap_s is before it. Returns the deleted record (the caller alone publishes the visit's end,
# with the totals of whichever replica wrote last), else false.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
local ok, held = pcall(cjson.decode, cur)
if not ok or type(held) ~= 'table' or held['visit_id'] ~= ARGV[1] then return false end
if ARGV[2] ~= '' and tonumber(held['last_seen']) + tonumber(held['gap_s']) >= tonumber(ARGV[2]) then return false end
redis.call('DEL', KEYS[1])
return cur
"""
# KEYS[1]; ARGV: visit id, token, wall time, the mark's JSON ([token, deadline]), capture time ("" for no
# capture test), staleness past gap_s ("" for no staleness test). Marks the record if it holds that visit,
# no other token's mark lives at the wall time, and the tests pass (last_seen + gap_s before the capture
# time; unwritten for longer than gap_s + staleness: written_at, else last_seen, of an older matcher's
# record). Returns the record as it was, unmarked (the totals to publish), else false.
_MARK = _MARKS + """
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
local ok, held = pcall(cjson.decode, cur)
if not ok or type(held) ~= 'table' or held['visit_id'] ~= ARGV[1] then return false end
local now = tonumber(ARGV[3])
local by, till = mark_of(held)
if by and by ~= ARGV[2] and till > now then return false end
local last, gap = tonumber(held['last_seen']), tonumber(held['gap_s'])
if ARGV[5] ~= '' and last + gap >= tonumber(ARGV[5]) then return false end
if ARGV[6] ~= '' and now - (tonumber(held['written_at']) or last) <= gap + tonumber(ARGV[6]) then return false end
local base = unmarked(cur)
redis.call('SET', KEYS[1], string.sub(base, 1, -2) .. ',"ending":' .. ARGV[4] .. '}', 'KEEPTTL')
return base
"""
# KEYS[1]; ARGV: visit id, token, "1" to delete the record, "0" to unmark it; only if it holds that visit
# marked by that token. 1 done, 0 not (another took the end over after the lease ran out, or it is gone).
_FINISH = _MARKS + """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, held = pcall(cjson.decode, cur)
if not ok or type(held) ~= 'table' or held['visit_id'] ~= ARGV[1] then return 0 end
if mark_of(held) ~= ARGV[2] then return 0 end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], unmarked(cur), 'KEEPTTL')
end
return 1
"""
_SHA = {s: hashlib.sha1(s.encode()).hexdigest() for s in (_PUT, _CLAIM, _MARK, _FINISH)}
_RESULT = {1: STORED, 0: CLAIMED, -1: TAKEN, -2: WAITING}


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


class RedisVisitStore:
    """A VisitStore (services/matcher/visit_records.py) in Redis: `client` from services.redis_access.client_for,
    with short timeouts (the matcher calls it from its loop)."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX, scan_count: int = 500):
        self.r, self.p, self.scan_count = client, prefix, scan_count
        self._refused: set[str] = set()

    def key(self, camera: str, identity: str | None, visit_id: str = "") -> str:
        if identity is None:
            return f"{self.p}:{camera}:u-{visit_id}"
        return f"{self.p}:{camera}:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"

    def _key(self, v: Visit) -> str:
        return self.key(v.camera, v.identity, v.visit_id)

    def get(self, camera: str, identity: str) -> Visit | None:
        raw = self._call(self.r.get, self.key(camera, identity))
        return self._parse(raw, self.key(camera, identity)) if raw else None

    def put(self, writes: Sequence[tuple[Visit, bool]], now: float | None = None, token: str = "") -> list[str]:
        if not writes:
            return []
        at = "" if now is None else repr(float(now))
        def send():
            with self.r.pipeline(transaction=False) as pipe:
                for v, before in writes:
                    ttl_ms = int((v.gap_s + RECORD_TTL_MARGIN_S) * 1000)
                    pipe.eval(_PUT, 1, self._key(v), v.to_json(), ttl_ms, v.visit_id, "1" if before else "0", at,
                              token)
                return pipe.execute()
        return [_RESULT[int(r)] for r in self._call(send)]

    def claim_end(self, visit: Visit, now: float | None) -> Visit | None:
        raw = self._script(_CLAIM, self._key(visit), visit.visit_id, "" if now is None else repr(now))
        if not raw:
            return None
        return self._parse(raw, self._key(visit)) or visit  # claimed either way: a damaged record ends as ours

    def mark_ending(self, visit: Visit, token: str, now: float, until: float, at: float | None = None,
                    stale_s: float | None = None) -> Visit | None:
        raw = self._script(_MARK, self._key(visit), visit.visit_id, token, repr(float(now)),
                           json.dumps([token, float(until)], separators=(",", ":")),
                           "" if at is None else repr(float(at)), "" if stale_s is None else repr(float(stale_s)))
        if not raw:
            return None
        return self._parse(raw, self._key(visit)) or visit  # marked either way: a damaged record ends as ours

    def end_marked(self, visit: Visit, token: str) -> bool:
        return bool(self._script(_FINISH, self._key(visit), visit.visit_id, token, "1"))

    def unmark(self, visit: Visit, token: str) -> bool:
        return bool(self._script(_FINISH, self._key(visit), visit.visit_id, token, "0"))

    def scan_expired(self, now: float) -> list[Visit]:
        def scan() -> list[Visit]:
            out: list[Visit] = []
            keys = list(self.r.scan_iter(match=f"{_glob_escape(self.p)}:*", count=self.scan_count))
            for i in range(0, len(keys), self.scan_count):
                chunk = keys[i:i + self.scan_count]
                with self.r.pipeline(transaction=False) as pipe:
                    for k in chunk:
                        pipe.get(k)
                    values = pipe.execute()
                for k, raw in zip(chunk, values):
                    v = self._parse(raw, k) if raw else None
                    if v is not None and v.expired(now):
                        out.append(v)
            return out
        return self._call(scan)

    # --- internals -------------------------------------------------------------------------------
    def _script(self, script: str, key: str, *args: object):
        def run():
            try:
                return self.r.evalsha(_SHA[script], 1, key, *args)
            except redis.exceptions.NoScriptError:
                return self.r.eval(script, 1, key, *args)  # EVAL caches it: the next EVALSHA finds it
        return self._call(run)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except UNREACHABLE as e:
            raise StoreUnavailable(" ".join(str(e).split()) or type(e).__name__) from None
        except redis.exceptions.RedisError as e:  # refused: NOPERM (the ACL), a read-only replica, ...
            reason = " ".join(str(e).split())[:300]
            if reason not in self._refused:
                self._refused.add(reason)
                log.error("matcher: Redis refused a visit store command under %s:* (%s): visits run from "
                          "memory; check the matcher's Redis user and --visit-prefix", self.p, reason)
            raise StoreUnavailable(f"refused: {reason}") from None

    def _parse(self, raw: bytes | str, key: bytes | str) -> Visit | None:
        try:
            return Visit.from_json(raw)
        except ValueError as e:
            log.warning("matcher: ignoring %r in the visit store: %s", key, e)
            return None
