"""Per-camera tracks and per-track decisions; pure logic, no I/O.

One frame says little: a face in profile or in motion blur may score under the threshold or, rarely,
above it for the wrong person. So faces are grouped into tracks (position and embedding continuity
between consecutive frames of one camera), every face votes (a name when its best score clears the
threshold, None otherwise), and a track reaches one decision: when enough votes agree on a name, or,
for an unknown person, when enough faces in a row matched nobody. Like frigate's weighted average,
the rule may also say "not yet" and, for a short track, "don't know", and a vote counts by its face's
quality (`quality_weight`), so that tiny or blurred faces cannot outvote a clear one. Whether a decision
is published is the visits' business (services/matcher/visits.py): once per visit, not per track.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Sequence

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


# A vote's weight from its face's quality. References from what the detector keeps and what real crops
# measure: faces of at least `min_face_size` (40 px) and sharpness `min_sharpness` (15) pass its gates;
# the shorter box side of faces kept from the sample clips has a median of 63 to 155 px, LFW's 93; the
# variance of the Laplacian of the aligned 150-px crop has a median of 13 to 15 on the blurred clips
# (hamilton, obama, crowd), 43 on LFW and 243 on the sharp one (biden). So a face of 80 px and sharpness
# 50 or more counts fully, one at both gates 0.5 * 0.3 = 0.15, and no face less than 0.1 * 0.1.
SIZE_REF_PX = 80.0
SHARPNESS_REF = 50.0
MIN_FACTOR = 0.1


def quality_weight(face_size: float | None, sharpness: float | None) -> float:
    """w = clip(face_size / SIZE_REF_PX, 0.1, 1) * clip(sharpness / SHARPNESS_REF, 0.1, 1), in [0.01, 1]; an
    unmeasured factor (None: embeddings from a v1/v2 producer) is 1, so equal faces vote as they always did."""
    def factor(x: float | None, ref: float) -> float:
        return 1.0 if x is None else min(1.0, max(MIN_FACTOR, x / ref))
    return factor(face_size, SIZE_REF_PX) * factor(sharpness, SHARPNESS_REF)


class Vote(NamedTuple):
    """One face's vote: the name its best match cleared the threshold for (None: nobody), that match's
    score, and the face's quality weight. A plain (name, score) pair is a vote of weight 1."""
    name: str | None
    score: float
    weight: float = 1.0


def decide(votes: Sequence[tuple], policy: TrackPolicy, final: bool = False) -> Decision | None:
    """A track's decision from its votes, or None for "not yet" (or, when `final`, "don't know").

    Identified: the name with the most weight has at least `min_votes` votes (a count of faces) and
    `vote_ratio` of the track's total weight, strictly more weight than any other name (a tie abstains,
    as frigate's weighted_average does); its score is the weighted mean of its votes' scores. Unknown: at
    least `unknown_min_faces` faces matched nobody and they hold `unknown_ratio` of the weight; its score is
    the best score seen. A track ending (`final`) with fewer unmatched faces than `unknown_min_faces` is
    confirmed unknown only if it has `min_votes` of them. With equal weights this is the rule by counts.
    """
    if not votes:
        return None
    vs = [Vote(*v) for v in votes]
    total = sum(v.weight for v in vs)
    if total <= 0:
        return None
    weight: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for v in vs:
        if v.name is not None:
            weight[v.name] += v.weight
            count[v.name] += 1
    if weight:
        ranked = sorted(weight.items(), key=lambda kv: kv[1], reverse=True)
        name, w = ranked[0]
        clear = len(ranked) == 1 or w > ranked[1][1]
        # a float tolerance: 3 equal weights out of 5 reach a vote_ratio of 0.6 whatever the rounding
        if clear and count[name] >= policy.min_votes and w / total >= policy.vote_ratio - 1e-9:
            mine = [v for v in vs if v.name == name]
            return Decision(name, float(sum(v.score * v.weight for v in mine) / w))
    unmatched = [v for v in vs if v.name is None]
    enough = policy.unknown_min_faces if not final else min(policy.unknown_min_faces, policy.min_votes)
    if len(unmatched) >= enough and sum(v.weight for v in unmatched) / total >= policy.unknown_ratio - 1e-9:
        return Decision(None, float(max(v.score for v in vs)))
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
    votes: list[Vote] = field(default_factory=list)
    decided: bool = False
    first_bbox: tuple[float, ...] = ()  # names an unknown track's visit (services/matcher/visits.py)

    def add(self, ts: float, bbox: tuple[float, ...], emb: np.ndarray, vote: Vote) -> None:
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
    weight: float = 1.0  # quality_weight of the face: how much its vote counts


class CameraTracks:
    """The live tracks of one camera; `update` returns the tracks that reached a decision on this frame.
    Tracks that end (in `update` or `expire`) are also kept in `ended` until the caller takes them
    (`take_ended`): the visits end an unknown person's visit with its track."""

    def __init__(self, camera_id: str, policy: TrackPolicy, id_prefix: str, numbers: Iterator[int] | None = None):
        self.camera_id, self.policy, self.prefix = camera_id, policy, id_prefix
        self.live: list[Track] = []
        self.ended: list[Track] = []
        self._numbers = numbers if numbers is not None else itertools.count()  # track ids: prefix-number

    def take_ended(self) -> list[Track]:
        ended, self.ended = self.ended, []
        return ended

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
            t.add(ts, f.bbox, f.embedding, Vote(f.name, f.score, f.weight))
            touched.append(t)
        for fi, f in enumerate(faces):
            if fi not in used_f:
                t = Track(f"{self.prefix}-{next(self._numbers)}", ts, ts, f.bbox, f.embedding.astype(np.float32), [],
                          first_bbox=tuple(float(x) for x in f.bbox))
                t.add(ts, f.bbox, f.embedding, Vote(f.name, f.score, f.weight))
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
        self.ended += ended
        out = []
        for t in ended:
            if not t.decided:
                d = decide(t.votes, self.policy, final=True)
                if d is not None:
                    t.decided = True
                    out.append((t, d))
        return out
