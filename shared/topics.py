"""The topics facestream uses, with the partition count of each.

Partitions are the unit of scaling: a consumer group never has more busy members than its input topic
has partitions, so each count is sized for the most replicas its consuming stage may get.
Frames, faces and embeddings are keyed by camera id, so one camera's messages stay in order and
the matcher sees every face of a camera in one process (its tracks live in that process's memory).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    retention_ms: int  # raw frames are worth little after seconds; events are kept for subscribers
    description: str


FRAMES = Topic("frames", 12, 10 * 60 * 1000, "JPEG frames from ingest (msgpack, schema frames/v2)")
FACES = Topic("faces", 12, 10 * 60 * 1000, "aligned face crops per frame (msgpack, schema faces/v3)")
EMBEDDINGS = Topic("embeddings", 12, 60 * 60 * 1000, "L2-normalized embeddings per frame (msgpack, embeddings/v3)")
IDENTITY_EVENTS = Topic("identity-events", 6, 7 * 24 * 3600 * 1000, "one event per visit, and its end (JSON, identity-event/v2)")
# Dead letters carry the original bytes (frames, crops: pixels), so they are kept one day by default, long
# enough to look into a burst; `make up` takes FACESTREAM_DEAD_LETTER_RETENTION_H, Kubernetes the KafkaTopic.
DEAD_LETTER = Topic("dead-letter", 3, 24 * 3600 * 1000, "messages no stage could use, with the reason (JSON)")

ALL = (FRAMES, FACES, EMBEDDINGS, IDENTITY_EVENTS, DEAD_LETTER)
BY_NAME = {t.name: t for t in ALL}
