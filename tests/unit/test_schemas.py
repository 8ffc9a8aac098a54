import json
from pathlib import Path

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
    assert FrameFaces.decode(ff.encode()) == ff and msgpack.unpackb(ff.encode())["v"] == 3 == FrameFaces.VERSION
    # existing positional and keyword constructors keep working: session is the last field, "" by default
    assert FrameFaces("cam", 3, 10.5, 640, 360, (), detect_ts=1.0, status="stale").session == ""
    vec = np.random.default_rng(1).standard_normal(8).astype(np.float32)
    fe = FrameEmbeddings("cam", 1, 2.0, 10, 10, "m-1", (EmbeddedFace((0.0, 0.0, 5.0, 5.0), 0.9, vec),), SESSION)
    back = FrameEmbeddings.decode(fe.encode())
    assert (back.session, back.seq, msgpack.unpackb(fe.encode())["v"], FrameEmbeddings.VERSION) == (SESSION, 1, 3, 3)
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


SCHEMAS = Path(__file__).parents[2] / "shared"


def _validator(version: int):
    import jsonschema

    doc = json.loads((SCHEMAS / f"identity-event.v{version}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc, jsonschema.Draft202012Validator(doc)


def test_identity_event_is_plain_json_and_matches_documented_schema():
    ev = IdentityEvent("e1", "cam", "cam-t1", "Joe_Biden", 0.81, 0.6, 10.0, 12.5, (1, 2, 3, 4), "m-1", 9, 13.0,
                       visit_id="v1")
    obj = json.loads(ev.encode())
    assert obj["identity"] == "Joe_Biden" and obj["schema"] == "identity-event/v2" and obj["kind"] == "identified"
    assert IdentityEvent.decode(ev.encode()) == ev
    doc, validator = _validator(2)
    assert set(doc["required"]) <= set(obj), "every required field of the documented schema is in the event"
    assert set(obj) <= set(doc["properties"]), "the event has no field the documented schema does not describe"
    unknown = IdentityEvent("e2", "cam", "t", None, 0.3, 0.6, 1.0, 2.0, (0, 0, 1, 1), "m")
    ended = IdentityEvent("e3", "cam", "t", "Joe_Biden", 0.81, 0.6, 10.0, 83.0, (1, 2, 3, 4), "m-1", 412, 84.0,
                          kind="visit-ended", visit_id="v1", duration_s=73.0)
    assert (unknown.kind, unknown.visit_id, json.loads(unknown.encode())["identity"]) == ("unknown", "e2", None)
    for e in (ev, unknown, ended):
        validator.validate(json.loads(e.encode()))
        assert IdentityEvent.decode(e.encode()) == e
    assert IdentityEvent.decode(ended.encode()).duration_s == 73.0


def test_v1_identity_events_still_decode_as_their_own_visit():
    v1 = {"schema": "identity-event/v1", "event_id": "abc", "camera_id": "cam", "track_id": "t", "identity": "Ann",
          "score": 0.9, "threshold": 0.6, "first_seen": 1.0, "last_seen": 2.0, "bbox": [0, 0, 1, 1],
          "model_version": "m", "faces": 3, "event_ts": 2.5}
    _validator(1)[1].validate(v1)
    ev = IdentityEvent.decode(json.dumps(v1).encode())
    assert (ev.kind, ev.visit_id, ev.schema, ev.identity, ev.faces, ev.duration_s) == \
        ("identified", "abc", "identity-event/v1", "Ann", 3, None)
    assert IdentityEvent.decode(json.dumps({**v1, "identity": None}).encode()).kind == "unknown"
    again = json.loads(ev.encode())  # re-encoded: v2
    assert (again["schema"], again["kind"], again["visit_id"]) == ("identity-event/v2", "identified", "abc")


@pytest.mark.parametrize("change, expected", [
    ({"kind": "left"}, "unknown kind"),
    ({"kind": None}, "field 'kind' has type NoneType"),
    ({"visit_id": ""}, "visit_id must be"),
    ({"kind": "identified", "identity": None}, "identified event with identity None"),
    ({"kind": "unknown", "identity": "Ann"}, "unknown event with identity 'Ann'"),
    ({"kind": "visit-ended", "duration_s": None}, "field 'duration_s' has type NoneType"),
    ({"kind": "visit-ended", "duration_s": -1.0}, "negative duration_s"),
    ({"schema": "identity-event/v3"}, "not an identity-event/v1 or v2 object"),
])
def test_a_bad_v2_event_is_refused(change, expected):
    good = json.loads(IdentityEvent("e", "cam", "t", "Ann", 0.9, 0.6, 1.0, 2.0, (0, 0, 1, 1), "m").encode())
    with pytest.raises(SchemaError, match=expected):
        IdentityEvent.decode(json.dumps({**good, **change}).encode())
    with pytest.raises(ValueError, match="kind"):
        IdentityEvent("e", "cam", "t", "Ann", 0.9, 0.6, 1.0, 2.0, (0, 0, 1, 1), "m", kind="left")


def test_embeddings_v3_carry_each_faces_quality_and_read_older_versions_as_unmeasured():
    vec = np.eye(1, 8, dtype=np.float32)[0]
    faces = (EmbeddedFace((0.0, 0.0, 5.0, 5.0), 0.9, vec, 64.0, 212.5), EmbeddedFace((1.0, 1.0, 6.0, 6.0), 0.8, vec))
    fe = FrameEmbeddings("cam", 1, 2.0, 10, 10, "m-1", faces, SESSION)
    raw = msgpack.unpackb(fe.encode())
    assert raw["v"] == 3 and (raw["faces"][0]["face_size"], raw["faces"][0]["sharpness"]) == (64.0, 212.5)
    back = FrameEmbeddings.decode(fe.encode())
    assert [(f.face_size, f.sharpness) for f in back.faces] == [(64.0, 212.5), (None, None)]
    for v in (1, 2):  # an older producer: no quality fields (and a stray one is not trusted)
        old = {**raw, "v": v, "faces": [{k: x for k, x in f.items() if k not in ("face_size", "sharpness")}
                                        for f in raw["faces"]]}
        old["faces"][0]["face_size"] = 999.0
        got = FrameEmbeddings.decode(msgpack.packb(old))
        assert [(f.face_size, f.sharpness) for f in got.faces] == [(None, None)] * 2
    for bad, why in ((None, "missing field 'sharpness'"), ("x", "has type str"), (-1.0, "negative"),
                     (float("nan"), "not finite")):
        o = msgpack.unpackb(fe.encode())
        if bad is None:
            del o["faces"][0]["sharpness"]
        else:
            o["faces"][0]["sharpness"] = bad
        with pytest.raises(SchemaError, match=why):
            FrameEmbeddings.decode(msgpack.packb(o))


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
