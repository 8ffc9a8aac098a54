"""`facestream events`: print identity events as they arrive."""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, Sequence

from shared import topics
from shared.config import BaseConfig, build_parser, parse, setting
from shared.schemas import IdentityEvent, SchemaError


@dataclass(frozen=True)
class EventsConfig(BaseConfig):
    """facestream events: subscribe to identity events and print them."""
    # the matcher's name for the same topic, so that one variable points both ends at it
    events_topic: str = setting(topics.IDENTITY_EVENTS.name, "topic of the identity events", flag="--topic")
    json: bool = setting(False, "one JSON object per line, as published")
    from_beginning: bool = setting(False, "replay the topic from its start")
    idle_exit_s: float | None = setting(None, "stop after this many seconds without a new event (default: never)",
                                        ge=0, le=7 * 86400)
    # not `camera`: FACESTREAM_CAMERA is ingest's ID=SOURCE list, which would filter out every event here
    camera_filter: list[str] = setting([], "only these camera ids (repeatable)", flag="--camera", repeat=True)


def parser() -> argparse.ArgumentParser:
    return build_parser(EventsConfig, "facestream events")


def config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> EventsConfig:
    """The settings: flags > FACESTREAM_* > defaults."""
    return parse(EventsConfig, argv, env, parser=parser())[0]


def human(ev: IdentityEvent) -> str:
    """One line per event: when (capture time of its latest face), camera, who, and what happened."""
    when = datetime.fromtimestamp(ev.last_seen).strftime("%H:%M:%S.%f")[:-3]
    who = ev.identity or "unknown"
    if ev.kind == "visit-ended":
        duration = ev.duration_s if ev.duration_s is not None else ev.last_seen - ev.first_seen
        return (f"{when} {ev.camera_id:<12} {who:<24} visit ended after {duration:.0f} s, {ev.faces} faces "
                f"(visit {ev.visit_id[:12]})")
    lat = f", {ev.event_ts - ev.last_seen:.2f}s after capture" if ev.event_ts else ""
    return (f"{when} {ev.camera_id:<12} {who:<24} {ev.kind} score {ev.score:.3f} (threshold {ev.threshold:.3f}) "
            f"track {ev.track_id} faces {ev.faces}{lat} (visit {ev.visit_id[:12]})")


def main(argv: list[str]) -> int:
    cfg = config(argv)
    from shared.kafka_clients import KafkaAccess, make_consumer

    # A group of its own: every subscriber sees every event; no offsets are committed. read_committed: the
    # matcher publishes in transactions, and an event of a batch it did not finish (it was killed) is never
    # shown; the batch's events come once, from the matcher that reads it again.
    consumer = make_consumer(KafkaAccess.of(cfg), f"facestream-events-{uuid.uuid4().hex[:8]}",
                             "facestream-events", isolation_level="read_committed",
                             auto_offset_reset="earliest" if cfg.from_beginning else "latest")
    consumer.subscribe([cfg.events_topic])
    last = time.monotonic()
    try:
        while cfg.idle_exit_s is None or time.monotonic() - last < cfg.idle_exit_s:
            for recs in consumer.poll(timeout_ms=500).values():
                for rec in recs:
                    try:
                        ev = IdentityEvent.decode(rec.value)
                    except SchemaError as e:
                        print(f"facestream events: skipping a malformed event at offset {rec.offset}: {e}",
                              file=sys.stderr)
                        continue
                    if cfg.camera_filter and ev.camera_id not in cfg.camera_filter:
                        continue
                    last = time.monotonic()
                    print(rec.value.decode() if cfg.json else human(ev), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
