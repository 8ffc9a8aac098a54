"""`make demo`: the whole pipeline on the real Kafka and Redis over a sample clip served by a real RTSP server.

Enrolls the people in ../shared/data/videos/enroll, serves a clip as an RTSP camera, runs ingest,
detector, embedder and matcher as separate processes, prints identity events as they arrive and where
each service's metrics are, then stops everything cleanly. `make up` has started Kafka and Redis.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.local_pipeline import LocalPipeline, clip_frames, reset_groups_to_latest  # noqa: E402
from shared.config import BaseConfig, load  # noqa: E402
from shared.kafka_clients import KafkaAccess  # noqa: E402
from shared import paths, topics  # noqa: E402
from scripts.rtsp_cameras import rtsp_server  # noqa: E402

DATA = paths.data_root()
VISIT_GAP_S = 5.0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clip", default="biden_2021_7s.mp4", help="a file in ../shared/data/videos")
    p.add_argument("--fps", type=float, default=8.0, help="camera frame-rate cap (what one detector on 2 cores holds)")
    p.add_argument("--threshold", type=float, default=None, help="override the checkpoint's threshold")
    p.add_argument("--bootstrap", default=os.environ.get("FACESTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--max-width", type=int, default=960, help="downscale wider frames (MTCNN time grows with area)")
    return p.parse_args()


def summary(stages, elapsed_s: float) -> None:
    """Frames per stage and the matcher's capture-to-decision latency (histogram quantiles)."""
    from bench import promtext

    frames = {s.name.split("-")[0]: int(s.metric("facestream_messages_in_total")) for s in stages}
    stale = int(stages[0].metric("facestream_stale_dropped_total"))
    shed = int(stages[0].metric("facestream_frames_shed_total"))  # a newer frame of the camera was detected
    samples = promtext.parse(stages[2].get("/metrics")[1])
    e2e = promtext.buckets(samples, "facestream_end_to_end_latency_seconds")
    p50, p99 = promtext.quantile(e2e, 0.5), promtext.quantile(e2e, 0.99)
    events = int(promtext.total(samples, "facestream_identity_events_total"))
    print(f"== done in {elapsed_s:.1f} s: frames per stage {json.dumps(frames)} "
          f"({', '.join(f'{k} {v / elapsed_s:.1f}/s' for k, v in frames.items())}); {stale} dropped as stale, "
          f"{shed} skipped for a newer frame (the detector at capacity); "
          f"capture->decision latency p50 {p50 or 0:.2f} s, p99 {p99 or 0:.2f} s (matcher histogram); "
          f"{events} identity event(s)", flush=True)


def main() -> int:
    args = parse()
    clip = DATA / "videos" / args.clip
    if not clip.exists():
        sys.exit(f"demo: no clip at {clip}")
    fs = [sys.executable, "-m", "services.cli"]
    print(f"== enrolling the people in {DATA / 'videos/enroll'}", flush=True)
    subprocess.run([*fs, "gallery", "enroll-all", str(DATA / "videos/enroll"), "--pick", "largest", "--replace"],
                   cwd=ROOT, check=True)
    run = uuid.uuid4().hex[:6]
    # the clients' security (TLS, SASL) from the same FACESTREAM_KAFKA_* settings the services read
    access = replace(KafkaAccess.of(load(BaseConfig, [])), bootstrap=args.bootstrap)
    reset_groups_to_latest(access, {"facestream-detector": topics.FRAMES.name,
                                    "facestream-embedder": topics.FACES.name,
                                    "facestream-matcher": topics.EMBEDDINGS.name})
    pipe = LocalPipeline(ROOT / ".run" / "demo" / run)
    thr = ["--threshold", str(args.threshold)] if args.threshold is not None else []
    events = None
    try:
        with rtsp_server({"camera": clip}) as urls:
            print(f"== camera: {clip.name} served at {urls['camera']}", flush=True)
            print("== starting detector, embedder, matcher (loading models)", flush=True)
            pipe.start("detector", wait_ready=False)
            pipe.start("embedder", "--threads", "1", wait_ready=False)
            # a visit of its own per run (else a second demo within the visit gap would announce nobody), and
            # a short gap, so that the visit's end shows too
            pipe.start("matcher", *thr, "--visit-prefix", f"facestream:demo-{run}:visits", "--visit-gap-s",
                       str(VISIT_GAP_S), wait_ready=False)
            for svc in pipe.services:
                pipe.wait_ready(svc)
            events = subprocess.Popen([*fs, "events", "--idle-exit-s", "3600"], cwd=ROOT)
            time.sleep(2)  # the subscriber joins before the first event can exist
            t_start = time.monotonic()
            ingest = pipe.start("ingest", "--camera", f"demo-cam={urls['camera']}", "--fps", str(args.fps),
                                "--max-width", str(args.max_width), "--max-frames", str(clip_frames(clip, args.fps)),
                                wait_ready=False)
            for svc in pipe.services:
                print(f"   {svc.name:<12} metrics {svc.url}/metrics  health {svc.url}/healthz", flush=True)
            print("== identity events (one per visit, then its end):", flush=True)
            ingest.proc.wait(timeout=600)  # ends after the clip's frames (the RTSP stream replays on reconnect)
        pipe.wait_drained()
        elapsed = time.monotonic() - t_start - 4.0  # wait_drained's quiet period is not work
        time.sleep(VISIT_GAP_S + 2)  # the camera's tracks end after ~3 s, its visits after the gap
        summary(pipe.services[:3], elapsed)
    finally:
        codes = pipe.stop()
        if events:
            events.terminate()
            events.wait(10)
        print(f"== stopped: exit codes {codes}; logs in {pipe.log_dir}", flush=True)
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
