"""The matcher's visit store on the real Redis: atomic claims, TTLs, keys under its prefix only, and the
commands an ACL user limited to its keys may run. Each test uses a prefix of its own, deleted after."""
from __future__ import annotations

import threading
import uuid

import pytest
import redis

from services.matcher.visit_store import RedisVisitStore
from services.matcher.visit_records import (CLAIMED, RECORD_TTL_MARGIN_S, STORED, TAKEN, WAITING, StoreUnavailable,
                                            Visit)
from services.matcher.visits import Visits
from services.redis_access import client


@pytest.fixture
def prefix(redis_url):
    p = f"facestream:test-{uuid.uuid4().hex[:8]}:visits"
    yield p
    r = redis.Redis.from_url(redis_url)
    for k in r.scan_iter(match=p.replace("[", "\\[").replace("]", "\\]") + "*"):
        r.delete(k)


def visit(identity: str | None = "Ann", camera: str = "door", last_seen: float = 100.0, gap_s: float = 60.0,
          vid: str | None = None) -> Visit:
    vid = vid or uuid.uuid4().hex
    return Visit(vid, camera, identity, 90.0, last_seen, 12, "e-" + vid, 0.93, "door-t-0", (1.0, 2.0, 3.0, 4.0),
                 "m1", gap_s)


def test_put_get_and_a_ttl_past_the_gap(redis_url, prefix):
    store = RedisVisitStore(client(redis_url), prefix)
    v, u = visit(), visit(identity=None, gap_s=2.0)
    assert store.put([(v, False), (u, False)]) == [STORED, STORED]
    got = store.get("door", "Ann")
    assert got.to_json() == v.to_json() and got.stored and store.get("door", "Bob") is None
    r = redis.Redis.from_url(redis_url)
    ttl_ms = r.pttl(store.key("door", "Ann"))
    assert (60 + RECORD_TTL_MARGIN_S - 5) * 1000 < ttl_ms <= (60 + RECORD_TTL_MARGIN_S) * 1000
    assert 0 < r.pttl(store.key("door", None, u.visit_id)) <= (2 + RECORD_TTL_MARGIN_S) * 1000
    mine = {k.decode() for k in r.scan_iter(match=f"*{prefix.split(':')[1]}*")}
    assert mine == {store.key("door", "Ann"), store.key("door", None, u.visit_id)}
    assert all(k.startswith(prefix + ":door:") for k in mine)


def test_two_claimers_one_wins(redis_url, prefix):
    v = visit(last_seen=100.0)
    RedisVisitStore(client(redis_url), prefix).put([(v, False)])
    stores = [RedisVisitStore(client(redis_url), prefix) for _ in range(8)]
    wins, go = [], threading.Barrier(len(stores))

    def claim(s):
        go.wait()
        wins.append(s.claim_end(v, 200.0) is not None)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(wins) == [False] * 7 + [True]
    assert stores[0].get("door", "Ann") is None


def test_a_claim_needs_the_same_visit_and_its_expiry(redis_url, prefix):
    store = RedisVisitStore(client(redis_url), prefix)
    v = visit(last_seen=100.0)
    store.put([(v, False)])
    assert not store.claim_end(v, 159.0), "not expired: 100 + 60 >= 159"
    assert not store.claim_end(visit(vid="another"), 1e9), "the key holds another visit"
    assert store.get("door", "Ann") is not None
    assert store.claim_end(v, 160.5) and not store.claim_end(v, 160.5)
    assert store.put([(v, True)]) == [CLAIMED], "a claimed visit is not brought back"
    store.put([(v, False)])
    assert store.claim_end(v, None), "no time: the owner ends it with its track"


def test_the_two_phase_end_claim(redis_url, prefix):
    """Phase one marks the record `ending` (a lease, a token), phase two, after the Kafka commit, deletes it
    under the same token; nothing is deleted before. One of several claimers wins; a lease that ran out lets
    another claim it; a wrong token can neither delete nor unmark it."""
    v = visit(last_seen=1700000000.123456)  # more digits than Lua's cjson writes: the record is not re-encoded
    v.written_at = 1700000000.5
    RedisVisitStore(client(redis_url), prefix).put([(v, False)], now=1700000000.5, token="owner")
    stores = [RedisVisitStore(client(redis_url), prefix) for _ in range(8)]
    now, wins, go = 1700000500.0, [], threading.Barrier(len(stores))

    def claim(i, s):
        go.wait()
        if s.mark_ending(v, f"t{i}", now, now + 60.0, stale_s=120.0) is not None:
            wins.append(f"t{i}")

    threads = [threading.Thread(target=claim, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    store, r = stores[0], redis.Redis.from_url(redis_url)
    assert len(wins) == 1
    (winner,) = wins
    held = store.get("door", "Ann")
    assert held.ending_by == winner and held.ending_until == now + 60.0, "marked, not deleted"
    assert held.last_seen == 1700000000.123456 and held.written_at == 1700000000.5
    assert 0 < r.pttl(store.key("door", "Ann")) <= (60 + RECORD_TTL_MARGIN_S) * 1000, "its TTL kept"
    assert store.mark_ending(v, "late", now + 59.0, now + 119.0) is None, "the lease lives"
    assert [x.ending_by for x in store.scan_expired(now)] == [winner]
    assert not store.end_marked(v, "late") and not store.unmark(v, "late"), "a wrong token is refused"
    assert store.put([(v, True)], now=now + 1.0, token="owner") == [CLAIMED], "being ended: not brought back"
    assert store.get("door", "Ann").ending_by == winner

    took = store.mark_ending(v, "next", now + 61.0, now + 121.0, stale_s=120.0)  # the lease ran out
    assert took is not None and took.ending_by is None and took.last_seen == v.last_seen
    assert not store.end_marked(v, winner), "the first claimer's lease ran out and another took the end"
    assert store.unmark(v, "next") and store.get("door", "Ann").ending_by is None, "an aborted end: unmarked"
    assert store.mark_ending(v, "next", now, now + 60.0, at=v.last_seen + 59.0) is None, "not expired by capture"
    assert store.mark_ending(v, "next", v.written_at + 30.0, now + 60.0, stale_s=0.0) is None, "written lately"
    assert store.mark_ending(v, "next", now, now + 60.0, at=v.last_seen + 61.0, stale_s=0.0) is not None
    other = visit(vid="another")
    assert store.put([(other, False)], now=now, token="b") == [WAITING], "its key is free once the end is done"
    assert store.end_marked(v, "next") and store.get("door", "Ann") is None
    assert store.put([(other, False)], now=now, token="b") == [STORED]


def test_a_record_without_written_at_is_stale_by_last_seen(redis_url, prefix):
    """A record of an older matcher (no written_at): stale by last_seen, the rule before written_at existed."""
    store = RedisVisitStore(client(redis_url), prefix)
    v = visit(last_seen=100.0)
    store.put([(v, False)])
    assert "written_at" not in redis.Redis.from_url(redis_url).get(store.key("door", "Ann")).decode()
    assert store.mark_ending(v, "t", 279.0, 339.0, stale_s=120.0) is None, "100 + 60 + 120 >= 279"
    assert store.mark_ending(v, "t", 281.0, 341.0, stale_s=120.0) is not None


def test_a_write_does_not_take_another_visits_key(redis_url, prefix):
    store = RedisVisitStore(client(redis_url), prefix)
    first, second = visit(vid="first"), visit(vid="second")
    assert store.put([(first, False), (second, False)]) == [STORED, TAKEN]
    assert store.get("door", "Ann").visit_id == "first"


def test_scan_finds_the_expired_visits_under_its_prefix_only(redis_url, prefix):
    odd = prefix + "[x]*?"  # glob characters in a prefix are matched literally
    store, neighbour = RedisVisitStore(client(redis_url), odd), RedisVisitStore(client(redis_url), odd + "2")
    old, fresh = visit(last_seen=100.0), visit(identity="Bob", last_seen=150.0)
    store.put([(old, False), (fresh, False)])
    neighbour.put([(visit(identity="Cy", last_seen=10.0), False)])
    redis.Redis.from_url(redis_url).set(odd + ":garbage", b"\xff not json", ex=60)
    assert [v.visit_id for v in store.scan_expired(170.0)] == [old.visit_id]
    assert {v.identity for v in store.scan_expired(1e9)} == {"Ann", "Bob"}


def test_visits_run_on_the_store_end_to_end(redis_url, prefix):
    """The matcher's Visits over Redis: a claim each for two processes, one end published."""
    from services.matcher.tracks import Decision, Track

    now = [100.0]
    a, b = (Visits(RedisVisitStore(client(redis_url), prefix), 60.0, 2.0, "m1", clock=lambda: now[0]) for _ in "ab")
    t = Track("door-x-0", 100.0, 100.4, (0, 0, 9, 9), None, [("Ann", 0.9, 1.0)] * 3, first_bbox=(0, 0, 9, 9))
    (announced,) = a.decided("door", t, Decision("Ann", 0.9))
    a.flush()
    assert b.decided("door", Track("door-y-0", 110.0, 110.2, (0, 0, 9, 9), None, [("Ann", 0.9, 1.0)] * 3,
                                   first_bbox=(0, 0, 9, 9)), Decision("Ann", 0.9)) == []
    b.flush()
    now[0] = 200.0
    ends = a.tick(lambda cam: 200.0, 200.0) + b.tick(lambda cam: 200.0, 200.0)
    assert [(k, v.visit_id, v.faces) for k, v in ends] == [("visit-ended", announced[1].visit_id, 6)]


def test_a_matcher_user_limited_to_its_keys_and_commands_suffices(redis_url, prefix):
    """The secure deployment's ACL: GET SET DEL EXPIRE PEXPIRE SCAN EVAL EVALSHA on {prefix}:* alone."""
    admin = redis.Redis.from_url(redis_url)
    user, password = f"fs-test-visits-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=[f"{prefix}:*"], reset=True,
                      commands=["+get", "+set", "+del", "+expire", "+pexpire", "+scan", "+eval", "+evalsha",
                                "+ping"])
    try:
        store = RedisVisitStore(client(redis_url, user=user, password=password), prefix)
        v = visit()
        assert store.put([(v, False)]) == [STORED] and store.get("door", "Ann") is not None
        assert [x.visit_id for x in store.scan_expired(1e9)] == [v.visit_id]
        assert store.claim_end(v, 1e9)
        store.put([(v, False)], now=1e9, token="t")
        assert store.mark_ending(v, "t", 1e9, 1e9 + 60, stale_s=0.0) and store.unmark(v, "t")
        assert store.mark_ending(v, "t", 1e9, 1e9 + 60, at=1e9) and store.end_marked(v, "t")
        assert store.get("door", "Ann") is None and store._refused == set()
        outside = RedisVisitStore(client(redis_url, user=user, password=password), "facestream:gallery")
        with pytest.raises(StoreUnavailable, match="refused"):
            outside.put([(v, False)])
    finally:
        admin.acl_deluser(user)


def test_redis_away_is_store_unavailable_quickly():
    store = RedisVisitStore(client("redis://127.0.0.1:1/0", timeout_s=0.5, retries=0), "facestream:visits")
    with pytest.raises(StoreUnavailable):
        store.get("door", "Ann")


def test_a_restarted_matcher_on_redis_announces_nobody_twice(redis_url, prefix):
    """The matcher over the real store: announce, commit (flush), restart, see the person again: no event;
    then away past the gap: the visit ends once, by the successor."""
    import numpy as np

    from services.matcher.index import GalleryIndex
    from services.matcher.stage import Matcher
    from services.matcher.tracks import TrackPolicy
    from shared.schemas import EmbeddedFace, FrameEmbeddings, IdentityEvent

    ann = np.eye(1, 3, dtype=np.float32)[0]
    index = GalleryIndex.build({"ann": ann[None]}, model_version="m1")
    now = [1000.0]

    def matcher():
        return Matcher(lambda: index, 0.8, "m1", "ev", TrackPolicy(max_gap_s=1.0), clock=lambda: now[0],
                       visit_store=RedisVisitStore(client(redis_url), prefix), visit_gap_s=60.0)

    def play(m, t0, faces=5):
        events = []
        for i in range(faces):
            now[0] = t0 + 0.2 * i
            face = () if faces == 1 else (EmbeddedFace((0.0, 0.0, 50.0, 50.0), 0.99, ann, 90.0, 80.0),)
            for out in m.process([FrameEmbeddings("door", i, now[0], 640, 360, "m1", face)]):
                events += [IdentityEvent.decode(o.value) for o in out]
            m.flush()
        return events

    m = matcher()
    first = play(m, 1000.0)
    assert [e.kind for e in first] == ["identified"]
    now[0] += 1.0  # the loop's next commit (an idle poll's): a visit that only gained faces is written each second
    m.flush()
    successor = matcher()
    assert play(successor, 1020.0) == []
    ended = [e for t in range(1030, 1090) for e in play(successor, float(t), faces=1)]
    assert [(e.kind, e.visit_id, e.faces) for e in ended] == [("visit-ended", first[0].visit_id, 10)]
    assert RedisVisitStore(client(redis_url), prefix).get("door", "ann") is None
