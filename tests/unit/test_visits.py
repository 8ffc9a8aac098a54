"""One event per visit (issue 12, item 5b): the matcher's visits over an in-memory store shared like Redis.

Each helper call plays one track of one face per frame (5 faces, 0.2 s apart) with the matcher's clock at
the frame's capture time, then commits (the loop's `committed` hook: `flush`) unless told it crashed first.
"""
import json
import logging

import numpy as np
import pytest

from services.matcher.index import GalleryIndex
from services.matcher.stage import Matcher
from services.matcher.tracks import TrackPolicy
from services.matcher.visit_records import MemoryVisitStore, Visit
from shared.schemas import EmbeddedFace, FrameEmbeddings, IdentityEvent

P = TrackPolicy(max_gap_s=1.0, min_continuity=0.5, min_votes=3, vote_ratio=0.6, unknown_min_faces=4)
ANN, BOB, NOBODY = np.eye(3, dtype=np.float32)
GALLERY = GalleryIndex.build({"ann": ANN[None], "bob": BOB[None]}, model_version="m1")
BOX = (100.0, 100.0, 160.0, 160.0)


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def matcher(store, clock, gap_s=60.0) -> Matcher:
    return Matcher(lambda: GALLERY, 0.8, "m1", "ev", P, clock=clock, visit_store=store, visit_gap_s=gap_s)


def play(m: Matcher, clock: Clock, t0: float, vec=ANN, cam="door", n=5, box=BOX, commit=True) -> list[IdentityEvent]:
    events = []
    for i in range(n):
        clock.t = t0 + 0.2 * i
        face = EmbeddedFace(box, 0.99, vec, 100.0, 100.0)
        for out in m.process([FrameEmbeddings(cam, i, clock.t, 640, 360, "m1", (face,))]):
            events += [IdentityEvent.decode(o.value) for o in out]
    if commit:
        m.flush()
    return events


def quiet(m: Matcher, clock: Clock, until: float, cam="other", step=1.0) -> list[IdentityEvent]:
    """Frames without faces from another camera until `until`: the matcher is busy, idle() never runs."""
    events, seq = [], 0
    while clock.t < until:
        clock.t = min(until, clock.t + step)
        for out in m.process([FrameEmbeddings(cam, seq, clock.t, 640, 360, "m1", ())]):
            events += [IdentityEvent.decode(o.value) for o in out]
        m.flush()
        seq += 1
    return events


def kinds(events):
    return [(e.kind, e.identity) for e in events]


def test_two_tracks_10_s_apart_are_one_visit_and_one_event():
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    first = play(m, clock, 100.0)
    again = play(m, clock, 110.0)
    assert kinds(first) == [("identified", "ann")] and again == []
    assert first[0].visit_id and first[0].faces == 3 and first[0].event_id != first[0].visit_id


def test_tracks_70_s_apart_are_two_visits_the_first_ended_before_the_second_starts():
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    first = play(m, clock, 100.0)
    second = play(m, clock, 110.0) + play(m, clock, 180.0)
    assert kinds(first + second) == [("identified", "ann"), ("visit-ended", "ann"), ("identified", "ann")]
    ended = second[0]
    assert ended.visit_id == first[0].visit_id != second[1].visit_id
    assert (ended.first_seen, ended.last_seen, ended.faces) == (100.0, pytest.approx(110.8), 10)
    assert ended.duration_s == pytest.approx(10.8) and ended.camera_id == "door"
    import jsonschema  # what the matcher publishes is what the documented schema says
    from pathlib import Path

    schema = json.loads((Path(__file__).parents[2] / "shared" / "identity-event.v2.schema.json").read_text())
    for e in first + second:
        jsonschema.validate(json.loads(e.encode()), schema)


def test_a_restarted_matcher_continues_the_visit_its_predecessor_announced():
    store, clock = MemoryVisitStore(), Clock()
    assert kinds(play(matcher(store, clock), clock, 100.0)) == [("identified", "ann")]
    assert play(matcher(store, clock), clock, 130.0) == [], "a new process, the same visit"


def test_two_replicas_sharing_the_store_announce_a_visit_once_and_end_it_once():
    store, clock = MemoryVisitStore(), Clock()
    a, b = matcher(store, clock), matcher(store, clock)
    assert kinds(play(a, clock, 100.0)) == [("identified", "ann")]
    assert play(b, clock, 105.0) == [], "the partition moved to b: the visit goes on"
    ends = []
    for t in range(106, 200):  # both busy with other cameras, both holding the visit in memory
        for name, m in (("a", a), ("b", b)):
            clock.t = t - 0.5
            ends += [(name, e) for e in quiet(m, clock, float(t), cam=f"x-{name}")]
    assert [(name, e.kind) for name, e in ends] == [("b", "visit-ended")], "a's claim lost to b's newer record"
    assert ends[0][1].faces == 10 and 165.8 < ends[0][1].event_ts < 167 and store.records == {}


def test_a_person_on_two_cameras_makes_two_visits():
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    assert kinds(play(m, clock, 100.0, cam="door") + play(m, clock, 101.0, cam="hall")) == \
        [("identified", "ann"), ("identified", "ann")]


def test_a_crash_before_the_commit_replays_to_the_same_ids():
    """Killed before the Kafka commit: the transaction aborts and the store was never written, so the next
    matcher decides again from the same inputs, with the same ids (a consumer may dedupe on event_id)."""
    store, clock = MemoryVisitStore(), Clock()
    lost = play(matcher(store, clock), clock, 100.0, commit=False)
    assert store.records == {}
    replayed = play(matcher(store, clock), clock, 100.0)
    assert [(e.event_id, e.visit_id) for e in replayed] == [(e.event_id, e.visit_id) for e in lost]
    c = Clock()
    other = play(matcher(MemoryVisitStore(), c), c, 100.0)  # another process, the same inputs
    assert other[0].event_id == lost[0].event_id and len(store.records) == 1


def test_an_aborted_transaction_forgets_the_batch_and_its_replay_decides_the_same():
    """The group moved mid-transaction (Stage.aborted): the batch is read again from its first offset."""
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    lost = play(m, clock, 100.0, commit=False)
    m.abort()
    assert m.cameras == {} and m.visits.open == {} and store.records == {}
    replayed = play(m, clock, 100.0)
    assert [(e.kind, e.event_id) for e in replayed] == [(e.kind, e.event_id) for e in lost]
    later = play(m, clock, 110.0, commit=False)
    m.abort()  # a batch after a committed one: what was committed stays in the store
    assert later == [] and play(m, clock, 110.0) == [] and len(store.records) == 1


def test_a_visit_ends_while_other_cameras_keep_the_matcher_busy():
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    play(m, clock, 100.0)
    busy = quiet(m, clock, 150.0)
    assert busy == []
    ended = quiet(m, clock, 162.0)
    assert kinds(ended) == [("visit-ended", "ann")] and 160.8 < ended[0].event_ts <= 162.0
    assert store.records == {}, "its record is gone with it"


def test_a_visit_ends_from_idle_when_every_camera_is_quiet():
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    play(m, clock, 100.0)
    clock.t = 150.0
    assert m.idle() == []
    clock.t = 161.0
    assert kinds(IdentityEvent.decode(o.value) for o in m.idle()) == [("visit-ended", "ann")]
    assert m.cameras == {} and list(m._seen) == ["door"], "its clock is kept until the end is committed"
    m.flush()
    clock.t = 162.0
    assert m.idle() == [] and m._seen == {}, "a quiet camera's state goes once its visits ended"


def test_a_restarted_matcher_ends_the_visits_its_predecessor_left():
    store, clock = MemoryVisitStore(), Clock()
    play(matcher(store, clock), clock, 100.0)  # then the process dies
    successor = matcher(store, clock)
    # it never sees the door camera: the predecessor's visit waits the grace for a lagging owner, then ends
    early = quiet(successor, clock, 100.8 + 60 + successor.visits.scan_grace_s - 1)
    late = quiet(successor, clock, 100.8 + 60 + successor.visits.scan_grace_s + successor.visits.scan_every_s + 1)
    assert early == [] and kinds(late) == [("visit-ended", "ann")] and store.records == {}


def test_a_camera_with_a_backlog_ends_its_visits_by_its_own_clock():
    """Frames captured 1000 s ago (a backlog after an outage), one batch a second: the visit ends when the
    camera's own capture time passes last_seen + gap, not at once by the wall clock."""
    store, clock = MemoryVisitStore(), Clock(2000.0)
    m = matcher(store, clock)
    came = []
    for i in range(12):  # ann's track (5 faces 0.2 s apart), then frames without faces 10 s apart
        t = 1000.0 + (0.2 * i if i < 5 else 10.0 * i)
        faces = (EmbeddedFace(BOX, 0.99, ANN, 100.0, 100.0),) if i < 5 else ()
        clock.t += 1.0
        for out in m.process([FrameEmbeddings("door", i, t, 640, 360, "m1", faces)]):
            came += [(i, IdentityEvent.decode(o.value).kind) for o in out]
        m.flush()
    assert came == [(2, "identified"), (7, "visit-ended")], "captured at 1070: past 1000.8 + 60"


def test_each_unknown_track_is_a_visit_of_its_own_ended_with_its_track():
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    first = play(m, clock, 100.0, vec=NOBODY, n=6)
    second = play(m, clock, 105.0, vec=NOBODY, n=6)
    assert kinds(first) == [("unknown", None)]
    assert kinds(second) == [("visit-ended", None), ("unknown", None)], "the first track ended (gap 1 s)"
    assert second[0].visit_id == first[0].visit_id != second[1].visit_id
    assert (second[0].faces, second[0].duration_s) == (6, pytest.approx(1.0))


def test_two_strangers_in_one_frame_are_two_visits():
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    other = np.array([0.0, 0.6, 0.8], np.float32)  # matches nobody either, and is not NOBODY's track
    events = []
    for i in range(5):
        clock.t = 100.0 + 0.2 * i
        faces = (EmbeddedFace(BOX, 0.99, NOBODY, 100.0, 100.0),
                 EmbeddedFace((400.0, 100.0, 460.0, 160.0), 0.99, other, 100.0, 100.0))
        for out in m.process([FrameEmbeddings("door", i, clock.t, 640, 360, "m1", faces)]):
            events += [IdentityEvent.decode(o.value) for o in out]
    assert kinds(events) == [("unknown", None)] * 2 and events[0].visit_id != events[1].visit_id


def test_the_store_away_the_matcher_still_matches_and_writes_later(caplog):
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    store.down = True
    with caplog.at_level(logging.WARNING, logger="facestream"):
        assert kinds(play(m, clock, 100.0)) == [("identified", "ann")]
        assert play(m, clock, 110.0) == [], "the visit goes on in memory"
        assert kinds(play(m, clock, 100.0, vec=BOB, cam="hall")) == [("identified", "bob")]
    assert sum("visit store unavailable" in r.message for r in caplog.records) == 1, "logged once"
    assert m.visits.degraded and store.records == {}
    store.down = False
    clock.t += 60.0  # past the retry delay
    m.flush()
    assert m.visits.degraded is None
    assert {json.loads(r)["identity"] for r in store.records.values()} == {"ann", "bob"}
    assert play(matcher(store, clock), clock, 140.0) == [], "a successor finds the visit written late"


def test_a_visit_ended_while_the_store_was_away_is_removed_from_it_later():
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    play(m, clock, 100.0)
    store.down = True
    assert kinds(quiet(m, clock, 165.0)) == [("visit-ended", "ann")], "ended without a claim"
    assert len(store.records) == 1
    store.down = False
    quiet(m, clock, 200.0)
    assert store.records == {}, "and no successor ends it a second time"


def test_a_visit_ended_by_another_replica_is_not_brought_back():
    store, clock = MemoryVisitStore(), Clock()
    a = matcher(store, clock)
    play(a, clock, 100.0)
    (held,) = [Visit.from_json(r) for r in store.records.values()]
    assert store.claim_end(held, 1e12)  # another replica ended it (a lagging owner, say)
    assert play(a, clock, 105.0) == [] and store.records == {}, "a's write finds it claimed and lets it go"
    assert kinds(play(a, clock, 110.0)) == [("identified", "ann")], "the next track is a new visit"


def test_record_round_trip_and_damage():
    store, clock = MemoryVisitStore(), Clock()
    play(matcher(store, clock), clock, 100.0)
    (raw,) = store.records.values()
    v = Visit.from_json(raw)
    assert (v.identity, v.camera, v.first_seen, v.faces, v.gap_s, v.stored) == ("ann", "door", 100.0, 5, 60.0, True)
    assert Visit.from_json(v.to_json()).to_json() == v.to_json()
    for bad in (b"", b"[]", b'{"visit_id": "x"}', raw.replace('"faces":5', '"faces":"many"')):
        with pytest.raises(ValueError, match="not a visit record"):
            Visit.from_json(bad)


def test_the_events_command_prints_what_happened():
    from services.events import human

    announced = IdentityEvent("e", "door", "door-t-0", "ann", 0.93, 0.8, 100.0, 100.4, BOX, "m1", 3, 100.6,
                              visit_id="0123456789abcdef")
    ended = IdentityEvent("e2", "door", "door-t-0", "ann", 0.93, 0.8, 100.0, 173.2, BOX, "m1", 412, 240.0,
                          kind="visit-ended", visit_id="0123456789abcdef", duration_s=73.2)
    assert " ann " in human(announced) and "identified score 0.930" in human(announced)
    assert "0.20s after capture" in human(announced) and "visit 0123456789ab" in human(announced)
    assert "visit ended after 73 s, 412 faces" in human(ended)
    stranger = IdentityEvent("e3", "door", "door-t-1", None, 0.41, 0.8, 1.0, 2.0, BOX, "m1", 8)
    assert "unknown" in human(stranger) and "unknown score 0.410" in human(stranger)


# --- ends follow the Kafka commit (bug A) and a backlog ends no live visit (bug B) ---------------------------

def frame(m: Matcher, clock: Clock, t: float, cam: str, face=None, seq: int = 0, commit: bool = True):
    """One frame captured at `t` with the matcher's clock at `clock.t`; committed (flush) unless told not."""
    faces = (EmbeddedFace(BOX, 0.99, face, 100.0, 100.0),) if face is not None else ()
    events = [IdentityEvent.decode(o.value) for out in m.process([FrameEmbeddings(cam, seq, t, 640, 360, "m1", faces)])
              for o in out]
    if commit:
        m.flush()
    return events


def marks(store):
    return [Visit.from_json(r).ending_by for r in store.records.values()]


def test_an_end_whose_transaction_aborted_is_published_once_later():
    """A1: the owner ends a visit and the batch's transaction aborts (a rebalance): its record is still in
    the store, unmarked, and the visit ends once, under the same event id, in the replicas that go on."""
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    play(m, clock, 100.0)
    assert quiet(m, clock, 160.0) == []
    clock.t = 162.0
    lost = frame(m, clock, 162.0, "other", commit=False)
    assert kinds(lost) == [("visit-ended", "ann")]
    m.abort()
    assert len(store.records) == 1 and marks(store) == [None], "nothing was deleted before the commit"
    successor, ends = matcher(store, clock), []
    for t in range(163, 400):  # the partition went to `successor`; m goes on with its other partitions
        for mm, cam in ((m, "mine"), (successor, "other")):
            clock.t = t - 0.5
            ends += quiet(mm, clock, float(t), cam=cam)
    assert [(e.kind, e.event_id, e.faces) for e in ends] == [("visit-ended", lost[0].event_id, 5)]
    assert store.records == {}


def test_an_owner_killed_before_the_commit_leaves_the_end_to_its_successor():
    """A2: killed between its end's decision and the commit: the record stays; a successor ends it once."""
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    play(m, clock, 100.0)
    quiet(m, clock, 160.0)
    clock.t = 162.0
    lost = frame(m, clock, 162.0, "other", commit=False)
    assert kinds(lost) == [("visit-ended", "ann")] and len(store.records) == 1
    del m  # kill -9: no flush, no abort
    successor = matcher(store, clock)
    ends = quiet(successor, clock, 400.0, cam="x")
    assert [(e.kind, e.event_id, e.faces) for e in ends] == [("visit-ended", lost[0].event_id, 5)]
    assert store.records == {}


def test_two_replicas_scanning_an_orphan_end_it_once_and_a_lease_outlives_an_aborted_claim():
    """A3: the predecessor died; two replicas scan its expired record. A scan marks it (phase one) and its
    transaction aborts: the other, or the next scan, ends it; one killed after marking holds it for the lease."""
    store, clock = MemoryVisitStore(), Clock()
    play(matcher(store, clock), clock, 100.0)  # then it dies
    a, b = matcher(store, clock), matcher(store, clock)
    committed, aborted = [], []
    for t in range(101, 400):
        for name, m in (("a", a), ("b", b)):
            clock.t = t - 0.5 if name == "a" else float(t)
            got = frame(m, clock, clock.t, f"x-{name}", seq=t, commit=False)
            if got and not aborted:  # the first end's transaction aborts
                aborted.append((name, got[0].event_id))
                m.abort()
                assert len(store.records) == 1 and marks(store) == [None], "unmarked: anyone may end it"
                continue
            committed += [(name, e) for e in got]
            m.flush()
    assert [e.kind for _, e in committed] == ["visit-ended"] and store.records == {}
    assert committed[0][1].event_id == aborted[0][1], "the same end, published once"

    store, clock = MemoryVisitStore(), Clock()
    play(matcher(store, clock), clock, 100.0)
    a, b = matcher(store, clock), matcher(store, clock)
    ends = []
    for t in range(101, 600):
        clock.t = float(t)
        if a is not None and (got := frame(a, clock, clock.t, "x-a", seq=t, commit=False)):
            assert kinds(got) == [("visit-ended", "ann")] and marks(store) == [a.visits.token]
            a, marked_at = None, clock.t  # killed after marking, before the commit
        ends += [(clock.t, e) for e in frame(b, clock, clock.t, "x-b", seq=t)]
    assert [e.kind for _, e in ends] == ["visit-ended"] and store.records == {}
    assert ends[0][0] >= marked_at + b.visits.end_lease_s, "not before a's lease ran out"


def test_a_replica_with_a_backlog_ends_none_of_a_live_owners_visits():
    """B1: the owner reads a backlog (captured 4000 s ago) and keeps writing ann's visit, a track every 10 s;
    the other replica, scanning by the wall clock, leaves it alone: no end from it, no second announcement.
    Once ann is gone the owner ends the visit by its camera's clock."""
    store, clock = MemoryVisitStore(), Clock(5000.0)
    owner, other = matcher(store, clock), matcher(store, clock)
    seen = []
    for k in range(450):
        for half in (0.0, 0.5):
            clock.t = 5000.0 + k + half / 2
            face = ANN if k < 300 and k % 10 < 3 else None
            seen += [("owner", e) for e in frame(owner, clock, 1000.0 + k + half, "door", face, seq=2 * k)]
        clock.t = 5000.0 + k + 0.5
        seen += [("other", e) for e in frame(other, clock, clock.t, "x", seq=k)]
    assert [(name, e.kind) for name, e in seen] == [("owner", "identified"), ("owner", "visit-ended")]
    ended = seen[1][1]
    assert ended.last_seen == pytest.approx(1292.5) and 1352.5 < ended.event_ts - 4000 < 1355
    assert store.records == {}


def test_records_carry_when_they_were_written_and_old_ones_are_read_by_last_seen():
    store, clock = MemoryVisitStore(), Clock()
    m = matcher(store, clock)
    play(m, clock, 100.0, commit=False)
    clock.t = 1000.8  # captured at 100.8, written by the wall clock at 1000.8
    m.flush()
    (raw,) = store.records.values()
    v = Visit.from_json(raw)
    assert v.written_at == pytest.approx(1000.8) and v.last_written == pytest.approx(1000.8)
    old = json.loads(raw)
    del old["written_at"]
    assert Visit.from_json(json.dumps(old)).last_written == 100.8, "a record of an older matcher"


def test_a_person_back_while_another_replica_ends_their_visit_starts_a_new_one():
    """A scan marked the predecessor's visit `ending` and its transaction is in flight when ann comes back to
    the owner of the camera: a new visit at once (no second end); its record is written once the old is gone."""
    store, clock = MemoryVisitStore(), Clock()
    old = play(matcher(store, clock), clock, 100.0)  # then it dies
    scanner, owner = matcher(store, clock), matcher(store, clock)
    ended = []
    for t in range(101, 300):
        clock.t = float(t)
        if ended := frame(scanner, clock, clock.t, "x", seq=t, commit=False):
            break
        scanner.flush()
    assert kinds(ended) == [("visit-ended", "ann")] and ended[0].visit_id == old[0].visit_id
    back = play(owner, clock, clock.t + 0.5)  # committed: its write waits for the old record's delete
    assert kinds(back) == [("identified", "ann")] and back[0].visit_id != old[0].visit_id
    assert [Visit.from_json(r).visit_id for r in store.records.values()] == [old[0].visit_id]
    scanner.flush()  # the end committed: its record goes
    clock.t += 1.0
    owner.flush()
    assert [Visit.from_json(r).visit_id for r in store.records.values()] == [back[0].visit_id]
