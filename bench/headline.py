"""The figures the issue asks to quote, pulled out of the parts' results, and the profiles of slow stages.

Every stage's ratio to its raw component is listed flat (`ratios`); each one under `SLOW` (0.9) gets its
stage profiled (`profile_slow`) so that the summary can say where the time goes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.common import Settings

SLOW = 0.9


@dataclass(frozen=True)
class Ratio:
    stage: str  # which part (detector, embedder, matcher, kafka)
    contender: str  # what was measured against the raw component
    raw: str  # the raw component
    at: str  # the size or batch it was measured at
    ratio: float


def _result(parts: dict, name: str) -> dict | None:
    p = parts.get(name)
    return p["result"] if p and p.get("result") else None


def ratios(parts: dict) -> list[Ratio]:
    out: list[Ratio] = []
    if det := _result(parts, "detector"):
        size = det["config"]["frame_size"]
        out += [Ratio("detector", k, "MTCNN alone", size, v) for k, v in det["ratio_to_raw"].items()]
    if emb := _result(parts, "embedder"):
        for b, r in emb["by_batch"].items():
            out.append(Ratio("embedder", "batch_fn", "bare forward", f"batch {b}", r["ratio_to_forward"]["batch_fn"]))
            out.append(Ratio("embedder", "batch_fn", "bare forward, same work (flip)", f"batch {b}",
                             r["ratio_to_same_work"]))
        out.append(Ratio("embedder", "loop", "bare forward, same work (flip)", f"batch {emb['loop']['max_batch_size']}",
                         emb["loop"]["ratio_to_same_work"]))
    if mat := _result(parts, "matcher"):
        for n, r in mat["by_size"].items():
            for q, key in (("64 queries", "batch_64"), ("1 query", "batch_1")):
                for k, v in r[key]["ratio_to_numpy"].items():
                    raw = "numpy top-1, default threads" if k == "numpy_1thread" else \
                        "numpy top-1" + (", 1 thread" if k.endswith("_1thread") else ", default threads")
                    out.append(Ratio("matcher", k, raw, f"{int(n):,} ids, {q}", v))
    if kaf := _result(parts, "kafka"):
        for size, r in kaf["by_size"].items():
            for k, v in r["ratio_kafka_python_to_kcat"].items():
                out.append(Ratio("kafka", f"kafka-python {k}", "kcat", size, v))
    if sec := _result(parts, "kafka_security"):
        for k, v in sec["ratio_sasl_ssl_to_plaintext"].items():
            out.append(Ratio("kafka_security", f"kafka-python {k}, SASL_SSL", "the same over plaintext",
                             sec["config"]["size"], v))
    return out


def figures(parts: dict) -> dict[str, Any]:
    """The closing note's figures; None for a part that did not run or failed."""
    mat, kaf = _result(parts, "matcher"), _result(parts, "kafka")
    pipe, scale = _result(parts, "pipeline"), _result(parts, "scale_out")
    matcher = None
    if mat:
        n = max(mat["by_size"], key=int)
        r = mat["by_size"][n]
        matcher = {"identities": int(n), "queries_per_s_batch_64": r["batch_64"]["queries_per_s"],
                   "queries_per_s_batch_1": r["batch_1"]["queries_per_s"], "memory_mb": r["memory_mb"]}
    kafka = None
    if kaf:
        kafka = {size: {"frames_per_s": r["frames_per_s"], "mb_per_s": r["mb_per_s"],
                        "ratio_kafka_python_to_kcat": r["ratio_kafka_python_to_kcat"]}
                 for size, r in kaf["by_size"].items()}
    pipeline = None
    if pipe:
        best = next((r for r in pipe["runs"] if r["cameras"] == pipe["largest_cameras_held"]), None)
        pipeline = {"largest_cameras_held": pipe["largest_cameras_held"],
                    "at": f"{pipe['cost_model']['resolution']}, {pipe['config']['fps_cap']:g} fps per camera",
                    "p99_face_latency_s": best["latency_s"]["face_capture_to_decision"]["p99"] if best else None,
                    "p99_event_latency_s": best["latency_s"]["event_all"]["p99"] if best else None,
                    "cost_model": pipe["cost_model"]}
    sec = _result(parts, "kafka_security")
    return {"stage_ratios": [asdict(r) for r in ratios(parts)], "matcher": matcher, "kafka": kafka,
            "kafka_security": {"frames_per_s": sec["frames_per_s"],
                               "ratio_sasl_ssl_to_plaintext": sec["ratio_sasl_ssl_to_plaintext"]} if sec else None,
            "pipeline": pipeline, "scale_out": scale["throughput_ratio"] if scale else None}


def keys(parts: dict) -> dict[str, Any]:
    """bench.json's top-level `detector`, `capacity` and `matcher_rebuild` (issue 14's keys); None where the
    part did not run. Goals: detector.loop_ratio >= 0.90, capacity.cameras_per_core >= 4."""
    det, pipe, reb = _result(parts, "detector"), _result(parts, "pipeline"), _result(parts, "matcher_rebuild")
    detector = None
    if det:
        detector = {k: det[k] for k in ("loop_ratio", "speedup_vs_baseline", "speedup_vs_baseline_loop",
                                        "mtcnn_batch_speedup", "refine", "frames_per_s")}
        detector["motion_gating"] = {k: det["motion"][k] for k in ("speedup", "detected_fraction", "footage")}
    capacity = None
    if pipe:
        best = pipe["largest_cameras_held"]
        at = next((r for r in pipe["runs"] if r["cameras"] == best), None)
        cores = at["cpu_cores"]["total"] if at else None
        capacity = {"cameras_per_core": best / cores if cores else None, "cameras_held": best,
                    "cores_used": cores, "cores_by_service": at["cpu_cores"] if at else None,
                    "at": f"{pipe['cost_model']['resolution']}, {pipe['config']['fps_cap']:g} fps per camera",
                    "marginal_cameras_per_core": pipe["cost_model"]["cameras_per_core"],
                    "method": "the largest camera count that held with bounded lag (bench/cost_model.py) over "
                              "the CPU cores all services (ingest included) used during that load"}
    rebuild = None
    if reb:
        rebuild = {"identities": reb["config"]["identities"], "longest_stall_s": reb["longest_stall_s"],
                   "by_contender": {k: {"longest_stall_s": v["longest_stall_s"], "reload_s": v["reload_s"]}
                                    for k, v in reb["contenders"].items()},
                   "loop_median_iteration_s": reb["contenders"]["process"]["median_iteration_s_without_rebuild"]}
    return {"detector": detector, "capacity": capacity, "matcher_rebuild": rebuild}


def overload(parts: dict) -> dict[str, Any] | None:
    """bench.json's `overload`: the detector at 3x its capacity (bench/overload.py); goal useful_ratio >= 0.9."""
    r = _result(parts, "overload")
    if not r:
        return None
    return {k: r[k] for k in ("useful_ratio", "capacity_frames_per_s", "offered_frames_per_s",
                              "detected_frames_per_s", "outcomes")}


def profile_slow(settings: Settings, parts: dict, models) -> dict[str, Any]:
    """One profile per stage that has a ratio under SLOW, of the code path that was slow."""
    from bench import blas, detector_stage, embedder_stage, matcher_stage, profiling

    slow: dict[str, list[Ratio]] = {}
    for r in ratios(parts):
        if r.ratio < SLOW and not r.contender.startswith("numpy"):  # numpy_1thread is a raw variant
            slow.setdefault(r.stage, []).append(r)
    out: dict[str, Any] = {}
    for stage, rs in slow.items():
        why = [asdict(r) for r in rs]
        print(f"[bench] profiling {stage} ({len(rs)} ratio(s) under {SLOW})", flush=True)
        try:
            if stage == "detector":
                loop = all(r.contender == "loop" for r in rs)  # only the loop is slow: profile the loop
                with detector_stage.profile_target(settings, models.detector, loop) as fn:
                    prof = profiling.cprofile(fn)
                target = ("detector through the shared loop, 8 frames 640x360, main thread" if loop
                          else "detector batch function, 4 frames 640x360")
            elif stage == "embedder":
                prof = profiling.cprofile(embedder_stage.profile_target(settings, models.detector, models.model))
                target = "embedder batch function, 32 frames of one face"
            elif stage == "matcher":
                n = min(int(r.at.split(" ")[0].replace(",", "")) for r in rs)
                # a slow one-thread contender: profile on one thread, where the search no longer hides the rest
                one = any(r.contender.endswith("_1thread") for r in rs)
                fn = matcher_stage.profile_target(settings, n)
                with blas.threads(1 if one else blas.get_threads() or 1):
                    prof = profiling.cprofile(fn)
                target = (f"Matcher.process, {n:,} identities, 64 frames of one face, OpenBLAS "
                          f"{'1 thread' if one else 'default threads'}")
            else:
                n = 300 if settings.quick else 1000
                prof = profiling.kafka_profiles(settings.bootstrap, "640x360", n)
                target = f"kafka-python producing then consuming {n} frames of 640x360"
            out[stage] = {"why": why, "target": target, "profile": prof}
        except Exception as e:  # noqa: BLE001 (a profile is an explanation, not a figure: record and go on)
            out[stage] = {"why": why, "error": f"{type(e).__name__}: {e}"}
    return out
