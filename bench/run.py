"""`python -m bench.run [--quick]`: every benchmark part, then bench.json, summary.md and plots.

    python -m bench.run                 # full: under 15 minutes on a 2-core machine (`make bench`)
    python -m bench.run --quick         # small sizes, under 3 minutes (`make bench-quick`, CI smoke)
    python -m bench.run --only matcher,kafka --out /tmp/bench

Needs the broker and Redis that `scripts/stack.py up` starts. Each part writes <out>/<part>.json as soon as
it ends; a part that fails is recorded with its error, the others still run, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bench import headline
from bench.common import RESULTS, SCHEMA, Settings, load_average, machine_facts, model_info, write_json

PARTS = ("detector", "embedder", "matcher", "kafka", "pipeline", "scale_out")
FALLBACK_THRESHOLD = 0.92  # LFW View 2 cosine at FAR 1e-3 (out/eval), for a checkpoint not yet calibrated


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in under 3 minutes")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts (default all: {','.join(PARTS)})")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    p.add_argument("--bootstrap", default=os.environ.get("FACESTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--redis-url", default=os.environ.get("FACESTREAM_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default models/facestream.pt)")
    p.add_argument("--fps", type=float, default=2.0, help="pipeline part: frame-rate cap per camera")
    p.add_argument("--width", type=int, default=640, help="pipeline part: ingest --max-width")
    p.add_argument("--no-profile", action="store_true", help="skip the profiles of stages under 0.9")
    a = p.parse_args(argv)
    unknown = set(a.only.split(",")) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}; known: {PARTS}")
    return a


class Models:
    """The detector and the embedding model, loaded once for every in-process part."""

    def __init__(self, path: Path | None):
        import torch

        from bench.inputs import default_detector
        from shared.vision.embed import EmbeddingModel

        torch.set_num_threads(1)  # the services run one thread each; also steadier on a shared machine
        self.detector = default_detector()
        self.model = EmbeddingModel.load(path, device="cpu")


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    s = Settings(a.quick, a.bootstrap, a.redis_url, a.model, a.out, a.fps, a.width)
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    machine = {**machine_facts(), "load_average_start": load_average()}
    model = model_info(a.model)
    threshold = model["threshold"] if model["threshold"] is not None else FALLBACK_THRESHOLD
    mode = "quick" if a.quick else "full"
    shutil.rmtree(a.out / "logs", ignore_errors=True)  # service logs are appended to: keep only this run's
    models = Models(a.model)

    from bench import (detector_stage, embedder_stage, kafka_transport, matcher_stage, pipeline_load,
                       scale_out)

    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "detector": lambda: detector_stage.run(s, models.detector),
        "embedder": lambda: embedder_stage.run(s, models.detector, models.model),
        "matcher": lambda: matcher_stage.run(s),
        "kafka": lambda: kafka_transport.run(s),
        "pipeline": lambda: pipeline_load.run(s, models.detector, models.model, threshold),
        "scale_out": lambda: scale_out.run(s, models.detector),
    }
    parts: dict[str, Any] = {}
    for name in [p for p in PARTS if p in a.only.split(",")]:
        print(f"[bench] {name} ({mode}) ...", flush=True)
        p0, load0 = time.monotonic(), load_average()
        try:
            result, error = runners[name](), None
        except Exception:  # noqa: BLE001 (recorded; the other parts still run)
            result, error = None, traceback.format_exc()
            print(f"[bench] {name} FAILED:\n{error}", file=sys.stderr, flush=True)
        parts[name] = {"part": name, "seconds": time.monotonic() - p0, "load_average_start": load0,
                       "load_average_end": load_average(), "result": result, "error": error}
        write_json(a.out / f"{name}.json", {"schema": SCHEMA, "mode": mode, "machine": machine, "model": model,
                                            **parts[name]})
        print(f"[bench] {name}: {parts[name]['seconds']:.0f} s", flush=True)

    profiles = {} if a.no_profile else headline.profile_slow(s, parts, models)
    if profiles:
        write_json(a.out / "profiles.json", {"schema": SCHEMA, "mode": mode, "machine": machine, "model": model,
                                             "profiles": profiles})
    machine["load_average_end"] = load_average()
    doc = {"schema": SCHEMA, "mode": mode, "started": started.isoformat(timespec="seconds"),
           "seconds": time.monotonic() - t0, "machine": machine, "model": model,
           "threshold": {"cosine": threshold, "source": "checkpoint" if model["threshold"] is not None
                         else f"fallback {FALLBACK_THRESHOLD} (the checkpoint has none calibrated)"},
           "headline": headline.figures(parts), "profiles": profiles, "parts": parts}
    write_json(a.out / "bench.json", doc)
    from bench import plots, report

    doc["plots"] = plots.draw(doc, a.out)
    write_json(a.out / "bench.json", doc)
    (a.out / "summary.md").write_text(report.summary(doc))
    print(f"[bench] done in {doc['seconds']:.0f} s: {a.out / 'bench.json'}, {a.out / 'summary.md'}", flush=True)
    return 1 if any(p["error"] for p in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
