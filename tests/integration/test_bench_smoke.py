"""CI smoke of the benchmarks: `python -m bench.run --quick` and `python -m bench.gpu_embedder --smoke` run
to the end on the real broker and Redis, and write complete JSON: every expected figure present and a
finite number. The figures themselves are not asserted (this machine is shared; they vary)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

PARTS = ("detector", "overload", "embedder", "matcher", "matcher_rebuild", "kafka", "kafka_security", "pipeline",
         "scale_out")
EXPECTED = {  # per part: key paths (dots; "*" = every key of a map, every item of a list) that hold numbers
    "detector": ["per_frame_ms.*.median", "frames_per_s.*", "ratio_to_raw.detect_align", "ratio_to_raw.batch_fn",
                 "ratio_to_raw.loop", "config.faces_found_per_frame", "loop_ratio", "speedup_vs_baseline",
                 "motion.speedup", "motion.detected_fraction", "motion.on.unchanged"],
    "matcher_rebuild": ["contenders.*.longest_stall_s", "contenders.*.reload_s", "longest_stall_s",
                        "contenders.process.median_iteration_s_without_rebuild"],
    "overload": ["useful_ratio", "capacity_frames_per_s", "offered_frames_per_s", "detected_frames_per_s",
                 "outcomes.ok", "outcomes.skipped"],
    "embedder": ["by_batch.*.faces_per_s.forward", "by_batch.*.faces_per_s.embed", "by_batch.*.faces_per_s.batch_fn",
                 "by_batch.*.ratio_to_forward.batch_fn", "by_batch.*.ratio_to_same_work", "loop.faces_per_s.loop",
                 "loop.ratio_to_same_work"],
    "matcher": ["by_size.*.batch_64.queries_per_s.numpy", "by_size.*.batch_64.queries_per_s.search",
                "by_size.*.batch_64.queries_per_s.stage", "by_size.*.batch_64.queries_per_s.search_1thread",
                "by_size.*.batch_1.queries_per_s.search", "by_size.*.batch_64.ratio_to_numpy.stage",
                "by_size.*.memory_mb.index_arrays", "by_size.*.memory_mb.rss_increase", "by_size.*.build_s"],
    "kafka": [f"by_size.{s}.{m}.{c}" for s in ("640x360", "1280x720") for m in ("frames_per_s", "mb_per_s")
              for c in ("kafka_python_produce", "kafka_python_tuned_produce", "kcat_produce", "kafka_python_consume",
                        "kcat_consume")] + ["by_size.*.ratio_kafka_python_to_kcat.*"],
    "kafka_security": [f"frames_per_s.{k}_{op}" for k in ("plaintext", "sasl_ssl") for op in ("produce", "consume")]
    + ["ratio_sasl_ssl_to_plaintext.produce", "ratio_sasl_ssl_to_plaintext.consume"],
    "pipeline": ["runs.*.cameras", "runs.*.frames.published", "runs.*.frames.processed", "runs.*.frames.dropped_stale",
                 "runs.*.latency_s.face_capture_to_decision.p50", "runs.*.latency_s.face_capture_to_decision.p99",
                 "runs.*.lag.max.detector", "runs.*.cpu_cores.*", "runs.*.peak_rss_mb.*", "largest_cameras_held",
                 "idle_cores.*", "cost_model.per_camera_cores", "cost_model.detector_cpu_ms_per_frame"],
    "scale_out": ["by_processes.*.faces_per_s", "by_processes.*.cpu_cores_used", "throughput_ratio.*"],
}


def values(doc: Any, path: str) -> list[Any]:
    """Every value at a dotted key path; a missing key fails the test with the path."""
    nodes = [doc]
    for key in path.split("."):
        nxt = []
        for n in nodes:
            if key == "*":
                assert isinstance(n, (dict, list)) and n, f"{path}: nothing under '*'"
                nxt += list(n.values()) if isinstance(n, dict) else list(n)
            else:
                assert isinstance(n, dict) and key in n, f"{path}: missing {key!r}"
                nxt.append(n[key])
        nodes = nxt
    return nodes


def assert_finite_numbers(doc: Any, path: str) -> None:
    for v in values(doc, path):
        assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), f"{path} = {v!r}"


def assert_no_nan(node: Any, where: str = "") -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            assert_no_nan(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            assert_no_nan(v, f"{where}[{i}]")
    elif isinstance(node, float):
        assert math.isfinite(node), f"{where} = {node}"


def test_quick_benchmark_writes_complete_json(kafka_bootstrap, redis_url, data_dir, tmp_path: Path):
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--bootstrap",
                          kafka_bootstrap, "--redis-url", redis_url], cwd=ROOT, capture_output=True, text=True,
                         timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads((out / "bench.json").read_text())
    assert_finite_numbers(doc, "overload.useful_ratio")  # the figure issue 11 names, at the top of bench.json
    for key in ("detector.loop_ratio", "detector.speedup_vs_baseline", "capacity.cameras_per_core",
                "matcher_rebuild.longest_stall_s"):  # issue 14's, at the top too
        assert_finite_numbers(doc, key)
    assert doc["mode"] == "quick" and doc["schema"] == "facestream-bench/1"
    for key in ("cores_logical", "load_average_start", "load_average_end", "torch", "kafka_python"):
        assert doc["machine"][key] is not None, key
    assert doc["model"]["model_version"] and "lfw" in doc["model"]  # the LFW figure may be null: not yet evaluated
    assert_no_nan(doc)
    for part in PARTS:
        p = doc["parts"][part]
        assert p["error"] is None, f"{part} failed:\n{p['error']}"
        for path in EXPECTED[part]:
            assert_finite_numbers(p["result"], path)
        on_disk = json.loads((out / f"{part}.json").read_text())
        assert on_disk["result"] == p["result"] and on_disk["model"] == doc["model"]
        assert len(on_disk["load_average_start"]) == len(on_disk["load_average_end"]) == 3
    assert [int(b) for b in doc["parts"]["embedder"]["result"]["by_batch"]] == \
        doc["parts"]["embedder"]["result"]["config"]["batches"]
    assert [r["cameras"] for r in doc["parts"]["pipeline"]["result"]["runs"]] == \
        doc["parts"]["pipeline"]["result"]["config"]["cameras"]
    head = doc["headline"]
    assert head["stage_ratios"] and all(r["ratio"] > 0 for r in head["stage_ratios"])
    assert_finite_numbers(head, "matcher.queries_per_s_batch_64.search")
    assert isinstance(head["pipeline"]["largest_cameras_held"], int)
    summary = (out / "summary.md").read_text()
    for section in ("Each stage against its raw component", "Matcher", "Kafka transport", "Pipeline under load",
                    "scale-out"):
        assert section in summary, section
    for png in doc["plots"]:
        assert (out / png).stat().st_size > 1000, png


def test_gpu_detector_smoke_runs_on_the_cpu(tmp_path: Path):
    run = subprocess.run([sys.executable, "-m", "bench.gpu_detector", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu_detector.json").read_text())
    assert doc["mode"] == "smoke" and doc["result"]["config"]["device"] == "cpu"
    for size in ("1280x720", "1920x1080"):
        assert_finite_numbers(doc["result"]["by_size"][size], "frames_per_s.*")
        assert_finite_numbers(doc["result"]["by_size"][size], "cameras_per_gpu")


def test_gpu_embedder_smoke_runs_on_the_cpu(tmp_path: Path):
    run = subprocess.run([sys.executable, "-m", "bench.gpu_embedder", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu_embedder.json").read_text())
    assert doc["mode"] == "smoke" and doc["model"]["model_version"] and doc["machine"]["load_average_end"]
    variants = doc["result"]["variants"]
    for name in ("fp32", "fp32_cl", "embed"):
        assert variants[name]["status"] == "ok", variants[name]
        assert_finite_numbers(variants[name], "by_batch.*.faces_per_s")
        assert_finite_numbers(variants[name], "by_batch.*.ms_per_batch")
        assert variants[name]["min_cosine_to_fp32"] > 0.99  # the same network, so the same descriptors
    for name in ("fp16_cl", "fp16_cl_compile", "fp16_cl_cudagraph"):  # no GPU in CI: skipped, with the reason
        assert variants[name]["status"] == "skipped" and variants[name]["what"]
