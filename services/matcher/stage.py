"""The matcher's work: search the gallery for every face, track, vote, and publish identity events.

No Kafka and no Redis here: the gallery arrives as a `GalleryIndex` from a callable (the service
rebuilds it when Redis says the gallery changed), the visits' state through a `VisitStore` (Redis in the
service), and the outputs are `Output`s for the shared loop. A person is announced once per visit
(services/matcher/visits.py): `flush` writes the visits and must run only after the loop committed the
events (the Stage's `committed` hook; the Stage is transactional).

Time: tracks end by capture time. Visits end by their camera's clock: its latest capture time, run on at
the matcher's clock's pace since that frame arrived; so a backlog does not end visits early, a camera whose
clock is off ends its own visits right, and a camera gone quiet still ends them while other cameras keep
the matcher busy (the end check runs from `process` and `idle`, at most once a second).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import time
import uuid
from typing import Callable

import numpy as np

from services.matcher.index import GalleryIndex
from services.matcher.tracks import CameraTracks, FaceObs, TrackPolicy, quality_weight
from services.matcher.visit_records import MemoryVisitStore, VisitStore, event_id
from services.matcher.visits import Announcement, Visits
from shared import metrics
from shared.stage import InvalidMessage, Output, Result
from shared.schemas import FrameEmbeddings, IdentityEvent


MAX_CLOCK_AHEAD_S = 60.0  # cameras' clocks drift; a frame further ahead than this is refused
TICK_EVERY_S = 1.0  # the end check of quiet tracks and visits, from process() and idle()


class Matcher:
    """`visit_store`: where visits outlive the process (default: in memory, this process alone);
    `visit_gap_s`: how long a person must be away from a camera before they are announced again."""

    def __init__(self, index: Callable[[], GalleryIndex], threshold: float, model_version: str, events_topic: str,
                 policy: TrackPolicy = TrackPolicy(), clock: Callable[[], float] = time.time,
                 embedding_dim: int | None = None, visit_store: VisitStore | None = None, visit_gap_s: float = 60.0,
                 end_lease_s: float = 120.0):
        self.index, self.threshold, self.model_version = index, threshold, model_version
        self.embedding_dim = embedding_dim  # the model's; None: the gallery's, once it has one
        self.events_topic, self.policy, self.clock = events_topic, policy, clock
        self.cameras: dict[str, CameraTracks] = {}
        self.visits = Visits(visit_store if visit_store is not None else MemoryVisitStore(), visit_gap_s,
                             policy.max_gap_s, model_version, clock, end_lease_s=end_lease_s)
        self._seen: dict[str, tuple[float, float]] = {}  # camera -> (latest capture time, clock when it came)
        self._next_tick = -float("inf")
        self._e2e: dict[str, object] = {}  # per-camera histogram children: a labels() lookup per face costs 17%
        # track ids unique per process (and across restarts and replicas); the visit is what is stable
        self._prefix = f"{os.getpid():x}{uuid.uuid4().hex[:6]}"
        self._track_numbers = itertools.count()

    def set_threshold(self, threshold: float, min_continuity: float | None = None) -> None:
        """Apply another cosine threshold (a new calibration of the gallery) from the next batch on; with
        `min_continuity`, the tracks' continuity follows it. Called from the gallery-sync thread: each is
        one reference swap, and a batch reads the threshold once."""
        if min_continuity is not None and min_continuity != self.policy.min_continuity:
            self.policy = dataclasses.replace(self.policy, min_continuity=min_continuity)
            for cam in list(self.cameras.values()):
                cam.policy = self.policy
        self.threshold = float(threshold)

    def _tracks(self, camera_id: str) -> CameraTracks:
        if camera_id not in self.cameras:  # one numbering for all: a camera back after a pause repeats no id
            self.cameras[camera_id] = CameraTracks(camera_id, self.policy, f"{camera_id}-{self._prefix}",
                                                   self._track_numbers)
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
        """One list of events per input frame (usually empty: a visit is announced once), or the reason an
        invalid frame is refused; valid frames update the tracks as if it had not been there. The end
        check's events, when it is due, go with the batch's last valid frame."""
        verdicts = [self.validate(f) for f in frames]
        good = [f for f, v in zip(frames, verdicts) if v is None]
        results = self._match(good)
        if results:
            results[-1] += self._tick(self.clock())
        events = iter(results)
        return [v if v is not None else next(events) for v in verdicts]

    def flush(self) -> None:
        """Write the visits the committed events decided (the Stage's `committed` hook)."""
        self.visits.flush()

    def abort(self) -> None:
        """The batch's transaction aborted and it will be read again (the Stage's `aborted` hook): forget the
        tracks and visits in memory, which it changed. The visits that were committed are in the store."""
        self.cameras.clear()
        self.visits.forget()
        self._next_tick = -float("inf")

    def _match(self, frames: list[FrameEmbeddings]) -> list[list[Output]]:
        index, threshold = self.index(), self.threshold
        queries = [face.embedding for f in frames for face in f.faces]
        names, scores = index.search(np.stack(queries)) if queries else ([], np.zeros(0))
        now = self.clock()
        out, i = [], 0
        for f in frames:
            obs = []
            for face in f.faces:
                name = names[i] if scores[i] >= threshold else None
                obs.append(FaceObs(face.bbox, face.embedding, name, float(scores[i]),
                                   quality_weight(face.face_size, face.sharpness)))
                i += 1
                if f.camera_id not in self._e2e:
                    self._e2e[f.camera_id] = metrics.END_TO_END_SECONDS.labels(f.camera_id)
                self._e2e[f.camera_id].observe(max(0.0, now - f.capture_ts))
            seen = self._seen.get(f.camera_id)
            if seen is None or f.capture_ts >= seen[0]:
                self._seen[f.camera_id] = (f.capture_ts, now)
            cam = self._tracks(f.camera_id)
            out.append(self._visit(f.camera_id, cam, cam.update(f.capture_ts, obs), now))
        metrics.ACTIVE_TRACKS.set(sum(len(c.live) for c in self.cameras.values()))
        return out

    def _visit(self, camera_id: str, cam: CameraTracks, decided: list, now: float) -> list[Output]:
        """What a camera's decided and ended tracks mean for its visits, as events."""
        out = []
        for t, d in decided:
            out += self._events(self.visits.decided(camera_id, t, d), now)
        for t in cam.live:
            if t.decided:
                self.visits.extend(camera_id, t)
        for t in cam.take_ended():
            out += self._events(self.visits.track_ended(camera_id, t), now)
        return out

    def camera_clock(self, camera_id: str) -> float | None:
        """The camera's clock (capture time) now, or None for a camera this process has not seen."""
        seen = self._seen.get(camera_id)
        return None if seen is None else seen[0] + max(0.0, self.clock() - seen[1])

    def idle(self) -> list[Output]:
        """Called when no input arrives: end the tracks of cameras that went quiet (a file ended, a camera
        dropped), deciding those that have enough faces, and the visits whose people left."""
        out = self._tick(self.clock())
        metrics.ACTIVE_TRACKS.set(sum(len(c.live) for c in self.cameras.values()))
        return out

    def _tick(self, now: float) -> list[Output]:
        if now < self._next_tick:
            return []
        self._next_tick = now + TICK_EVERY_S
        out = []
        for cam_id, cam in list(self.cameras.items()):
            cam_now = self.camera_clock(cam_id)
            decided = cam.expire((cam_now if cam_now is not None else now) - self.policy.max_gap_s - 1.0)
            out += self._visit(cam_id, cam, decided, now)
            quiet = cam_now is None or cam_now > self._seen[cam_id][0] + self.policy.max_gap_s + 1.0
            if not cam.live and quiet:  # a quiet camera's state goes (ids are input: they must not pile up)
                del self.cameras[cam_id]
                self._e2e.pop(cam_id, None)
        out += self._events(self.visits.tick(self.camera_clock, now), now)
        keep = self.visits.cameras() | set(self.cameras)
        for cam_id in [c for c in self._seen if c not in keep]:
            del self._seen[cam_id]
        return out

    def _events(self, announcements: list[Announcement], now: float) -> list[Output]:
        return [self._event(kind, v, now) for kind, v in announcements]

    def _event(self, kind: str, v, now: float) -> Output:
        """An announcement (identified, unknown: the visit as its deciding track made it) or a visit's end."""
        ended = kind == "visit-ended"
        ev = IdentityEvent(event_id(v.visit_id, kind) if ended else v.event_id, v.camera, v.track_id, v.identity,
                           v.score, self.threshold, v.first_seen, v.last_seen, tuple(float(x) for x in v.bbox),
                           v.model_version, faces=v.faces, event_ts=now, kind=kind, visit_id=v.visit_id,
                           duration_s=round(max(0.0, v.last_seen - v.first_seen), 3) if ended else None)
        if not ended:
            metrics.IDENTITY_EVENTS.labels(v.camera, "true" if v.identity else "false").inc()
            metrics.EVENT_LATENCY_SECONDS.observe(max(0.0, now - v.last_seen))
        return Output(self.events_topic, v.camera.encode(), ev.encode())
