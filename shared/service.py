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
from shared.kafka_clients import KafkaAccess
from shared.kafka_transactions import Producers
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


def transactional(stage: Stage, cfg: StageConfig) -> dict:
    """The producer settings of a transactional stage. Two live producers must never share an id (the
    broker fences the older: it exits), so the default is the host and the process id: unique on one
    machine, and stable for a container restarted in its pod (same hostname, pid 1), which then fences
    its killed predecessor and aborts its open transaction at once. A process with another id waits
    `transaction_timeout_ms` for the broker to abort it instead, and read_committed consumers of its
    outputs wait as long. Zombie members are fenced by their group generation (KIP-447), not by the id."""
    if not stage.transactional:
        return {}
    tid = getattr(cfg, "transactional_id", "") or f"facestream-{stage.name}-{socket.gethostname()}-{os.getpid()}"
    # request_timeout_ms: kafka-python's sender waits that long for a dead coordinator before it looks for the
    # new one; its default (20 s here) and one more round trip would not fit in a step's deadline
    return {"transactional_id": tid, "transaction_timeout_ms": int(getattr(cfg, "transaction_timeout_ms", 60_000)),
            "request_timeout_ms": 10_000}


def run_consumer_service(stage_name: str, cfg: StageConfig,
                         build: Callable[[metrics.Health, kafka_loop.StopFlag], Stage | None]) -> int:
    """Run a consuming stage until SIGTERM/SIGINT; return the process exit status.

    `build(health, stop)` loads models, connects to Redis: before joining the group, so that no partition
    waits on it. It may wait for a dependency for long (beating `health`, so liveness holds while /readyz
    says not ready) and return None when `stop` was set meanwhile: SIGTERM during start-up is a clean exit."""
    setup_logging(cfg.log_level)
    # every line masked: a library may echo a URL (a Redis client's error, the broker's address) whole
    redact_logging(Redactor([cfg.redis_url, cfg.kafka_bootstrap], secrets=[cfg.kafka_password, cfg.redis_password]))
    access = KafkaAccess.of(cfg)
    log.info("%s: starting with %s", stage_name, describe(cfg))
    health = start_metrics(stage_name, cfg)
    stop = kafka_loop.StopFlag().install()
    stage = build(health, stop)
    if stage is None:
        log.info("%s: stopped before it was ready", stage_name)
        metrics.UP.labels(stage_name).set(0)
        return 0
    # read_committed: a transactional producer's aborted batch is never read (for the others it changes nothing)
    consumer = kafka_loop.make_consumer(access, cfg.group_id or f"facestream-{stage_name}", client_id(stage_name),
                                        max_poll_records=cfg.max_batch_size, isolation_level="read_committed")
    producer = kafka_loop.make_producer(access, client_id(stage_name), **transactional(stage, cfg))
    producers = Producers(producer, (lambda: kafka_loop.make_producer(access, client_id(stage_name),
                                                                      **transactional(stage, cfg)))
                          if stage.transactional else None)
    try:
        n = kafka_loop.run_stage(stage, consumer, producers, max_batch_size=cfg.max_batch_size,
                                 max_batch_wait_ms=cfg.max_batch_wait_ms, health=health, stop=stop,
                                 max_invalid_ratio=cfg.max_invalid_ratio,
                                 dead_letter_max_bytes=cfg.dead_letter_max_bytes)
        log.info("%s: stopped after %d messages", stage_name, n)
        return 0
    finally:
        metrics.UP.labels(stage_name).set(0)
        kafka_loop.close(consumer, producers.producer)
