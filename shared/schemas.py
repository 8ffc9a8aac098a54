"""One versioned schema per topic; decoding validates and raises `SchemaError` alone.

frames, faces and embeddings travel as msgpack maps with binary payloads as bytes (JPEG for images,
little-endian float32 for vectors). identity-events travel as JSON because other programs subscribe to
them; their language-neutral schema is `shared/identity-event.v2.schema.json` (v1, still read, beside it).
Each map carries `v` (schema version); a decoder accepts the versions it knows and rejects the rest.

Versions. frames/v2, faces/v2 and embeddings/v2 add `session` to their v1 fields: the id ingest chose when it
started the camera (a ULID, 26 characters; any printable string of at most 64 characters is valid, "" meaning
none). `seq` counts from 0 per (camera, session) without gaps, so `(camera_id, session, seq)` names one frame
for good, across ingest restarts, and faces and embeddings carry the session of their frame. Encoders write
v2; decoders read v1 too, as session "" (a v1 producer restarted counts seq from 0 again under the same key).
embeddings/v3 adds each face's quality as the detector measured it (`face_size`, `sharpness`), so that the
matcher weighs its vote; v1 and v2 read as quality unknown (None), which weighs like a clear face.
faces/v3 adds `more_crops` to a face: its crops for the further templates of a fused model's towers (one
JPEG each, in the model's tower order, `crop` being the first tower's); v1 and v2 read as none.
identity-event/v2 announces a person once per visit (`kind`, `visit_id`) and ends the visit (`visit-ended`);
v1 events read as kind identified/unknown with their event id as visit id.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack
import numpy as np


class SchemaError(ValueError):
    """A message that cannot be decoded into its topic's schema (goes to the dead-letter topic)."""


# --- helpers -------------------------------------------------------------------------------------
def _unpack(raw: bytes, kind: str, versions: tuple[int, ...]) -> dict:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise SchemaError(f"{kind}: expected bytes, got {type(raw).__name__}")
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise SchemaError(f"{kind}: not msgpack ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise SchemaError(f"{kind}: expected a map, got {type(obj).__name__}")
    if obj.get("v") not in versions:
        raise SchemaError(f"{kind}: unknown schema version {obj.get('v')!r} (known: {versions})")
    return obj


def _get(obj: dict, key: str, typ: type | tuple[type, ...], kind: str) -> Any:
    if key not in obj:
        raise SchemaError(f"{kind}: missing field {key!r}")
    val = obj[key]
    if typ is float and isinstance(val, int) and not isinstance(val, bool):
        try:
            val = float(val)
        except OverflowError:
            raise SchemaError(f"{kind}: field {key!r} is out of range") from None
    if not isinstance(val, typ) or isinstance(val, bool) and typ is not bool:
        raise SchemaError(f"{kind}: field {key!r} has type {type(val).__name__}")
    if isinstance(val, float) and not math.isfinite(val):
        raise SchemaError(f"{kind}: field {key!r} is not finite")
    return val


MAX_CAMERA_ID_CHARS = 128  # camera ids become metric labels and keys of per-camera state: bounded, printable


def _camera(obj: dict, kind: str) -> str:
    cam = _get(obj, "camera_id", str, kind)
    if not cam or len(cam) > MAX_CAMERA_ID_CHARS or not cam.isprintable():
        raise SchemaError(f"{kind}: camera_id must be 1 to {MAX_CAMERA_ID_CHARS} printable characters")
    return cam


def _floats(obj: dict, key: str, n: int, kind: str) -> tuple[float, ...]:
    val = _get(obj, key, (list, tuple), kind)
    if len(val) != n or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in val):
        raise SchemaError(f"{kind}: field {key!r} must be {n} finite numbers")
    return tuple(float(x) for x in val)


MAX_SESSION_CHARS = 64


def _session(obj: dict, kind: str) -> str:
    """The `session` of a v2 map ("" for v1): a printable string of at most MAX_SESSION_CHARS characters."""
    if obj["v"] == 1:
        return ""
    val = _get(obj, "session", str, kind)
    if len(val) > MAX_SESSION_CHARS or not val.isprintable():
        raise SchemaError(f"{kind}: field 'session' must be printable and at most {MAX_SESSION_CHARS} characters")
    return val


# --- frames/v2 (reads v1) --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Frame:
    """One camera frame as ingest captured it; (camera_id, session, seq) names it."""
    camera_id: str
    seq: int  # per (camera, session), from 0, no gaps: lets every frame be accounted for downstream
    capture_ts: float  # wall-clock seconds since the epoch when the frame was read
    width: int
    height: int
    jpeg: bytes
    session: str = ""  # chosen when ingest started the camera; "" from a frames/v1 producer
    VERSION = 2

    def encode(self) -> bytes:
        return msgpack.packb({"v": 2, "camera_id": self.camera_id, "session": self.session, "seq": self.seq,
                              "capture_ts": self.capture_ts, "width": self.width, "height": self.height,
                              "jpeg": self.jpeg})

    @classmethod
    def decode(cls, raw: bytes) -> "Frame":
        o = _unpack(raw, "frames", (1, 2))
        f = cls(_camera(o, "frames"), _get(o, "seq", int, "frames"),
                _get(o, "capture_ts", float, "frames"), _get(o, "width", int, "frames"),
                _get(o, "height", int, "frames"), _get(o, "jpeg", bytes, "frames"), _session(o, "frames"))
        if not f.camera_id or f.seq < 0 or f.width <= 0 or f.height <= 0 or not f.jpeg.startswith(b"\xff\xd8"):
            raise SchemaError("frames: empty camera_id, negative seq, bad size, or payload is not a JPEG")
        return f


# --- faces/v3 (reads v1, v2) -----------------------------------------------------------------------
MAX_MORE_CROPS = 4  # a model of five towers is far off; a longer list is forged


@dataclass(frozen=True, slots=True)
class DetectedFace:
    """One face the detector kept: where it is, how sure, and its aligned crop(s)."""
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    prob: float
    landmarks: tuple[float, ...]  # 10 numbers: (x, y) of left eye, right eye, nose, mouth left, mouth right
    crop_jpeg: bytes  # aligned crop at the embedder's input size
    face_size: float  # shorter side of the box, pixels
    blur: float  # variance of the Laplacian of the crop; low means blurry
    more_crops: tuple[bytes, ...] = ()  # the further towers' crops of a fused model (faces/v3), in tower order

    def to_map(self) -> dict:
        return {"bbox": list(self.bbox), "prob": self.prob, "landmarks": list(self.landmarks),
                "crop": self.crop_jpeg, "face_size": self.face_size, "blur": self.blur,
                "more_crops": list(self.more_crops)}

    @classmethod
    def from_map(cls, o: Any, kind: str) -> "DetectedFace":
        if not isinstance(o, dict):
            raise SchemaError(f"{kind}: a face must be a map")
        more = o.get("more_crops", [])
        if (not isinstance(more, list) or len(more) > MAX_MORE_CROPS
                or not all(isinstance(c, (bytes, bytearray)) for c in more)):
            raise SchemaError(f"{kind}: more_crops must be a list of at most {MAX_MORE_CROPS} byte strings")
        return cls(_floats(o, "bbox", 4, kind), _get(o, "prob", float, kind), _floats(o, "landmarks", 10, kind),
                   _get(o, "crop", bytes, kind), _get(o, "face_size", float, kind), _get(o, "blur", float, kind),
                   tuple(bytes(c) for c in more))


@dataclass(frozen=True, slots=True)
class FrameFaces:
    """Every face kept from one frame (possibly none: the frame is still accounted for)."""
    camera_id: str
    seq: int
    capture_ts: float
    width: int
    height: int
    faces: tuple[DetectedFace, ...]
    detect_ts: float = 0.0
    # "ok", or "stale": the detector dropped the frame unread because it was older than its max age.
    # Stale frames are still published (without faces) so that every frame is accounted for downstream;
    # so are "skipped" and "unchanged" frames (motion gating: it hardly differs from the last detected one).
    status: str = "ok"
    session: str = ""  # the frame's session, passed through
    VERSION = 3
    STATUSES = ("ok", "stale", "skipped", "unchanged")  # skipped: a newer frame of the camera was detected instead

    def encode(self) -> bytes:
        return msgpack.packb({"v": 3, "camera_id": self.camera_id, "session": self.session, "seq": self.seq,
                              "capture_ts": self.capture_ts, "width": self.width, "height": self.height,
                              "detect_ts": self.detect_ts, "status": self.status,
                              "faces": [f.to_map() for f in self.faces]})

    @classmethod
    def decode(cls, raw: bytes) -> "FrameFaces":
        k = "faces"
        o = _unpack(raw, k, (1, 2, 3))
        faces = tuple(DetectedFace.from_map(f, k) for f in _get(o, "faces", list, k))
        status = _get(o, "status", str, k)
        if status not in cls.STATUSES:
            raise SchemaError(f"{k}: unknown status {status!r}")
        return cls(_camera(o, k), _get(o, "seq", int, k), _get(o, "capture_ts", float, k),
                   _get(o, "width", int, k), _get(o, "height", int, k), faces, _get(o, "detect_ts", float, k),
                   status, _session(o, k))


# --- embeddings/v3 (reads v1, v2) -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EmbeddedFace:
    bbox: tuple[float, float, float, float]
    prob: float
    embedding: np.ndarray  # float32, L2-normalized, shape (dim,)
    # The detector's quality measures of the face (faces schema: face_size, blur), carried for the matcher's
    # weighted votes. None: not measured (an embeddings/v1 or v2 producer), which weighs as a clear face.
    face_size: float | None = None  # shorter side of the box, pixels
    sharpness: float | None = None  # variance of the Laplacian of the aligned crop (DetectedFace.blur)


def _quality(f: dict, key: str, kind: str) -> float | None:
    """A v3 face's quality field: a finite number >= 0, or nil for "not measured"."""
    if key not in f:
        raise SchemaError(f"{kind}: missing field {key!r}")
    if f[key] is None:
        return None
    val = _get(f, key, float, kind)
    if val < 0:
        raise SchemaError(f"{kind}: field {key!r} is negative")
    return val


@dataclass(frozen=True, slots=True)
class FrameEmbeddings:
    camera_id: str
    seq: int
    capture_ts: float
    width: int
    height: int
    model_version: str
    faces: tuple[EmbeddedFace, ...]
    session: str = ""  # the frame's session, passed through
    VERSION = 3

    def encode(self) -> bytes:
        faces = [{"bbox": list(f.bbox), "prob": f.prob, "face_size": f.face_size, "sharpness": f.sharpness,
                  "embedding": np.asarray(f.embedding, dtype="<f4").tobytes()} for f in self.faces]
        return msgpack.packb({"v": 3, "camera_id": self.camera_id, "session": self.session, "seq": self.seq,
                              "capture_ts": self.capture_ts, "width": self.width, "height": self.height,
                              "model_version": self.model_version, "faces": faces})

    @classmethod
    def decode(cls, raw: bytes) -> "FrameEmbeddings":
        k = "embeddings"
        o = _unpack(raw, k, (1, 2, 3))
        faces = []
        for f in _get(o, "faces", list, k):
            if not isinstance(f, dict):
                raise SchemaError(f"{k}: a face must be a map")
            blob = _get(f, "embedding", bytes, k)
            if len(blob) == 0 or len(blob) % 4:
                raise SchemaError(f"{k}: embedding of {len(blob)} bytes is not a float32 vector")
            vec = np.frombuffer(blob, dtype="<f4")
            if not np.all(np.isfinite(vec)):
                raise SchemaError(f"{k}: embedding holds NaN or infinity")
            size, sharp = (_quality(f, "face_size", k), _quality(f, "sharpness", k)) if o["v"] >= 3 else (None, None)
            faces.append(EmbeddedFace(_floats(f, "bbox", 4, k), _get(f, "prob", float, k), vec, size, sharp))
        return cls(_camera(o, k), _get(o, "seq", int, k), _get(o, "capture_ts", float, k),
                   _get(o, "width", int, k), _get(o, "height", int, k), _get(o, "model_version", str, k),
                   tuple(faces), _session(o, k))


# --- identity-events/v2 (JSON; reads v1) ----------------------------------------------------------
EVENT_KINDS = ("identified", "unknown", "visit-ended")
MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class IdentityEvent:
    """What the matcher publishes, documented in shared/identity-event.v2.schema.json: a person's visit to a
    camera announced once (kind "identified"; "unknown" for a track of nobody enrolled, one per track) and
    ended once (kind "visit-ended", with the same visit_id). For an announcement, first_seen, last_seen and
    faces describe the deciding track; for visit-ended, the whole visit."""
    event_id: str
    camera_id: str
    track_id: str  # the track that announced the visit
    identity: str | None
    score: float  # cosine similarity of the track's vote winner (weighted mean), in [-1, 1]
    threshold: float
    first_seen: float  # capture time of the track's (visit-ended: the visit's) first face, epoch seconds
    last_seen: float
    bbox: tuple[float, float, float, float]  # last box, frame pixels
    model_version: str
    faces: int = 0  # faces the decision rests on; visit-ended: faces seen in the visit
    event_ts: float = 0.0  # when the matcher published it
    kind: str = ""  # one of EVENT_KINDS; "" means identified or unknown, from `identity`
    visit_id: str = ""  # "" means event_id
    duration_s: float | None = None  # visit-ended only: last_seen - first_seen of the visit
    schema: str = field(default="identity-event/v2")  # the version it was read as; encode writes v2

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", "identified" if self.identity is not None else "unknown")
        if not self.visit_id:  # an event of its own visit, as every v1 event was
            object.__setattr__(self, "visit_id", self.event_id)
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"identity event kind {self.kind!r} is not one of {EVENT_KINDS}")

    def encode(self) -> bytes:
        d = asdict(self)
        d["schema"] = "identity-event/v2"
        d["bbox"] = [round(x, 1) for x in self.bbox]
        if not math.isfinite(d["score"]):  # an empty gallery scores -inf: JSON has no infinity
            d["score"] = -1.0
        return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "IdentityEvent":
        k = "identity-events"
        try:
            o = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise SchemaError(f"{k}: not JSON ({type(e).__name__})") from None
        if not isinstance(o, dict) or o.get("schema") not in ("identity-event/v1", "identity-event/v2"):
            raise SchemaError(f"{k}: not an identity-event/v1 or v2 object")
        ident = o.get("identity")
        if ident is not None and not isinstance(ident, str):
            raise SchemaError(f"{k}: identity must be a string or null")
        event_id = _get(o, "event_id", str, k)
        if o["schema"] == "identity-event/v1":
            kind, visit_id, duration = ("identified" if ident is not None else "unknown"), event_id, None
        else:
            kind, visit_id = _get(o, "kind", str, k), _get(o, "visit_id", str, k)
            if kind not in EVENT_KINDS:
                raise SchemaError(f"{k}: unknown kind {kind!r} (known: {EVENT_KINDS})")
            if not visit_id or len(visit_id) > MAX_ID_CHARS or not visit_id.isprintable():
                raise SchemaError(f"{k}: visit_id must be 1 to {MAX_ID_CHARS} printable characters")
            if (kind == "identified") != (ident is not None) and kind != "visit-ended":
                raise SchemaError(f"{k}: a {kind} event with identity {ident!r}")
            duration = None
            if kind == "visit-ended":
                duration = _get(o, "duration_s", float, k)
                if duration < 0:
                    raise SchemaError(f"{k}: negative duration_s")
        return cls(event_id, _camera(o, k), _get(o, "track_id", str, k), ident,
                   _get(o, "score", float, k), _get(o, "threshold", float, k), _get(o, "first_seen", float, k),
                   _get(o, "last_seen", float, k), _floats(o, "bbox", 4, k), _get(o, "model_version", str, k),
                   _get(o, "faces", int, k), _get(o, "event_ts", float, k), kind, visit_id, duration, o["schema"])


# --- dead-letter (JSON) ----------------------------------------------------------------------------
DEAD_LETTER_MAX_BYTES = 1_000_000  # under the broker's default message.max.bytes (1,048,588) and the producer's
MAX_REASON_CHARS = 2000


def dead_letter(reason: str, stage: str, topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, ts: float, max_bytes: int = DEAD_LETTER_MAX_BYTES) -> bytes:
    """A dead-letter record: why, where from, and the original bytes (base64), with their length and
    SHA-256. The record never exceeds `max_bytes`: a payload too large to fit is cut, `value_truncated`
    says so, and its length and hash still name the original (it can be found again at its offset)."""
    import base64
    import hashlib

    value = bytes(value or b"")
    rec = {"schema": "dead-letter/v1", "reason": reason[:MAX_REASON_CHARS], "stage": stage, "topic": topic,
           "partition": partition, "offset": offset,
           "key": key.decode("utf-8", "replace")[:1000] if key else None,
           "value_bytes": len(value), "value_sha256": hashlib.sha256(value).hexdigest(), "value_truncated": False,
           "value_b64": "", "ts": ts}
    room = max_bytes - len(json.dumps(rec).encode()) - 64  # the rest of the record, with a margin
    if room <= 0:  # a reason or key that escapes to many bytes (emoji are 12 in JSON): cut them, never raise
        rec["reason"], rec["key"] = rec["reason"][:200], (rec["key"] or "")[:64] or None
        room = max(0, max_bytes - len(json.dumps(rec).encode()) - 64)
    keep = len(value) if 4 * -(-len(value) // 3) <= room else (room // 4) * 3
    rec["value_truncated"] = keep < len(value)
    rec["value_b64"] = base64.b64encode(value[:keep]).decode()
    return json.dumps(rec).encode()
