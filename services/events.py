"""`facestream events`: print identity events as they arrive."""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import datetime

from shared import topics
from shared.schemas import IdentityEvent, SchemaError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facestream events", description="Subscribe to identity events and print them.")
    p.add_argument("--kafka-bootstrap", default=os.environ.get("FACESTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--topic", default=topics.IDENTITY_EVENTS.name)
    p.add_argument("--json", action="store_true", help="one JSON object per line, as published")
    p.add_argument("--from-beginning", action="store_true", help="replay the topic from its start")
    p.add_argument("--idle-exit-s", type=float, default=None, metavar="N",
                   help="stop after N seconds without a new event")
    p.add_argument("--camera", action="append", help="only these camera ids (repeatable)")
    return p


def human(ev: IdentityEvent) -> str:
    when = datetime.fromtimestamp(ev.last_seen).strftime("%H:%M:%S.%f")[:-3]
    who = ev.identity or "unknown"
    lat = f", {ev.event_ts - ev.last_seen:.2f}s after capture" if ev.event_ts else ""
    return (f"{when} {ev.camera_id:<12} {who:<24} score {ev.score:.3f} (threshold {ev.threshold:.3f}) "
            f"track {ev.track_id} faces {ev.faces}{lat}")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from kafka import KafkaConsumer

    # A group of its own: every subscriber sees every event; no offsets are committed.
    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.kafka_bootstrap,
                             group_id=f"facestream-events-{uuid.uuid4().hex[:8]}", enable_auto_commit=False,
                             auto_offset_reset="earliest" if args.from_beginning else "latest")
    last = time.monotonic()
    try:
        while args.idle_exit_s is None or time.monotonic() - last < args.idle_exit_s:
            for recs in consumer.poll(timeout_ms=500).values():
                for rec in recs:
                    try:
                        ev = IdentityEvent.decode(rec.value)
                    except SchemaError as e:
                        print(f"facestream events: skipping a malformed event at offset {rec.offset}: {e}",
                              file=sys.stderr)
                        continue
                    if args.camera and ev.camera_id not in args.camera:
                        continue
                    last = time.monotonic()
                    print(rec.value.decode() if args.json else human(ev), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
