"""services/matcher/threshold.py and Matcher.set_threshold: which threshold the matcher applies (the flag, the
gallery's calibration for its model, the checkpoint's), and a new calibration applied without a restart.
Against an in-memory store; the real Redis is tests/integration/test_calibrate.py's."""
from __future__ import annotations

import json

import numpy as np
import pytest
from redis.exceptions import ResponseError

from services.matcher.index import GalleryIndex
from services.matcher.stage import Matcher
from services.matcher.threshold import LiveThreshold, choose
from services.matcher.tracks import TrackPolicy
from shared import metrics
from shared.schemas import EmbeddedFace, FrameEmbeddings

CKPT = {"cosine": 0.92, "far": 1e-3, "source": "lfw-view2"}


def cal(model="m1", threshold=0.7, **kw) -> dict:
    return {"model_version": model, "threshold": threshold, "far": 1e-3, "n_people": 20, "date": "today", **kw}


def test_the_flag_then_the_calibration_of_the_model_then_the_checkpoint():
    assert choose(0.5, CKPT, cal(), "m1") == (0.5, "--threshold")
    value, source = choose(None, CKPT, cal(), "m1")
    assert value == 0.7 and source.startswith("the gallery's calibration (FAR 0.001, 20 people")
    value, source = choose(None, CKPT, cal("m2"), "m1")
    assert value == 0.92 and "lfw-view2" in source and "of model 'm2', ignored" in source
    assert choose(None, CKPT, None, "m1")[0] == 0.92


@pytest.mark.parametrize("bad", [None, "0.7", 1.5, float("nan"), True])
def test_a_calibration_without_a_usable_threshold_is_passed_over(bad):
    value, source = choose(None, CKPT, cal(threshold=bad), "m1")
    assert value == 0.92 and "ignored" in source


def test_no_threshold_anywhere_is_none_with_the_reason():
    value, source = choose(None, None, cal("m2"), "m1")
    assert value is None and "no calibration of model m1" in source


class Store:
    def __init__(self, doc=None):
        self.doc, self.reads = doc, 0

    def calibration(self):
        self.reads += 1
        if isinstance(self.doc, Exception):
            raise self.doc
        return self.doc


def test_live_threshold_follows_the_calibration_and_tells_its_subscribers():
    live, seen = LiveThreshold(None, CKPT, "m1"), []
    store = Store()
    live.refresh(store)
    live.subscribe(seen.append)
    assert seen == [0.92] and metrics.MATCH_THRESHOLD._value.get() == 0.92
    store.doc = cal(threshold=0.75)
    live.refresh(store)
    live.refresh(store)  # the same choice again: no second notice
    assert seen == [0.92, 0.75] and live.source.startswith("the gallery's calibration")
    assert metrics.MATCH_THRESHOLD._value.get() == 0.75
    store.doc = cal("m2", threshold=0.5)  # recalibrated for another model: back to the checkpoint
    live.refresh(store)
    assert seen == [0.92, 0.75, 0.92]
    for broken in (ValueError("not JSON"), ResponseError("WRONGTYPE")):
        store.doc = broken
        live.refresh(store)
        assert live.value == 0.92 and "unreadable" in live.source


def test_a_flag_is_never_overridden_and_redis_is_not_read():
    live, store = LiveThreshold(0.6, CKPT, "m1"), Store(cal())
    live.refresh(store)
    assert (live.value, live.source, store.reads) == (0.6, "--threshold", 0)


def test_without_a_checkpoint_threshold_a_removed_calibration_keeps_the_last():
    live, store = LiveThreshold(None, None, "m1"), Store(cal(threshold=0.8))
    assert live.value is None
    live.refresh(store)
    assert live.value == 0.8
    store.doc = None
    live.refresh(store)
    assert live.value == 0.8


def unit(*xs):
    v = np.array(xs, np.float32)
    return v / np.linalg.norm(v)


def test_set_threshold_applies_from_the_next_batch_and_moves_the_continuity():
    idx = GalleryIndex.build({"ann": unit(1, 0, 0)[None]}, version=1, model_version="m1")
    policy = TrackPolicy(max_gap_s=1.0, min_continuity=0.85, min_votes=3, unknown_min_faces=4)
    m = Matcher(lambda: idx, 0.9, "m1", "ev", policy, clock=lambda: 100.0)
    face = unit(1, 0.6, 0)  # cosine 0.857 with ann: under 0.9, over 0.8

    def frames(cam):
        return [FrameEmbeddings(cam, i, 99.0 + i * 0.1, 640, 360, "m1",
                                (EmbeddedFace((0.0, 0.0, 40.0, 40.0), 0.99, face),)) for i in range(3)]
    assert sum(len(o) for o in m.process(frames("a"))) == 0, "3 faces under 0.9: no name, not yet unknown"
    m.set_threshold(0.8, 0.75)
    assert m.policy.min_continuity == 0.75 and m.cameras["a"].policy.min_continuity == 0.75
    events = [json.loads(o.value) for out in m.process(frames("b")) for o in out]
    assert [(e["identity"], e["threshold"]) for e in events] == [("ann", 0.8)]


@pytest.mark.parametrize("doc", [RecursionError("nested 100000 deep"), {"model_version": "m1", "threshold": 10 ** 400}])
def test_hostile_calibration_contents_never_stop_the_gallery_sync(doc):
    live = LiveThreshold(None, CKPT, "m1")
    live.refresh(Store(doc))  # 10**400 makes math.isfinite raise OverflowError
    assert live.value == 0.92 and "unreadable" in live.source
