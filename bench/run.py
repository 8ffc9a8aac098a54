"""`python -m bench.run [--quick]`: every benchmark part, then bench.json, summary.md and plots.

    python -m bench.run                 # full: under 15 minutes on a 2-core machine (`make bench`)
    python -m bench.run --quick         # small sizes, under 3 minutes (`make bench-quick`, CI smoke)
    python -m bench.run --only matcher,kafka --out /tmp/bench

Needs the broker and Redis that `scripts/stack.py up` starts. Each part writes <out>/<part>.json as soon as
it ends; a part that fails is recorded with its error, the others still run, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bench import headline
from bench.common import RESULTS, SCHEMA, Settings, load_average, machine_facts, model_info, write_json
from shared.kafka_clients import KafkaAccess
from shared.config import DEFAULT_KAFKA, BaseConfig, ConfigError, build_parser, parse, setting

PARTS = ("detector", "overload", "embedder", "two_towers", "matcher", "matcher_rebuild", "kafka", "kafka_security",
         "pipeline", "scale_out")
FALLBACK_THRESHOLD = 0.92  # LFW View 2 cosine at FAR 1e-3 (out/eval), for a checkpoint not yet calibrated


@dataclass(frozen=True)
class BenchConfig(BaseConfig):
    """python -m bench.run: every benchmark part, then bench.json, summary.md and plots."""
    # BaseConfig's setting under the flag this command has always had
    kafka_bootstrap: str = setting(DEFAULT_KAFKA, "Kafka bootstrap servers, host:port[,host:port]", flag="--bootstrap")
    quick: bool = setting(False, "small sizes: a smoke run in under 3 minutes")
    only: str = setting(",".join(PARTS), f"comma-separated parts (default all: {','.join(PARTS)})")
    out: Path = setting(RESULTS, "results folder (default bench/results)")
    model: Path | None = setting(None, "checkpoint (default models/facestream.pt)")
    fps: float = setting(5.0, "pipeline part: frame-rate cap per camera (ingest --fps)", ge=0, le=240)
    width: int = setting(640, "pipeline part: ingest --max-width", ge=0, le=16384)
    profile: bool = setting(True, "profile the stages under 0.9 (--no-profile: skip the profiles)")

    def parts(self) -> list[str]:
        return self.only.split(",")

    def validate(self) -> None:
        unknown = set(self.parts()) - set(PARTS)
        if unknown:
            raise ConfigError(f"only: unknown part(s) {sorted(unknown)}; known: {PARTS}")


def parser() -> argparse.ArgumentParser:
    return build_parser(BenchConfig, "python -m bench.run")


def config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> BenchConfig:
    """The settings: flags > FACESTREAM_* > defaults."""
    return parse(BenchConfig, argv, env, parser=parser())[0]


class Models:
    """The detector and the embedding model, loaded once for every in-process part."""

    def __init__(self, path: Path | None):
        import torch

        from bench.inputs import default_detector
        from shared.vision.embed import EmbeddingModel

        torch.set_num_threads(1)  # the services run one thread each; also steadier on a shared machine
        self.detector = default_detector(path)  # the templates of the model under test, not the default's
        self.model = EmbeddingModel.load(path, device="cpu")


def main(argv: list[str] | None = None) -> int:
    try:
        a = config(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        parser().error(str(e))  # usage and exit 2, as for a flag argparse refuses itself
    s = Settings(a.quick, a.kafka_bootstrap, a.redis_url, a.model, a.out, a.fps, a.width, KafkaAccess.of(a))
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    machine = {**machine_facts(), "load_average_start": load_average()}
    model = model_info(a.model)
    threshold = model["threshold"] if model["threshold"] is not None else FALLBACK_THRESHOLD
    mode = "quick" if a.quick else "full"
    shutil.rmtree(a.out / "logs", ignore_errors=True)  # service logs are appended to: keep only this run's
    models = Models(a.model)

    from bench import (detector_stage, embedder_stage, kafka_security, kafka_transport, matcher_rebuild,
                       matcher_stage, overload, pipeline_load, scale_out, two_towers)

    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "detector": lambda: detector_stage.run(s, models.detector),
        "overload": lambda: overload.run(s, models.detector),
        "embedder": lambda: embedder_stage.run(s, models.detector, models.model),
        "two_towers": lambda: two_towers.run(s),
        "matcher": lambda: matcher_stage.run(s),
        "matcher_rebuild": lambda: matcher_rebuild.run(s),
        "kafka": lambda: kafka_transport.run(s),
        "kafka_security": lambda: kafka_security.run(s),
        "pipeline": lambda: pipeline_load.run(s, models.detector, models.model, threshold),
        "scale_out": lambda: scale_out.run(s, models.detector),
    }
    parts: dict[str, Any] = {}
    for name in [p for p in PARTS if p in a.parts()]:
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

    profiles = headline.profile_slow(s, parts, models) if a.profile else {}
    if profiles:
        write_json(a.out / "profiles.json", {"schema": SCHEMA, "mode": mode, "machine": machine, "model": model,
                                             "profiles": profiles})
    machine["load_average_end"] = load_average()
    doc = {"schema": SCHEMA, "mode": mode, "started": started.isoformat(timespec="seconds"),
           "seconds": time.monotonic() - t0, "machine": machine, "model": model,
           "threshold": {"cosine": threshold, "source": "checkpoint" if model["threshold"] is not None
                         else f"fallback {FALLBACK_THRESHOLD} (the checkpoint has none calibrated)"},
           "headline": headline.figures(parts), "overload": headline.overload(parts), **headline.keys(parts),
           "profiles": profiles,
           "parts": parts}
    write_json(a.out / "bench.json", doc)
    from bench import plots, report

    doc["plots"] = plots.draw(doc, a.out)
    write_json(a.out / "bench.json", doc)
    (a.out / "summary.md").write_text(report.summary(doc))
    print(f"[bench] done in {doc['seconds']:.0f} s: {a.out / 'bench.json'}, {a.out / 'summary.md'}", flush=True)
    return 1 if any(p["error"] for p in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
