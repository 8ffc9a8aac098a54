"""`facestream matcher`: match embeddings against the Redis gallery and publish identity events.

A person is announced once per visit to a camera (services/matcher/visits.py): the visits live in Redis under
`visit_prefix`, written only after the Kafka transaction holding the events committed (the Stage is
transactional; its `committed` hook flushes the visits). Without Redis they go on in memory.

Redis may come and go (services/matcher/live_index.py): the matcher identifies from its gallery in memory
while Redis is away, reports it in `facestream_dependency_up{dependency="redis"}`, and reconnects and reloads
when it returns. It stays ready meanwhile, since it still serves. A matcher started while Redis is away waits
for its first gallery before it joins the consumer group: /healthz 200 (the wait beats), /readyz 503.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from services.matcher.gallery_store import DEFAULT_PREFIX, GalleryStore
from services.matcher.live_index import Backoff, LiveIndex
from services.matcher.threshold import LiveThreshold
from services.matcher.tracks import TrackPolicy
from services.matcher.visit_store import DEFAULT_PREFIX as DEFAULT_VISIT_PREFIX
from services.matcher.visit_store import RedisVisitStore
from services.redis_access import client_for, mask_url
from shared import kafka_loop, metrics, topics
from shared.config import ConfigError, StageConfig, load, setting
from shared.schemas import FrameEmbeddings
from shared.service import run_consumer_service
from shared.stage import Stage

log = logging.getLogger("facestream")


@dataclass(frozen=True)
class MatcherConfig(StageConfig):
    """facestream matcher: gallery search, per-track votes, one identity event per visit."""
    model: str = setting("", "checkpoint whose model version and calibrated threshold apply "
                         "(default models/facestream.pt, or FACESTREAM_MODEL)")
    threshold: float | None = setting(None, "cosine threshold; default: the gallery's calibration for the model "
                                      "(`facestream calibrate`, re-read with every gallery change), else the one "
                                      "`facestream eval` calibrated into the checkpoint", ge=-1.0, le=1.0)
    embeddings_topic: str = setting(topics.EMBEDDINGS.name, "input topic")
    events_topic: str = setting(topics.IDENTITY_EVENTS.name, "output topic")
    gallery_prefix: str = setting(DEFAULT_PREFIX, "Redis key prefix of the gallery")
    gallery_check_interval_s: float = setting(30.0, "also compare the gallery version this often, in case a "
                                              "change notification was missed", ge=1, le=3600)
    redis_retry_max_s: float = setting(30.0, "longest wait between two attempts to reach Redis while it is away "
                                       "(exponential backoff with jitter from 0.5 s)", ge=1, le=600)
    track_max_gap_s: float = setting(2.0, "a track unseen for this long (capture time) ends", ge=0.1, le=60)
    track_min_similarity: float | None = setting(None, "cosine between a face and a track's mean embedding for "
                                                 "the face to continue the track (default: threshold - 0.05)",
                                                 ge=-1.0, le=1.0)
    min_votes: int = setting(3, "votes for a name before a track is identified", ge=1, le=1000)
    vote_ratio: float = setting(0.6, "the winning name's share of the track's votes", ge=0.0, le=1.0)
    unknown_min_faces: int = setting(8, "unmatched faces before a track is confirmed unknown", ge=1, le=10_000)
    max_batch_size: int = setting(64, "frames (messages) per batch", ge=1, le=4096)
    visit_gap_s: float = setting(60.0, "a person identified on a camera is announced again only after being away "
                                 "from it this long (capture time), across tracks, restarts and replicas",
                                 ge=1, le=86_400)
    visit_prefix: str = setting("", f"Redis key prefix of the visits (default: {DEFAULT_VISIT_PREFIX}; "
                                "<gallery prefix>:visits when --gallery-prefix is not the default, so that "
                                "each gallery keeps its own visits)")
    transactional_id: str = setting("", "Kafka transactional.id of the matcher's producer (default: "
                                    "facestream-matcher-<hostname>-<pid>); never two live matchers with one id; "
                                    "stable across a replica's restarts, its successor aborts its open "
                                    "transaction at once")
    transaction_timeout_ms: int = setting(60_000, "Kafka transaction timeout: a matcher that dies mid-transaction "
                                          "holds back read_committed consumers this long at most (unless its "
                                          "successor has its transactional id); longer than a broker failover "
                                          "and than the loop's own waits (45 s per step), so that a transaction "
                                          "held open by a failover is not aborted under the matcher",
                                          ge=50_000, le=900_000)

    @property
    def visit_key_prefix(self) -> str:
        if self.visit_prefix:
            return self.visit_prefix
        return DEFAULT_VISIT_PREFIX if self.gallery_prefix == DEFAULT_PREFIX else f"{self.gallery_prefix}:visits"



def wait_for_gallery(index: LiveIndex, health: metrics.Health, stop: kafka_loop.StopFlag) -> bool:
    """Block until the first gallery load, False if stopped first. A matcher with no gallery would call every
    face unknown, so it joins no group before; the wait beats the health, since waiting for Redis is not
    being wedged (liveness holds, readiness stays 503)."""
    while not index.loaded.wait(0.5):
        health.beat()
        if stop:
            return False
    return True


def build(cfg: MatcherConfig, health: metrics.Health, stop: kafka_loop.StopFlag) -> Stage | None:
    """The matcher stage, once its gallery is loaded; None when stopped while waiting for it."""
    from services.matcher.stage import Matcher
    from shared.vision import meta  # not torch: the matcher needs only the version and the threshold

    path = Path(cfg.model) if cfg.model else meta.default_path()
    if not path.exists():
        raise ConfigError(f"no checkpoint at {path} (run `make models`)")
    ckpt = meta.read_meta(path)
    model_version = ckpt["model_version"]
    # --threshold, else the gallery's calibration for this model (read with every gallery load), else the checkpoint's
    threshold = LiveThreshold(cfg.threshold, ckpt.get("threshold"), model_version)
    index = LiveIndex(GalleryStore.for_config(cfg, cfg.gallery_prefix), model_version,
                      cfg.gallery_check_interval_s, mask_url(cfg.redis_url),
                      Backoff(max_s=cfg.redis_retry_max_s), on_load=threshold.refresh).start()
    # still serving from memory while Redis is away: /readyz stays 200 and says so
    health.degraded["redis"] = lambda: None if index.up else "Redis unreachable, matching against the gallery in memory"
    if not wait_for_gallery(index, health, stop):
        index.close()
        return None
    if threshold.value is None:
        index.close()
        raise ConfigError(f"{threshold.source}: run `facestream calibrate`, `facestream eval --write-threshold`, "
                          "or pass --threshold")
    log.info("matcher: model %s, cosine threshold %.4f from %s", model_version, threshold.value, threshold.source)

    def continuity(t: float) -> float:
        return cfg.track_min_similarity if cfg.track_min_similarity is not None else t - 0.05

    policy = TrackPolicy(max_gap_s=cfg.track_max_gap_s, min_continuity=continuity(threshold.value),
                         min_votes=cfg.min_votes, vote_ratio=cfg.vote_ratio, unknown_min_faces=cfg.unknown_min_faces)
    # short timeouts: the visits are read and written from the loop; while Redis is away they run in memory
    visits = RedisVisitStore(client_for(cfg, timeout_s=1.0, retries=0), cfg.visit_key_prefix)
    m = Matcher(index, threshold.value, model_version, cfg.events_topic, policy,
                embedding_dim=int(ckpt["embedding_dim"]), visit_store=visits, visit_gap_s=cfg.visit_gap_s,
                # a visit's end, marked in Redis, is held off from others for longer than its transaction can live
                end_lease_s=max(120.0, 2 * cfg.transaction_timeout_ms / 1000))
    # one line for Redis: the gallery's when it is away (the visits are then away too), else the visits' own
    # (a refusal: the matcher's ACL user or --visit-prefix), so that /readyz names each fault once
    threshold.subscribe(lambda t: m.set_threshold(t, continuity(t)))  # a new calibration, without a restart
    health.degraded["redis"] = lambda: (None if index.up else "Redis unreachable, matching against the gallery "
                                        "in memory") or m.visits.degraded
    log.info("matcher: visits under %s:*, announced again after %.0f s away", cfg.visit_key_prefix, cfg.visit_gap_s)
    return Stage("matcher", cfg.embeddings_topic, FrameEmbeddings.decode, m.process, idle=m.idle,
                 transactional=True, committed=m.flush, aborted=m.abort)


def main(argv: list[str]) -> int:
    cfg = load(MatcherConfig, argv, prog="facestream matcher")
    return run_consumer_service("matcher", cfg, lambda health, stop: build(cfg, health, stop))
