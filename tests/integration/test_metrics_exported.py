"""Every metric name the Grafana dashboard and the alert rules use is exported by a running service.

Running services are scraped while (ingest) and after (detector, embedder, matcher) a clip goes through
them. A name counts as exported when a scrape shows samples of it; a short list of names that only see
samples when something goes wrong (a camera reconnecting, a face failing a gate) need only have their
family declared in the scrape. One corrupt and one old frame are sent so that the dead-letter and stale
counters are really fed.
"""
from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest

from shared import kafka_loop
from shared.schemas import Frame
from tests.deploy.metric_refs import referenced_metric_names

pytestmark = pytest.mark.integration
ONLY_ON_TROUBLE = {"facestream_camera_reconnects", "facestream_faces_rejected"}  # families, no suffix


def family(name: str) -> str:
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        name = name.removesuffix(suffix)
    return name


def scrape(text: str) -> tuple[set[str], set[str]]:
    """(names with samples, names declared by # TYPE lines, expanded to their exposition names)."""
    samples = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})? ", text, re.M)}
    declared = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        declared.add(name)
        if kind == "histogram":
            declared |= {name + "_bucket", name + "_sum", name + "_count"}
        elif kind == "counter":
            declared.add(family(name) + "_total")
    return samples, declared


def test_dashboard_and_alert_metrics_are_exported_by_running_services(pipeline, data_dir):
    producer = kafka_loop.make_producer(pipeline.bootstrap, "metrics-test")
    jpeg = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    producer.send(pipeline.frames, key=b"cam-metrics", value=b"\x00 not a frame")  # -> dead letter
    producer.send(pipeline.frames, key=b"cam-metrics",
                  value=Frame("cam-metrics", 0, time.time() - 3600, 64, 48, jpeg).encode())  # -> stale
    producer.flush()
    producer.close()

    clip = data_dir / "videos/biden_2021_7s.mp4"
    ingest = pipeline.pipe.start("ingest", "--camera", f"cam-metrics-live={clip}", "--frames-topic", pipeline.frames,
                                 "--fps", "8", "--max-width", "960", wait_ready=False, label="ingest-metrics")
    deadline = time.monotonic() + 60
    while ingest.metric("facestream_messages_out_total") < 10:
        assert ingest.proc.poll() is None and time.monotonic() < deadline, ingest.log_tail()
        time.sleep(0.3)
    samples, declared = scrape(ingest.get("/metrics")[1])
    assert ingest.proc.wait(timeout=120) == 0
    assert pipeline.pipe.wait_drained()
    for svc in pipeline.pipe.services:
        if svc.proc.poll() is None:
            s, d = scrape(svc.get("/metrics")[1])
            samples |= s
            declared |= d
    wanted = referenced_metric_names()
    assert wanted, "the dashboard and alert rules reference metrics"
    missing = sorted(n for n in wanted - samples if family(n) not in ONLY_ON_TROUBLE)
    assert not missing, f"referenced by the dashboard or alerts, but no running service has samples: {missing}"
    assert not sorted(wanted - declared - samples), "every referenced family is declared by a running service"
