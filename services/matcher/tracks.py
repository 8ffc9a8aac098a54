"""Per-camera tracks and per-track decisions; pure logic, no I/O.

One frame says little: a face in profile or in motion blur may score under the threshold or, rarely,
above it for the wrong person. So faces are grouped into tracks (position and embedding continuity
between consecutive frames of one camera), every face votes (a name when its best score clears the
threshold, None otherwise), and a track publishes one event: when enough votes agree on a name, or,
for an unknown person, when enough faces in a row matched nobody. Like frigate's weighted average,
the rule may also say "not yet" and, for a short track, "don't know".
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TrackPolicy:
    max_gap_s: float = 1.5  # a track not seen for this long (capture time) ends
    min_iou: float = 0.05  # box overlap with the track's last box (or near centres, below)
    max_center_shift: float = 1.5  # ...or centre moved at most this many face widths
    min_continuity: float = 0.3  # cosine between the face and the track's mean embedding (model-dependent:
    # the matcher sets it just under its threshold, since unrelated faces can score high under some models)
    min_votes: int = 3  # votes for a name before a track is identified
    vote_ratio: float = 0.6  # the winner's share of all the track's votes
    unknown_min_faces: int = 8  # faces without a match before a track is confirmed unknown
    unknown_ratio: float = 0.9  # share of the track's faces that matched nobody


@dataclass(frozen=True, slots=True)
class Decision:
    identity: str | None
    score: float


def decide(votes: list[tuple[str | None, float]], policy: TrackPolicy, final: bool = False) -> Decision | None:
    """A track's decision from its votes, or None for "not yet" (or, when `final`, "don't know").

    Identified: a name has at least `min_votes` votes and `vote_ratio` of all votes; its score is the mean
    of its votes' scores. Unknown: at least `unknown_min_faces` faces and `unknown_ratio` of them matched
    nobody; its score is the best score seen. A track ending (`final`) with a majority of unmatched faces
    but fewer than `unknown_min_faces` of them is confirmed unknown only if it has `min_votes` faces.
    """
    if not votes:
        return None
    named = Counter(name for name, _ in votes if name is not None)
    if named:
        name, count = named.most_common(1)[0]
        if count >= policy.min_votes and count / len(votes) >= policy.vote_ratio:
            return Decision(name, float(np.mean([s for n, s in votes if n == name])))
    unmatched = sum(1 for name, _ in votes if name is None)
    enough = policy.unknown_min_faces if not final else min(policy.unknown_min_faces, policy.min_votes)
    if unmatched >= enough and unmatched / len(votes) >= policy.unknown_ratio:
        return Decision(None, float(max(s for _, s in votes)))
    return None


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _near(a: tuple[float, ...], b: tuple[float, ...], widths: float) -> bool:
    w = max(a[2] - a[0], b[2] - b[0], 1.0)
    dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
    dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
    return (dx * dx + dy * dy) ** 0.5 <= widths * w


@dataclass
class Track:
    track_id: str
    first_seen: float
    last_seen: float
    bbox: tuple[float, ...]
    mean: np.ndarray  # running mean of the track's unit embeddings, re-normalized
    votes: list[tuple[str | None, float]] = field(default_factory=list)
    decided: bool = False

    def add(self, ts: float, bbox: tuple[float, ...], emb: np.ndarray, vote: tuple[str | None, float]) -> None:
        n = len(self.votes)
        m = self.mean * n + emb
        self.mean = m / max(float(np.linalg.norm(m)), 1e-12)
        self.last_seen, self.bbox = max(self.last_seen, ts), bbox
        self.votes.append(vote)


@dataclass(frozen=True, slots=True)
class FaceObs:
    """One face of one frame as the matcher sees it."""
    bbox: tuple[float, ...]
    embedding: np.ndarray
    name: str | None  # best gallery match when its score clears the threshold, else None
    score: float  # best gallery score


class CameraTracks:
    """The live tracks of one camera; `update` returns the tracks that reached a decision on this frame."""

    def __init__(self, camera_id: str, policy: TrackPolicy, id_prefix: str):
        self.camera_id, self.policy, self.prefix = camera_id, policy, id_prefix
        self.live: list[Track] = []
        self._next = 0

    def update(self, ts: float, faces: list[FaceObs]) -> list[tuple[Track, Decision]]:
        decided = self.expire(ts - self.policy.max_gap_s)
        pairs = []
        for fi, f in enumerate(faces):
            for ti, t in enumerate(self.live):
                cont = float(f.embedding @ t.mean)
                overlap = iou(f.bbox, t.bbox)
                if cont >= self.policy.min_continuity and (
                        overlap >= self.policy.min_iou or _near(f.bbox, t.bbox, self.policy.max_center_shift)):
                    pairs.append((cont + overlap, fi, ti))
        used_f, used_t = set(), set()
        touched = []
        for _, fi, ti in sorted(pairs, reverse=True):  # greedy: the most alike pair first
            if fi in used_f or ti in used_t:
                continue
            used_f.add(fi), used_t.add(ti)
            f, t = faces[fi], self.live[ti]
            t.add(ts, f.bbox, f.embedding, (f.name, f.score))
            touched.append(t)
        for fi, f in enumerate(faces):
            if fi not in used_f:
                t = Track(f"{self.prefix}-{self._next}", ts, ts, f.bbox, f.embedding.astype(np.float32), [])
                t.add(ts, f.bbox, f.embedding, (f.name, f.score))
                self._next += 1
                self.live.append(t)
                touched.append(t)
        for t in touched:
            if not t.decided:
                d = decide(t.votes, self.policy)
                if d is not None:
                    t.decided = True
                    decided.append((t, d))
        return decided

    def expire(self, older_than: float) -> list[tuple[Track, Decision]]:
        """End the tracks last seen before `older_than`; a final decision for those still undecided."""
        ended = [t for t in self.live if t.last_seen < older_than]
        self.live = [t for t in self.live if t.last_seen >= older_than]
        out = []
        for t in ended:
            if not t.decided:
                d = decide(t.votes, self.policy, final=True)
                if d is not None:
                    t.decided = True
                    out.append((t, d))
        return out
