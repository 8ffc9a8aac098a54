"""The matcher's work: search the gallery for every face, track, vote, and publish identity events.

No Kafka and no Redis here: the gallery arrives as a `GalleryIndex` from a callable (the service
rebuilds it when Redis says the gallery changed), and the outputs are `Output`s for the shared loop.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Callable

import numpy as np

from services.matcher.index import GalleryIndex
from services.matcher.tracks import CameraTracks, Decision, FaceObs, Track, TrackPolicy
from shared import metrics
from shared.stage import InvalidMessage, Output, Result
from shared.schemas import FrameEmbeddings, IdentityEvent


MAX_CLOCK_AHEAD_S = 60.0  # cameras' clocks drift; a frame further ahead than this is refused


class Matcher:
    def __init__(self, index: Callable[[], GalleryIndex], threshold: float, model_version: str, events_topic: str,
                 policy: TrackPolicy = TrackPolicy(), clock: Callable[[], float] = time.time,
                 embedding_dim: int | None = None):
        self.index, self.threshold, self.model_version = index, threshold, model_version
        self.embedding_dim = embedding_dim  # the model's; None: the gallery's, once it has one
        self.events_topic, self.policy, self.clock = events_topic, policy, clock
        self.cameras: dict[str, CameraTracks] = {}
        self._e2e: dict[str, object] = {}  # per-camera histogram children: a labels() lookup per face costs 17%
        # track ids unique across matcher restarts and replicas
        self._prefix = f"{os.getpid():x}{uuid.uuid4().hex[:6]}"

    def _tracks(self, camera_id: str) -> CameraTracks:
        if camera_id not in self.cameras:
            self.cameras[camera_id] = CameraTracks(camera_id, self.policy, f"{camera_id}-{self._prefix}")
        return self.cameras[camera_id]

    def validate(self, f: FrameEmbeddings) -> InvalidMessage | None:
        """Why a frame can never be matched, or None. Checked for every frame before any track changes."""
        if f.model_version != self.model_version:
            return InvalidMessage(f"embeddings from model {f.model_version!r}, the matcher and its gallery use "
                                  f"{self.model_version!r}: vectors of different models cannot be compared")
        if f.capture_ts > self.clock() + MAX_CLOCK_AHEAD_S:
            return InvalidMessage(f"captured {f.capture_ts - self.clock():.0f} s in the future: a track would never "
                                  "end (a camera's clock is wrong, or the frame is forged)")
        want = self.embedding_dim
        if want is None:
            index = self.index()
            want = index.matrix.shape[1] if index.size else None
        for face in f.faces:
            dim = len(face.embedding)
            if want is not None and dim != want:
                return InvalidMessage(f"a {dim}-d embedding where model {self.model_version!r} makes {want}-d ones")
            norm = float(np.linalg.norm(face.embedding))
            if not 0.99 <= norm <= 1.01:
                return InvalidMessage(f"an embedding of length {norm:.4g}: the embedder makes unit vectors")
        if len({len(face.embedding) for face in f.faces}) > 1:
            return InvalidMessage("embeddings of different dimensions in one frame")
        return None

    def process(self, frames: list[FrameEmbeddings]) -> list[Result]:
        """One list of events per input frame (usually empty: a track publishes once), or the reason an
        invalid frame is refused; valid frames update the tracks as if it had not been there."""
        verdicts = [self.validate(f) for f in frames]
        good = [f for f, v in zip(frames, verdicts) if v is None]
        events = iter(self._match(good))
        return [v if v is not None else next(events) for v in verdicts]

    def _match(self, frames: list[FrameEmbeddings]) -> list[list[Output]]:
        index = self.index()
        queries = [face.embedding for f in frames for face in f.faces]
        names, scores = index.search(np.stack(queries)) if queries else ([], np.zeros(0))
        now = self.clock()
        out, i = [], 0
        for f in frames:
            obs = []
            for face in f.faces:
                name = names[i] if scores[i] >= self.threshold else None
                obs.append(FaceObs(face.bbox, face.embedding, name, float(scores[i])))
                i += 1
                if f.camera_id not in self._e2e:
                    self._e2e[f.camera_id] = metrics.END_TO_END_SECONDS.labels(f.camera_id)
                self._e2e[f.camera_id].observe(max(0.0, now - f.capture_ts))
            decided = self._tracks(f.camera_id).update(f.capture_ts, obs)
            out.append([self._event(f.camera_id, t, d, now) for t, d in decided])
        metrics.ACTIVE_TRACKS.set(sum(len(c.live) for c in self.cameras.values()))
        return out

    def idle(self) -> list[Output]:
        """Called when no input arrives: end the tracks of cameras that went quiet (a file ended, a camera
        dropped), deciding those that have enough faces."""
        now = self.clock()
        out = []
        for cam_id, cam in list(self.cameras.items()):
            for t, d in cam.expire(now - self.policy.max_gap_s - 1.0):
                out.append(self._event(cam_id, t, d, now))
            if not cam.live:  # a quiet camera's state goes (ids are input: they must not pile up in memory)
                del self.cameras[cam_id]
                self._e2e.pop(cam_id, None)
        metrics.ACTIVE_TRACKS.set(sum(len(c.live) for c in self.cameras.values()))
        return out

    def _event(self, camera_id: str, t: Track, d: Decision, now: float) -> Output:
        ev = IdentityEvent(uuid.uuid4().hex, camera_id, t.track_id, d.identity, round(d.score, 4),
                           self.threshold, t.first_seen, t.last_seen, tuple(float(v) for v in t.bbox),
                           self.model_version, faces=len(t.votes), event_ts=now)
        metrics.IDENTITY_EVENTS.labels(camera_id, "true" if d.identity else "false").inc()
        metrics.EVENT_LATENCY_SECONDS.observe(max(0.0, now - t.last_seen))
        return Output(self.events_topic, camera_id.encode(), ev.encode())
