"""The detector stage's batch: the cameras' chosen frames detected in one call, motion-gated frames
published as unchanged, and a frame that breaks the batched call refused alone."""
import cv2
import numpy as np

from services.detector.motion import MotionGate, MotionSettings
from services.detector.stage import Gates, make_process
from shared.schemas import Frame, FrameFaces
from shared.stage import InvalidMessage
from tests.unit.test_stages import FACES, GATES


def jpeg(seed=0, h=72, w=128) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def statuses(results):
    return [r if isinstance(r, InvalidMessage) else FrameFaces.decode(r[0].value).status for r in results]


def test_the_cameras_newest_frames_share_one_detection_call():
    calls = []

    def many(images):
        calls.append(len(images))
        return [FACES[:1] for _ in images]

    process = make_process(lambda rgb: FACES[:1], GATES, "faces", 0, detect_many=many, clock=lambda: 10.0)
    frames = [Frame(f"cam{i % 3}", i, 1.0 + i, 128, 72, jpeg(i)) for i in range(6)]
    assert statuses(process(frames)) == ["skipped"] * 3 + ["ok"] * 3
    assert calls == [3], "one call for the three cameras' newest frames"


def test_a_frame_that_breaks_the_batched_call_is_refused_alone_and_its_camera_tries_its_next():
    def many(images):
        raise RuntimeError("torch.cat: a bad tensor")

    def one(rgb):
        if rgb.shape[0] == 40:
            raise RuntimeError("this frame breaks MTCNN")
        return FACES[:1]

    process = make_process(one, GATES, "faces", 0, detect_many=many, clock=lambda: 10.0)
    frames = [Frame("a", 0, 1.0, 128, 72, jpeg(1)), Frame("a", 1, 2.0, 128, 40, jpeg(2, h=40)),
              Frame("b", 0, 1.0, 128, 72, jpeg(3)), Frame("b", 1, 2.0, 128, 72, b"\xff\xd8 not a jpeg")]
    got = statuses(process(frames))
    assert got[0] == "ok" and got[2] == "ok", "each camera's next frame that reads is detected"
    assert isinstance(got[1], InvalidMessage) and "breaks MTCNN" in got[1].reason
    assert isinstance(got[3], InvalidMessage) and "JPEG" in got[3].reason


def test_a_still_camera_is_detected_once_then_published_unchanged_until_forced():
    from shared import metrics

    seen = []
    gate = MotionGate(MotionSettings(min_changed=0.003, force_every_s=1.0, track_hold_s=3.0))
    process = make_process(lambda rgb: seen.append(1) or [], GATES, "faces", 0, motion=gate, clock=lambda: 100.0)
    still = jpeg(7)
    before = metrics.FRAMES_UNCHANGED.labels("detector", "lobby")._value.get()
    got = [statuses(process([Frame("lobby", i, 10.0 + 0.2 * i, 128, 72, still)]))[0] for i in range(7)]
    assert got == ["ok", "unchanged", "unchanged", "unchanged", "unchanged", "ok", "unchanged"]
    assert len(seen) == 2 and metrics.FRAMES_UNCHANGED.labels("detector", "lobby")._value.get() - before == 5
    moved = statuses(process([Frame("lobby", 9, 11.3, 128, 72, jpeg(8))]))
    assert moved == ["ok"], "a frame that changed is detected"


def test_a_camera_with_faces_is_detected_every_frame_while_its_track_is_new():
    gate = MotionGate(MotionSettings(force_every_s=10.0, track_hold_s=1.0, faces_every_s=10.0))
    process = make_process(lambda rgb: FACES[:1], GATES, "faces", 0, motion=gate, clock=lambda: 100.0)
    still = jpeg(9)
    got = [statuses(process([Frame("door", i, 10.0 + 0.3 * i, 128, 72, still)]))[0] for i in range(6)]
    assert got == ["ok", "ok", "ok", "ok", "unchanged", "unchanged"]


def test_a_detector_that_returns_too_few_results_is_not_trusted():
    def many(images):
        return [FACES[:1]]  # one list for several frames: a bug, not a result

    process = make_process(lambda rgb: FACES[:1], GATES, "faces", 0, detect_many=many, clock=lambda: 10.0)
    frames = [Frame(f"cam{i}", 0, 1.0, 128, 72, jpeg(i)) for i in range(3)]
    assert statuses(process(frames)) == ["ok"] * 3, "each frame detected alone instead"


def test_frames_are_detected_in_chunks_of_bounded_decoded_pixels():
    """Frames are detected in chunks of at most BATCH_PIXELS decoded pixels: a batch of large frames does
    not hold every decoded frame at once."""
    from services.detector import stage

    calls = []
    old = stage.BATCH_PIXELS
    stage.BATCH_PIXELS = 2 * 128 * 72
    try:
        process = make_process(lambda rgb: [], Gates(40, 0.9, 10.0, 2), "faces", 0,
                               detect_many=lambda ims: calls.append(len(ims)) or [[] for _ in ims], clock=lambda: 10.0)
        frames = [Frame(f"c{i}", 0, 1.0, 128, 72, jpeg(i)) for i in range(5)]
        assert statuses(process(frames)) == ["ok"] * 5
    finally:
        stage.BATCH_PIXELS = old
    assert calls == [2, 2], "two chunks of two, the last frame alone through `detect`"


def test_a_cameras_older_frames_within_the_shed_grace_are_detected_and_older_ones_shed():
    """Two frames of a camera in one batch are as often a pool briefly late as one behind: within the grace
    both are detected (in a second call, the newest frames first); past it the older ones are skipped."""
    calls = []

    def many(images):
        calls.append(len(images))
        return [FACES[:1] for _ in images]

    process = make_process(lambda rgb: FACES[:1], GATES, "faces", 0, detect_many=many, clock=lambda: 10.0,
                           shed_grace_s=0.5)
    frames = [Frame("a", 0, 9.0, 128, 72, jpeg(0)), Frame("a", 1, 9.6, 128, 72, jpeg(1)),
              Frame("b", 0, 9.7, 128, 72, jpeg(2)), Frame("a", 2, 9.8, 128, 72, jpeg(3)),
              Frame("b", 1, 9.9, 128, 72, jpeg(4))]
    assert statuses(process(frames)) == ["skipped", "ok", "ok", "ok", "ok"], "a0 is 1 s old: past the grace"
    assert calls == [2, 2], "round one the newest of a and b, round two their next within the grace"


def test_the_motion_gate_sees_only_a_cameras_newest_frame_and_an_unchanged_one_sheds_the_rest():
    def many(images):
        return [[] for _ in images]

    gate = MotionGate(MotionSettings(min_changed=0.003, force_every_s=100))
    process = make_process(lambda rgb: [], GATES, "faces", 0, detect_many=many, clock=lambda: 10.0,
                           motion=gate, shed_grace_s=0.5)
    still = jpeg(7)
    assert statuses(process([Frame("a", 0, 9.5, 128, 72, still)])) == ["ok"]
    got = statuses(process([Frame("a", 1, 9.7, 128, 72, still), Frame("a", 2, 9.9, 128, 72, still)]))
    assert got == ["skipped", "unchanged"], "the newest is unchanged: its older frame is not detected either"
