"""`facestream matcher`: match embeddings against the Redis gallery and publish identity events."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from services.matcher.gallery_store import DEFAULT_PREFIX, ChangeWatcher, GalleryStore
from services.matcher.index import GalleryIndex
from services.matcher.tracks import TrackPolicy
from shared import metrics, topics
from shared.config import ConfigError, StageConfig, load, setting
from shared.stage import Stage
from shared.schemas import FrameEmbeddings
from shared.service import run_consumer_service

log = logging.getLogger("facestream")


@dataclass(frozen=True)
class MatcherConfig(StageConfig):
    """facestream matcher: gallery search, per-track votes, identity events."""
    model: str = setting("", "checkpoint whose model version and calibrated threshold apply "
                         "(default models/facestream.pt, or FACESTREAM_MODEL)")
    threshold: float | None = setting(None, "cosine threshold; default: the one `facestream eval` calibrated "
                                      "into the checkpoint", ge=-1.0, le=1.0)
    embeddings_topic: str = setting(topics.EMBEDDINGS.name, "input topic")
    events_topic: str = setting(topics.IDENTITY_EVENTS.name, "output topic")
    gallery_prefix: str = setting(DEFAULT_PREFIX, "Redis key prefix of the gallery")
    gallery_check_interval_s: float = setting(30.0, "also compare the gallery version this often, in case a "
                                              "change notification was missed", ge=1, le=3600)
    track_max_gap_s: float = setting(2.0, "a track unseen for this long (capture time) ends", ge=0.1, le=60)
    track_min_similarity: float | None = setting(None, "cosine between a face and a track's mean embedding for "
                                                 "the face to continue the track (default: threshold - 0.05)",
                                                 ge=-1.0, le=1.0)
    min_votes: int = setting(3, "votes for a name before a track is identified", ge=1, le=1000)
    vote_ratio: float = setting(0.6, "the winning name's share of the track's votes", ge=0.0, le=1.0)
    unknown_min_faces: int = setting(8, "unmatched faces before a track is confirmed unknown", ge=1, le=10_000)
    max_batch_size: int = setting(64, "frames (messages) per batch", ge=1, le=4096)


class LiveIndex:
    """The in-memory index, rebuilt from Redis when the gallery changes (notification) or, as a safety
    net, when a periodic version check finds it stale."""

    def __init__(self, store: GalleryStore, model_version: str, check_interval_s: float):
        self.store, self.model_version, self.check_interval_s = store, model_version, check_interval_s
        self.watcher = ChangeWatcher(store)
        self._lock = threading.Lock()
        self._index = self._build()
        self._checked = time.monotonic()

    def _build(self) -> GalleryIndex:
        version, people, skipped = self.store.load(self.model_version)
        if skipped:
            log.warning("matcher: ignoring %d people enrolled with another model (re-enroll them): %s",
                        len(skipped), ", ".join(skipped[:10]))
        index = GalleryIndex.build(people, version, self.model_version)
        metrics.GALLERY_IDENTITIES.set(len(index))
        metrics.GALLERY_EMBEDDINGS.set(index.size)
        metrics.GALLERY_RELOADS.inc()
        log.info("matcher: gallery v%d loaded: %d people, %d embeddings", version, len(index), index.size)
        return index

    def __call__(self) -> GalleryIndex:
        due = time.monotonic() - self._checked > self.check_interval_s
        if self.watcher.changed.is_set() or due:
            with self._lock:
                self.watcher.changed.clear()
                self._checked = time.monotonic()
                if self.store.version() != self._index.version:
                    self._index = self._build()
        return self._index


def build(cfg: MatcherConfig) -> Stage:
    from services.matcher.stage import Matcher
    from shared.vision import meta  # not torch: the matcher needs only the version and the threshold

    path = Path(cfg.model) if cfg.model else meta.default_path()
    if not path.exists():
        raise ConfigError(f"no checkpoint at {path} (run `make models`)")
    ckpt = meta.read_meta(path)
    threshold = cfg.threshold
    if threshold is None:
        if not ckpt.get("threshold"):
            raise ConfigError(f"the checkpoint of {ckpt['model_version']} has no calibrated threshold: run "
                              "`facestream eval --write-threshold` or pass --threshold")
        threshold = float(ckpt["threshold"]["cosine"])
    log.info("matcher: model %s, cosine threshold %.4f", ckpt["model_version"], threshold)
    index = LiveIndex(GalleryStore.from_url(cfg.redis_url, cfg.gallery_prefix), ckpt["model_version"],
                      cfg.gallery_check_interval_s)
    continuity = cfg.track_min_similarity if cfg.track_min_similarity is not None else threshold - 0.05
    policy = TrackPolicy(max_gap_s=cfg.track_max_gap_s, min_continuity=continuity, min_votes=cfg.min_votes,
                         vote_ratio=cfg.vote_ratio, unknown_min_faces=cfg.unknown_min_faces)
    m = Matcher(index, threshold, ckpt["model_version"], cfg.events_topic, policy)
    return Stage("matcher", cfg.embeddings_topic, FrameEmbeddings.decode, m.process, idle=m.idle)


def main(argv: list[str]) -> int:
    cfg = load(MatcherConfig, argv, prog="facestream matcher")
    return run_consumer_service("matcher", cfg, lambda: build(cfg))
