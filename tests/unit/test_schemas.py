import json

import msgpack
import numpy as np
import pytest

from shared.schemas import (DetectedFace, EmbeddedFace, Frame, FrameEmbeddings, FrameFaces, IdentityEvent,
                            SchemaError, dead_letter)

JPEG = b"\xff\xd8\xff\xe0fakejpegbody"


def test_frame_round_trip():
    f = Frame("cam-1", 7, 1700000000.25, 640, 360, JPEG)
    assert Frame.decode(f.encode()) == f


def test_frame_decode_rejects_each_kind_of_damage():
    good = msgpack.unpackb(Frame("cam", 0, 1.0, 2, 2, JPEG).encode())
    cases = {  # what the error must say -> the damaged bytes
        "not msgpack": b"\xc1\xc1",
        "expected a map": msgpack.packb([1, 2]),
        "unknown schema version 3": msgpack.packb({**good, "v": 3}),
        "missing field 'seq'": msgpack.packb({k: v for k, v in good.items() if k != "seq"}),
        "field 'seq' has type str": msgpack.packb({**good, "seq": "7"}),
        "payload is not a JPEG": msgpack.packb({**good, "jpeg": b"PNG..."}),
        "field 'capture_ts' is not finite": msgpack.packb({**good, "capture_ts": float("nan")}),
    }
    for expected, raw in cases.items():
        with pytest.raises(SchemaError) as e:
            Frame.decode(raw)
        assert expected in str(e.value), (expected, str(e.value))


SESSION = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def test_frames_v2_round_trip_with_the_session():
    f = Frame("cam-1", 7, 1700000000.25, 640, 360, JPEG, SESSION)
    raw = msgpack.unpackb(f.encode())
    assert (raw["v"], raw["session"]) == (2, SESSION) and Frame.VERSION == 2
    assert Frame.decode(f.encode()) == f
    assert Frame.decode(Frame("cam", 0, 1.0, 2, 2, JPEG).encode()).session == ""  # the default still encodes


def test_v1_messages_still_decode_with_no_session():
    frame_v1 = {"v": 1, "camera_id": "cam", "seq": 3, "capture_ts": 2.5, "width": 4, "height": 3, "jpeg": JPEG}
    assert Frame.decode(msgpack.packb(frame_v1)) == Frame("cam", 3, 2.5, 4, 3, JPEG, "")
    # a v1 map with a stray session field: v1 has none, so it is ignored rather than trusted
    assert Frame.decode(msgpack.packb({**frame_v1, "session": "x"})).session == ""
    face = DetectedFace((1.0, 2.0, 30.0, 40.0), 0.9, (1.0,) * 10, JPEG, 28.0, 1.0)
    faces_v1 = {"v": 1, "camera_id": "c", "seq": 0, "capture_ts": 1.0, "width": 2, "height": 2, "detect_ts": 1.5,
                "status": "ok", "faces": [face.to_map()]}
    assert FrameFaces.decode(msgpack.packb(faces_v1)) == FrameFaces("c", 0, 1.0, 2, 2, (face,), 1.5, "ok", "")
    vec = np.ones(4, "<f4")
    emb_v1 = {"v": 1, "camera_id": "c", "seq": 0, "capture_ts": 1.0, "width": 2, "height": 2, "model_version": "m",
              "faces": [{"bbox": [0, 0, 1, 1], "prob": 0.9, "embedding": vec.tobytes()}]}
    back = FrameEmbeddings.decode(msgpack.packb(emb_v1))
    assert back.session == "" and back.seq == 0 and back.faces[0].embedding.tolist() == vec.tolist()


def test_faces_and_embeddings_carry_the_session_through():
    face = DetectedFace((1.0, 2.0, 30.0, 40.0), 0.99, tuple(float(i) for i in range(10)), JPEG, 28.0, 150.5)
    ff = FrameFaces("cam", 3, 10.5, 640, 360, (face,), 11.0, "ok", SESSION)
    assert FrameFaces.decode(ff.encode()) == ff and msgpack.unpackb(ff.encode())["v"] == 2 == FrameFaces.VERSION
    # existing positional and keyword constructors keep working: session is the last field, "" by default
    assert FrameFaces("cam", 3, 10.5, 640, 360, (), detect_ts=1.0, status="stale").session == ""
    vec = np.random.default_rng(1).standard_normal(8).astype(np.float32)
    fe = FrameEmbeddings("cam", 1, 2.0, 10, 10, "m-1", (EmbeddedFace((0.0, 0.0, 5.0, 5.0), 0.9, vec),), SESSION)
    back = FrameEmbeddings.decode(fe.encode())
    assert (back.session, back.seq, msgpack.unpackb(fe.encode())["v"], FrameEmbeddings.VERSION) == (SESSION, 1, 2, 2)
    assert FrameEmbeddings("cam", 1, 2.0, 10, 10, "m-1", ()).session == ""


@pytest.mark.parametrize("session, expected", [
    (None, "missing field 'session'"),
    (7, "field 'session' has type int"),
    (b"01ARZ", "field 'session' has type bytes"),
    ("x" * 65, "at most 64 characters"),
    ("a\nb", "printable"),
    ("a\x00b", "printable"),
    ("\u200bzero-width", "printable"),
])
def test_a_bad_session_is_refused_by_every_v2_decoder(session, expected):
    face = DetectedFace((1.0, 2.0, 30.0, 40.0), 0.9, (1.0,) * 10, JPEG, 28.0, 1.0)
    for cls, msg in ((Frame, Frame("c", 0, 1.0, 2, 2, JPEG, "s")),
                     (FrameFaces, FrameFaces("c", 0, 1.0, 2, 2, (face,), session="s")),
                     (FrameEmbeddings, FrameEmbeddings("c", 0, 1.0, 2, 2, "m", (), "s"))):
        o = msgpack.unpackb(msg.encode())
        if session is None:
            del o["session"]
        else:
            o["session"] = session
        with pytest.raises(SchemaError, match=expected):
            cls.decode(msgpack.packb(o))
    assert Frame.decode(Frame("c", 0, 1.0, 2, 2, JPEG, "x" * 64).encode()).session == "x" * 64  # the limit holds


def test_bool_is_not_an_int():
    good = msgpack.unpackb(Frame("cam", 0, 1.0, 2, 2, JPEG).encode())
    with pytest.raises(SchemaError, match="seq"):
        Frame.decode(msgpack.packb({**good, "seq": True}))


def test_faces_round_trip_keeps_every_field():
    face = DetectedFace((1.0, 2.0, 30.0, 40.0), 0.99, tuple(float(i) for i in range(10)), JPEG, 28.0, 150.5)
    ff = FrameFaces("cam", 3, 10.5, 640, 360, (face, face), detect_ts=11.0)
    back = FrameFaces.decode(ff.encode())
    assert back == ff and back.faces[1].landmarks == face.landmarks


def test_faces_rejects_wrong_landmark_count():
    face = DetectedFace((1.0, 2.0, 30.0, 40.0), 0.9, (1.0,) * 10, JPEG, 28.0, 1.0).to_map()
    face["landmarks"] = [1.0] * 9
    raw = msgpack.packb({"v": 1, "camera_id": "c", "seq": 0, "capture_ts": 1.0, "width": 2, "height": 2,
                         "detect_ts": 1.0, "status": "ok", "faces": [face]})
    with pytest.raises(SchemaError, match="landmarks"):
        FrameFaces.decode(raw)


def test_embeddings_round_trip_as_float32():
    vec = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    fe = FrameEmbeddings("cam", 1, 2.0, 10, 10, "m-1", (EmbeddedFace((0.0, 0.0, 5.0, 5.0), 0.9, vec),))
    back = FrameEmbeddings.decode(fe.encode())
    assert back.model_version == "m-1" and back.faces[0].embedding.dtype == np.float32
    np.testing.assert_array_equal(back.faces[0].embedding, vec)


def test_embeddings_rejects_truncated_vector_and_nan():
    base = {"v": 1, "camera_id": "c", "seq": 0, "capture_ts": 1.0, "width": 2, "height": 2, "model_version": "m"}
    bad_len = {**base, "faces": [{"bbox": [0, 0, 1, 1], "prob": 0.9, "embedding": b"\x00" * 7}]}
    nan = {**base, "faces": [{"bbox": [0, 0, 1, 1], "prob": 0.9,
                              "embedding": np.array([np.nan, 1], "<f4").tobytes()}]}
    with pytest.raises(SchemaError, match="float32"):
        FrameEmbeddings.decode(msgpack.packb(bad_len))
    with pytest.raises(SchemaError, match="NaN"):
        FrameEmbeddings.decode(msgpack.packb(nan))


def test_identity_event_is_plain_json_and_matches_documented_schema():
    ev = IdentityEvent("e1", "cam", "cam-t1", "Joe_Biden", 0.81, 0.6, 10.0, 12.5, (1, 2, 3, 4), "m-1", 9, 13.0)
    obj = json.loads(ev.encode())
    assert obj["identity"] == "Joe_Biden" and obj["schema"] == "identity-event/v1"
    assert IdentityEvent.decode(ev.encode()) == ev
    from pathlib import Path

    doc = json.loads((Path(__file__).parents[2] / "shared" / "identity-event.v1.schema.json").read_text())
    assert set(doc["required"]) <= set(obj), "every required field of the documented schema is in the event"
    assert set(obj) <= set(doc["properties"]), "the event has no field the documented schema does not describe"
    unknown = IdentityEvent("e2", "cam", "t", None, 0.3, 0.6, 1.0, 2.0, (0, 0, 1, 1), "m")
    assert json.loads(unknown.encode())["identity"] is None


def test_dead_letter_keeps_original_bytes_and_origin():
    import base64

    raw = dead_letter("schema: broken", "detector", "frames", 3, 42, b"cam", b"\x00\x01", 5.0)
    d = json.loads(raw)
    assert (d["reason"], d["topic"], d["partition"], d["offset"]) == ("schema: broken", "frames", 3, 42)
    assert base64.b64decode(d["value_b64"]) == b"\x00\x01"


def test_a_dead_letter_of_a_huge_payload_fits_the_broker_and_names_the_original():
    import base64
    import hashlib

    garbage = bytes(range(256)) * 3907  # ~1,000,000 bytes: base64 + JSON would be 1.33 MB
    raw = dead_letter("schema: frames: not msgpack", "detector", "frames", 0, 7, b"cam", garbage, 1.0)
    assert len(raw) <= 1_000_000
    d = json.loads(raw)
    assert d["value_truncated"] is True and d["value_bytes"] == len(garbage)
    assert d["value_sha256"] == hashlib.sha256(garbage).hexdigest()
    kept = base64.b64decode(d["value_b64"])
    assert 0 < len(kept) < len(garbage) and garbage.startswith(kept)
    small = json.loads(dead_letter("x", "s", "t", 0, 0, None, b"abc", 1.0, max_bytes=10_000))
    assert small["value_truncated"] is False and base64.b64decode(small["value_b64"]) == b"abc"


@pytest.mark.parametrize("limit", [10_000, 50_000, 1_000_000])
def test_a_dead_letter_never_exceeds_its_limit(limit):
    for n in (0, 1, limit // 2, limit, 3 * limit):
        assert len(dead_letter("r" * 5000, "s", "t", 1, 2, b"k" * 5000, b"\xff" * n, 1.0, max_bytes=limit)) <= limit
