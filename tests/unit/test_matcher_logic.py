"""Pure logic of the matcher: the index, the vote rule, tracking, and the stage's events."""
import json

import numpy as np
import pytest

from services.matcher.index import GalleryIndex
from services.matcher.stage import Matcher
from services.matcher.tracks import CameraTracks, FaceObs, TrackPolicy, Vote, decide, iou, quality_weight
from shared.stage import InvalidMessage
from shared.schemas import EmbeddedFace, FrameEmbeddings

P = TrackPolicy(max_gap_s=1.0, min_continuity=0.5, min_votes=3, vote_ratio=0.6, unknown_min_faces=4,
                unknown_ratio=0.9)


def unit(*xs):
    v = np.array(xs, np.float32)
    return v / np.linalg.norm(v)


def test_index_top1_is_the_owner_of_the_best_embedding():
    idx = GalleryIndex.build({"ann": np.stack([unit(1, 0, 0), unit(0.8, 0.6, 0)]), "bob": unit(0, 0, 1)[None]})
    names, scores = idx.search(np.stack([unit(0.6, 0.8, 0), unit(0, 0.1, 1)]))
    assert names == ["ann", "bob"]
    np.testing.assert_allclose(scores, [0.96, 1 / np.sqrt(1.01)], rtol=1e-5)
    assert (len(idx), idx.size) == (2, 3)


def test_empty_gallery_matches_nobody():
    names, scores = GalleryIndex.build({}).search(np.stack([unit(1, 0)]))
    assert names == [None] and scores[0] == -np.inf


def test_decide_waits_names_and_allows_dont_know():
    assert decide([("ann", 0.9), ("ann", 0.8)], P) is None  # not yet: 2 votes < 3
    d = decide([("ann", 0.9), ("ann", 0.8), (None, 0.3), ("ann", 0.7)], P)
    assert d.identity == "ann" and d.score == pytest.approx(0.8)
    assert decide([("ann", 0.9), ("bob", 0.9)] * 3, P) is None  # a tie: 3 votes each is 50% < 60%
    assert decide([("ann", 0.9), ("bob", 0.8)] * 2 + [("ann", 0.7)], P).identity == "ann"  # 3 of 5 = 60%
    assert decide([(None, 0.2)] * 3, P) is None  # unknown needs 4 faces while the track lives...
    assert decide([(None, 0.2)] * 3, P, final=True).identity is None  # ...3 when it ends
    assert decide([(None, 0.2), (None, 0.4)] * 2, P).score == pytest.approx(0.4)
    assert decide([(None, 0.2), ("ann", 0.9)], P, final=True) is None  # too short to say: don't know


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_tracks_follow_position_and_appearance_and_decide_once():
    cam = CameraTracks("c", P, "c-t")
    a, b = unit(1, 0, 0), unit(0, 1, 0)
    out = []
    for i in range(5):
        x = 10 * i  # two faces drifting right; their order in the frame swaps halfway
        faces = [FaceObs((x, 0, x + 50, 50), a, "ann", 0.9), FaceObs((300 - x, 0, 350 - x, 50), b, None, 0.1)]
        out += cam.update(float(i) * 0.1, faces if i < 3 else faces[::-1])
    assert len(cam.live) == 2, "each face kept its own track"
    assert [(t.track_id, d.identity) for t, d in out] == [("c-t-0", "ann"), ("c-t-1", None)]


def test_a_different_face_at_the_same_place_starts_a_new_track():
    cam = CameraTracks("c", P, "t")
    cam.update(0.0, [FaceObs((0, 0, 50, 50), unit(1, 0), "ann", 0.9)])
    cam.update(0.1, [FaceObs((0, 0, 50, 50), unit(0, 1), "bob", 0.9)])
    assert len(cam.live) == 2


def test_tracks_end_after_the_gap_with_a_final_decision():
    cam = CameraTracks("c", P, "t")
    for i in range(3):
        cam.update(i * 0.1, [FaceObs((0, 0, 50, 50), unit(1, 0), None, 0.2)])
    ended = cam.expire(5.0)
    assert [d.identity for _, d in ended] == [None] and cam.live == []


def frame(seq, ts, vecs, model="m1", cam="cam"):
    faces = tuple(EmbeddedFace((0.0, 0.0, 40.0, 40.0), 0.99, v) for v in vecs)
    return FrameEmbeddings(cam, seq, ts, 640, 360, model, faces)


def test_matcher_publishes_one_event_per_identified_track():
    idx = GalleryIndex.build({"ann": unit(1, 0, 0)[None]}, version=1, model_version="m1")
    m = Matcher(lambda: idx, threshold=0.8, model_version="m1", events_topic="ev", policy=P, clock=lambda: 100.0)
    outs = m.process([frame(i, 99.0 + i * 0.1, [unit(1, 0.1, 0)]) for i in range(6)])
    assert [len(o) for o in outs] == [0, 0, 1, 0, 0, 0]
    ev = json.loads(outs[2][0].value)
    assert (ev["identity"], ev["camera_id"], ev["threshold"], ev["model_version"], ev["faces"]) == \
        ("ann", "cam", 0.8, "m1", 3)
    assert ev["first_seen"] == 99.0 and ev["last_seen"] == pytest.approx(99.2) and outs[2][0].topic == "ev"


def test_matcher_ends_quiet_tracks_when_idle_and_refuses_other_models():
    idx = GalleryIndex.build({"ann": unit(1, 0, 0)[None]}, model_version="m1")
    now = [10.0]
    m = Matcher(lambda: idx, 0.8, "m1", "ev", P, clock=lambda: now[0])
    m.process([frame(i, 10.0 + i * 0.1, [unit(0, 1, 0)]) for i in range(3)])  # 3 unknown faces: not yet
    assert m.idle() == []
    now[0] = 20.0
    # the track ends: its final decision (unknown), and the end of the unknown visit, which is that track
    out, ended = (json.loads(o.value) for o in m.idle())
    assert (out["identity"], out["kind"]) == (None, "unknown")
    assert (ended["kind"], ended["visit_id"], ended["faces"]) == ("visit-ended", out["visit_id"], 3)
    (refused,) = m.process([frame(0, 1.0, [unit(1, 0, 0)], model="m2")])
    assert isinstance(refused, InvalidMessage) and "cannot be compared" in refused.reason


def test_a_foreign_model_frame_in_a_batch_is_refused_alone_and_the_others_still_track():
    idx = GalleryIndex.build({"ann": unit(1, 0, 0)[None]}, model_version="m1")
    m = Matcher(lambda: idx, 0.8, "m1", "ev", P, clock=lambda: 11.0)
    frames = [frame(0, 10.0, [unit(1, 0, 0)]), frame(1, 10.1, [unit(1, 0, 0)], model="m2"),
              frame(2, 10.2, [unit(1, 0, 0)]), frame(3, 10.3, [unit(1, 0, 0)])]
    results = m.process(frames)
    assert isinstance(results[1], InvalidMessage)
    assert [len(r) for i, r in enumerate(results) if i != 1] == [0, 0, 1], "3 good faces name ann once"
    assert json.loads(results[3][0].value)["identity"] == "ann"


@pytest.mark.parametrize("vec, why", [(np.ones(64, np.float32) / 8, "a 64-d embedding where model 'm1' makes 3-d"),
                                      (np.array([3.0, 0, 0], np.float32), "an embedding of length 3")])
def test_a_vector_of_the_wrong_size_or_length_is_refused_not_a_crash(vec, why):
    idx = GalleryIndex.build({"ann": unit(1, 0, 0)[None]}, model_version="m1")
    m = Matcher(lambda: idx, 0.8, "m1", "ev", P, clock=lambda: 11.0)
    bad, good = m.process([frame(0, 10.0, [vec]), frame(1, 10.1, [unit(1, 0, 0)])])
    assert isinstance(bad, InvalidMessage) and why in bad.reason and good == []


# --- votes weighted by quality (issue 12, item 6) ---------------------------------------------------------
TINY_BLURRED = quality_weight(20.0, 3.0)  # 20 px, Laplacian variance 3: under both references' tenth
CLEAR = quality_weight(120.0, 200.0)


def test_quality_weight_is_bounded_and_neutral_when_unmeasured():
    assert CLEAR == 1.0 and quality_weight(None, None) == 1.0
    assert TINY_BLURRED == pytest.approx(0.25 * 0.1)
    assert quality_weight(0.0, 0.0) == pytest.approx(0.01)  # never zero: a face always counts a little
    assert quality_weight(40.0, 15.0) == pytest.approx(0.5 * 0.3)  # a face at the detector's gates
    assert quality_weight(40.0, None) == pytest.approx(0.5)


def test_tiny_blurred_faces_cannot_outvote_clear_ones():
    two = TrackPolicy(min_votes=2, vote_ratio=0.6)
    votes = [Vote("x", 0.85, TINY_BLURRED)] * 3 + [Vote("y", 0.95, CLEAR), Vote("y", 0.93, CLEAR)]
    d = decide(votes, two)
    assert d.identity == "y" and d.score == pytest.approx(0.94)
    assert decide([v[:2] for v in votes], two).identity == "x", "by counts alone, 3 of 5 blurred faces win"


def test_the_identified_score_is_the_weighted_mean_of_the_winners_votes():
    d = decide([Vote("ann", 0.9, 1.0), Vote("ann", 0.7, 0.25), Vote("ann", 0.8, 0.75)], P)
    assert d.identity == "ann" and d.score == pytest.approx((0.9 + 0.7 * 0.25 + 0.8 * 0.75) / 2.0)


def test_equal_weights_decide_as_counts_did():
    for votes in ([("ann", 0.9), ("ann", 0.8), (None, 0.3), ("ann", 0.7)], [("ann", 0.9), ("bob", 0.9)] * 3,
                  [("ann", 0.9), ("bob", 0.8)] * 2 + [("ann", 0.7)], [(None, 0.2), (None, 0.4)] * 2):
        for w in (1.0, 0.3):
            weighted, counted = decide([Vote(n, s, w) for n, s in votes], P), decide(votes, P)
            assert (weighted is None) == (counted is None)
            if counted is not None:
                assert weighted.identity == counted.identity and weighted.score == pytest.approx(counted.score)


def test_a_weighted_tie_abstains():
    assert decide([Vote("ann", 0.9, 0.5), Vote("bob", 0.9, 0.5)] * 3, TrackPolicy(min_votes=3, vote_ratio=0.0)) is None


def test_the_matcher_weighs_faces_by_the_quality_the_embedder_carried():
    idx = GalleryIndex.build({"ann": unit(1, 0, 0)[None], "bob": unit(0, 1, 0)[None]}, model_version="m1")
    m = Matcher(lambda: idx, 0.8, "m1", "ev", TrackPolicy(max_gap_s=1.0, min_continuity=-1.0, min_votes=2,
                                                           vote_ratio=0.6), clock=lambda: 100.0)

    def face(i, v, size, sharp):
        return FrameEmbeddings("cam", i, 99.0 + 0.1 * i, 640, 360, "m1",
                               (EmbeddedFace((0.0, 0.0, 40.0, 40.0), 0.99, v, size, sharp),))

    x, y = unit(1, 0.05, 0), unit(0.05, 1, 0)  # one track (continuity is off): 3 tiny blurred ann, 2 clear bob
    frames = [face(0, x, 20.0, 3.0), face(1, y, 120.0, 200.0), face(2, x, 20.0, 3.0), face(3, x, 20.0, 3.0),
              face(4, y, 120.0, 200.0)]
    events = [json.loads(o.value) for r in m.process(frames) for o in r]
    assert [e["identity"] for e in events] == ["bob"], events


def test_the_embedder_carries_each_faces_quality_to_the_matcher():
    from services.embedder.stage import make_process
    from shared.schemas import DetectedFace, FrameFaces
    import cv2

    crop = cv2.imencode(".jpg", np.full((150, 150, 3), 128, np.uint8))[1].tobytes()
    faces = (DetectedFace((0.0, 0.0, 50.0, 60.0), 0.99, (1.0,) * 10, crop, 50.0, 37.5),)
    process = make_process(lambda c: np.tile(unit(1, 0, 0), (len(c), 1)), 150, "m1", "embeddings")
    ((out,),) = process([FrameFaces("cam", 0, 1.0, 640, 360, faces)])
    (face,) = FrameEmbeddings.decode(out.value).faces
    assert (face.face_size, face.sharpness) == (50.0, 37.5)
