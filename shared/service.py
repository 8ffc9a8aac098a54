"""Start-up and shut-down shared by every long-running service: logging, the metrics endpoint,
the consumer and producer, signal handling, then the shared loop."""
from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Callable, Protocol

from shared import kafka_loop, metrics
from shared.stage import Stage
from shared.config import StageConfig, describe
from shared.redact import Redactor, redact_logging

log = logging.getLogger("facestream")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)


def client_id(stage: str) -> str:
    return f"facestream-{stage}-{socket.gethostname()}-{os.getpid()}"


class MetricsSettings(Protocol):
    metrics_port: int
    metrics_host: str
    liveness_timeout_s: float


def start_metrics(stage: str, cfg: MetricsSettings) -> metrics.Health:
    health = metrics.Health(stage, cfg.liveness_timeout_s)
    server = metrics.serve(health, cfg.metrics_port, cfg.metrics_host)
    # one parseable line so that scripts (make demo, tests) find a port chosen by the OS
    log.info("%s: metrics at http://127.0.0.1:%d/metrics (health /healthz, /readyz)", stage, server.server_port)
    return health


def run_consumer_service(stage_name: str, cfg: StageConfig,
                         build: Callable[[metrics.Health, kafka_loop.StopFlag], Stage | None]) -> int:
    """Run a consuming stage until SIGTERM/SIGINT; return the process exit status.

    `build(health, stop)` loads models, connects to Redis: before joining the group, so that no partition
    waits on it. It may wait for a dependency for long (beating `health`, so liveness holds while /readyz
    says not ready) and return None when `stop` was set meanwhile: SIGTERM during start-up is a clean exit."""
    setup_logging(cfg.log_level)
    # every line masked: a library may echo a URL (a Redis client's error, the broker's address) whole
    redact_logging(Redactor([cfg.redis_url, cfg.kafka_bootstrap]))
    log.info("%s: starting with %s", stage_name, describe(cfg))
    health = start_metrics(stage_name, cfg)
    stop = kafka_loop.StopFlag().install()
    stage = build(health, stop)
    if stage is None:
        log.info("%s: stopped before it was ready", stage_name)
        metrics.UP.labels(stage_name).set(0)
        return 0
    consumer = kafka_loop.make_consumer(cfg.kafka_bootstrap, cfg.group_id or f"facestream-{stage_name}",
                                        client_id(stage_name), max_poll_records=cfg.max_batch_size)
    producer = kafka_loop.make_producer(cfg.kafka_bootstrap, client_id(stage_name))
    try:
        n = kafka_loop.run_stage(stage, consumer, producer, max_batch_size=cfg.max_batch_size,
                                 max_batch_wait_ms=cfg.max_batch_wait_ms, health=health, stop=stop,
                                 max_invalid_ratio=cfg.max_invalid_ratio,
                                 dead_letter_max_bytes=cfg.dead_letter_max_bytes)
        log.info("%s: stopped after %d messages", stage_name, n)
        return 0
    finally:
        metrics.UP.labels(stage_name).set(0)
        kafka_loop.close(consumer, producer)
