"""What every benchmark part shares: machine facts, the model and its LFW figure, timing, JSON output.

This machine is shared and noisy, so no figure is a single wall time: a part runs its contenders
interleaved (raw, stage, raw, stage, ...) so that a burst of someone else's load hits both, and reports
medians over repeats and the median of the per-repeat ratios.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from shared import paths
from shared.kafka_clients import KafkaAccess

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / ".run" / "bench-cache"  # decoded frames, aligned crops, looped clips: git-ignored
DATA = paths.data_root()
SCHEMA = "facestream-bench/1"


@dataclass(frozen=True)
class Settings:
    """Where the parts find the broker, Redis and the model, and how big they run."""
    quick: bool
    bootstrap: str
    redis_url: str
    model: Path | None  # None: the default checkpoint
    out: Path
    fps: float = 2.0  # pipeline part: ingest's frame-rate cap per camera
    width: int = 640  # pipeline part: ingest's --max-width
    # the Kafka clients' settings (TLS, SASL); `bootstrap` alone is what subprocesses are told, the rest of
    # the security they read from the same FACESTREAM_KAFKA_* variables
    kafka: KafkaAccess | None = None

    def __post_init__(self) -> None:
        if self.kafka is None:
            object.__setattr__(self, "kafka", KafkaAccess(self.bootstrap))


def machine_facts() -> dict[str, Any]:
    """Cores, CPU model, memory and library versions: what a reader needs to compare two runs."""
    import numpy
    import psutil
    import torch

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        kcat = subprocess.run(["kcat", "-V"], capture_output=True, text=True, timeout=5).stdout.split("\n")[0]
    except (OSError, subprocess.TimeoutExpired):
        kcat = None
    import kafka

    return {"cores_logical": os.cpu_count(), "cores_physical": psutil.cpu_count(logical=False), "cpu_model": cpu,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "hostname": platform.node(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "kafka_python": kafka.__version__, "kcat": kcat, "torch_threads": torch.get_num_threads()}


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: above the core count, other jobs compete for the CPU."""
    return [round(x, 2) for x in os.getloadavg()]


def model_info(path: Path | None = None) -> dict[str, Any]:
    """Model version, its settings and its LFW figure (the checkpoint's `eval` summary; null if absent).

    Reports of `facestream eval` in out/eval/ for the same model version are listed beside it, with their
    flip setting, because a checkpoint may not have the summary written in yet."""
    from shared.vision import checkpoint

    ckpt = checkpoint.load(path)
    ev = ckpt.get("eval")
    lfw = None
    if ev:
        lfw = {k: ev.get(k) for k in ("dataset", "accuracy_mean", "accuracy_std", "auc", "tar_at_far",
                                      "flip_average", "date")}
        lfw["source"] = "checkpoint eval summary"
    others = []
    for rep in sorted((ROOT / "out" / "eval").glob("*.json")):
        try:
            r = json.loads(rep.read_text())
        except (OSError, ValueError):
            continue
        if r.get("model_version") == ckpt["model_version"] and "accuracy_mean" in r:
            others.append({"report": str(rep.relative_to(ROOT)), "dataset": r.get("dataset"),
                           "flip_average": r.get("flip_average"), "accuracy_mean": r["accuracy_mean"],
                           "accuracy_std": r.get("accuracy_std"), "auc": r.get("auc"), "date": r.get("date")})
    thr = ckpt.get("threshold")
    return {"path": str(path or checkpoint.default_path()), "model_version": ckpt["model_version"],
            "arch": ckpt["arch"], "input_size": ckpt["input_size"], "embedding_dim": ckpt["embedding_dim"],
            "flip_average": bool(ckpt["flip_average"]), "threshold": thr["cosine"] if thr else None,
            "lfw": lfw, "lfw_reports_same_model": others}


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int,
                warmup: bool = True) -> dict[str, list[float]]:
    """Run each contender once per repeat, in rotation; one that returns a float has timed itself (in
    seconds: to leave set-up out), any other is timed here. The order rotates so that no contender always
    runs right after another."""
    names = list(contenders)
    if warmup:
        for n in names:
            contenders[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            got = contenders[n]()
            times[n].append(got if isinstance(got, float) else time.perf_counter() - t0)
    return times


def stats(values: list[float]) -> dict[str, Any]:
    """Median, min, max and the raw values of one repeated measurement."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": [round(v, 6) for v in values]}


def ratio(raw: list[float], stage: list[float]) -> float:
    """Throughput of the stage over that of its raw component, per repeat (same work, so raw time over
    stage time), then the median: 1.0 means no overhead, 0.5 means the stage does half as much per second."""
    return statistics.median(r / s for r, s in zip(raw, stage))


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def jsonable(obj: Any) -> Any:
    """numpy scalars and paths to plain JSON; NaN and infinity refused, so a broken figure fails loudly."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        if not math.isfinite(f):
            raise ValueError(f"non-finite figure {f}")
        return round(f, 6)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(jsonable(doc), indent=1))
    os.replace(tmp, path)
    return path
