"""bench/results/summary.md from one bench.json: the figures a reader asks for, in short tables."""
from __future__ import annotations

from typing import Any


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
           ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows] + [""]


def _res(doc: dict, part: str) -> dict | None:
    p = doc["parts"].get(part)
    return p["result"] if p and p.get("result") else None


def summary(doc: dict[str, Any]) -> str:
    m, mod = doc["machine"], doc["model"]
    lfw = mod["lfw"]
    lfw_s = (f"{lfw['accuracy_mean']:.2%} +- {lfw['accuracy_std']:.2%} ({lfw['dataset']}, {lfw['source']})"
             if lfw else "none in the checkpoint")
    other = "; ".join(f"{r['dataset']} flip={r['flip_average']}: {r['accuracy_mean']:.2%} ({r['report']})"
                      for r in mod["lfw_reports_same_model"])
    out = [f"# facestream benchmark ({doc['mode']}, {doc['started']}, {doc['seconds']:.0f} s)", "",
           f"Machine: {m['cores_logical']} cores ({m['cpu_model']}), {m['memory_gb']} GB; load average "
           f"{m['load_average_start']} at start, {m.get('load_average_end')} at end (shared: every figure is a "
           "median over repeats or a ratio measured side by side).",
           f"Model: {mod['model_version']} (flip_average={mod['flip_average']}); LFW: {lfw_s}"
           + (f"; eval reports of the same weights: {other}" if other else "") + ".", ""]
    for name, p in doc["parts"].items():
        if p.get("error"):
            out += [f"**{name} FAILED**: `{p['error'].strip().splitlines()[-1]}`", ""]
    out += ["## Each stage against its raw component (throughput ratio; 1 = no overhead)", ""]
    out += _table(["stage", "measured", "raw component", "at", "ratio"],
                  [[r["stage"], r["contender"], r["raw"], r["at"], ("**%.2f**" if r["ratio"] < 0.9 else "%.2f")
                    % r["ratio"]] for r in doc["headline"]["stage_ratios"]])
    if det := _res(doc, "detector"):
        out += ["Detector, ms per frame (median): " + ", ".join(f"{k} {v['median']:.1f}"
                                                              for k, v in det["per_frame_ms"].items()), ""]
    if emb := _res(doc, "embedder"):
        keys = list(next(iter(emb["by_batch"].values()))["faces_per_s"])
        out += ["## Embedder, faces/s on one CPU thread", ""]
        out += _table(["batch", *keys], [[b, *[r["faces_per_s"][k] for k in keys]] for b, r in emb["by_batch"].items()])
        lp = emb["loop"]
        out += [f"Through the shared loop (batch {lp['max_batch_size']}): {lp['faces_per_s']['loop']:.1f} faces/s vs "
                f"{lp['faces_per_s']['forward_same_work']:.1f} for the bare forwards of the same faces.", ""]
    if mat := _res(doc, "matcher"):
        out += ["## Matcher, queries/s", ""]
        b64 = ["numpy", "search", "stage", "numpy_1thread", "search_1thread", "stage_1thread"]
        b1 = ["numpy", "search", "search_1thread"]
        out += ["Batches of 64 queries and single queries; `_1thread`: numpy's OpenBLAS held to one thread.", ""]
        out += _table(["identities", *[f"{k} (64)" for k in b64], *[f"{k} (1)" for k in b1], "index MB", "RSS +MB",
                       "build s"],
                      [[f"{int(n):,}", *[r["batch_64"]["queries_per_s"][k] for k in b64],
                        *[r["batch_1"]["queries_per_s"][k] for k in b1],
                        r["memory_mb"]["index_arrays"], r["memory_mb"]["rss_increase"], r["build_s"]]
                       for n, r in mat["by_size"].items()])
    if kaf := _res(doc, "kafka"):
        out += ["## Kafka transport of frames (frames/s, MB/s)", ""]
        rows = []
        for size, r in kaf["by_size"].items():
            for k in r["frames_per_s"]:
                rows.append([size, k, r["frames_per_s"][k], r["mb_per_s"][k]])
        out += _table(["frames", "client", "frames/s", "MB/s"], rows)
    if sec := _res(doc, "kafka_security"):
        out += [f"## Kafka over SASL_SSL (SCRAM-SHA-512) against plaintext, kafka-python, {sec['config']['size']}", ""]
        out += _table(["transfer", "frames/s", "MB/s"], [[k, v, sec["mb_per_s"][k]] for k, v in sec["frames_per_s"].items()])
        out += _table(["ratio SASL_SSL / plaintext", "produce", "consume"],
                      [["median of repeats", sec["ratio_sasl_ssl_to_plaintext"]["produce"],
                        sec["ratio_sasl_ssl_to_plaintext"]["consume"]]])
    out += _pipeline(doc)
    out += _keys(doc)
    if sc := _res(doc, "scale_out"):
        out += ["## Embedder scale-out (one group, 6 partitions)", ""]
        out += _table(["processes", "partitions each", "faces/s", "ratio to 1", "CPU cores used", "load 1m"],
                      [[k, "/".join(map(str, r["assigned_partitions"])), r["faces_per_s"], sc["throughput_ratio"][k],
                        r["cpu_cores_used"], "/".join(f"{x:.1f}" for x in r["load_average_1m"])]
                       for k, r in sc["by_processes"].items()])
    out += _profiles(doc)
    out += _notes(doc)
    if doc.get("plots"):
        out += ["## Plots", ""] + [f"- ![{p}]({p})" for p in doc["plots"]] + [""]
    return "\n".join(out)


def _keys(doc: dict) -> list[str]:
    """The detector's, the capacity's and the matcher rebuild's headline keys (goals in bench/headline.keys)."""
    out = []
    if d := doc.get("detector"):
        m = d["motion_gating"]
        out += ["## Detector against its raw MTCNN and against the previous detector", ""]
        out += _table(["loop_ratio (goal >= 0.90)", "speedup_vs_baseline", "same, the loop", "MTCNN batched / one by one",
                       "motion gating speedup", "frames detected with gating"],
                      [[d["loop_ratio"], d["speedup_vs_baseline"], d["speedup_vs_baseline_loop"],
                        d["mtcnn_batch_speedup"], m["speedup"], f"{m['detected_fraction']:.0%}"]])
        out += [f"Motion gating footage: {m['footage']}.", ""]
    if c := doc.get("capacity"):
        out += [f"## Capacity at {c['at']} (goal >= 4 cameras per core)", ""]
        out += _table(["cameras_per_core", "cameras held", "cores used", "marginal cameras per core"],
                      [[c["cameras_per_core"], c["cameras_held"], c["cores_used"], c["marginal_cameras_per_core"]]])
    if r := doc.get("matcher_rebuild"):
        out += [f"## The matcher's loop during a {r['identities']:,}-identity gallery reload", ""]
        out += _table(["contender", "longest loop stall s", "reload s"],
                      [[k, v["longest_stall_s"], v["reload_s"]] for k, v in r["by_contender"].items()])
    return out


def _pipeline(doc: dict) -> list[str]:
    pipe = _res(doc, "pipeline")
    if not pipe:
        return []
    c, cm = pipe["config"], pipe["cost_model"]
    out = [f"## Pipeline under load: {cm['resolution']}, {c['fps_cap']:g} fps per camera, {c['capture_s']:.0f} s "
           f"per load, one process per stage", ""]
    rows = []
    for r in pipe["runs"]:
        lat, cores = r["latency_s"], r["cpu_cores"]
        rows.append([r["cameras"], r["frames"]["offered_fps"], r["frames"]["processed"], r["frames"]["dropped_stale"],
                     r["lag"]["max"]["detector"], lat["face_capture_to_decision"]["p50"],
                     lat["face_capture_to_decision"]["p95"], lat["face_capture_to_decision"]["p99"],
                     lat["event_all"]["p99"], r["events"],
                     " / ".join(f"{cores[k]:.2f}" for k in ("ingest", "detector", "embedder", "matcher")),
                     " / ".join(f"{r['peak_rss_mb'][k]:.0f}" for k in ("ingest", "detector", "embedder", "matcher")),
                     "yes" if r["held"] else "no: " + r["verdict"]])
    out += _table(["cameras", "frames/s in", "processed", "stale", "max det. lag", "face p50 s", "p95", "p99",
                   "event p99 s", "events", "CPU cores ing/det/emb/mat", "peak MB ing/det/emb/mat", "held"], rows)
    fit = cm["fit"]
    out += [f"Largest camera count held with bounded lag: **{pipe['largest_cameras_held']}** (p99 capture -> "
            f"decision {_f(pipe['p99_face_latency_s_at_largest'])} s). Cost model at {cm['resolution']}, {cm['fps']:g} "
            f"fps: {_f(cm['per_camera_cores'], 3)} CPU cores per camera (median over held loads, idle cost "
            f"removed)" + (f"; fit: {fit['fixed_cores']:.3f} + {fit['per_camera_cores']:.3f} x cameras" if fit else "")
            + f"; detector {_f(cm['detector_cpu_ms_per_frame'], 1)} CPU ms per frame. Held means: {c['held_rule']}",
            ""]
    return out


def _profiles(doc: dict) -> list[str]:
    if not doc.get("profiles"):
        return []
    out = ["## Where the time goes (stages under 0.9)", ""]
    for stage, p in doc["profiles"].items():
        if "error" in p:
            out += [f"- **{stage}**: profile failed: {p['error']}"]
            continue
        prof = p["profile"]  # one profile, or one per mode (kafka: produce, consume)
        for label, prof in ([(p["target"], prof)] if "buckets" in prof else prof.items()):
            top = ", ".join(f"{b['where']} {b['share']:.0%}" for b in prof["buckets"][:6])
            out += [f"- **{stage}** ({label}, {prof['tool']}): {top}"]
    return out + [""]


def _notes(doc: dict) -> list[str]:
    """What the figures say, computed from them (so that each run's summary explains its own numbers)."""
    import statistics

    out = []
    emb, mat, kaf, pipe = (_res(doc, p) for p in ("embedder", "matcher", "kafka", "pipeline"))
    if emb and emb["config"]["flip_average"]:
        fw = statistics.median(r["ratio_to_forward"]["batch_fn"] for r in emb["by_batch"].values())
        sw = statistics.median(r["ratio_to_same_work"] for r in emb["by_batch"].values())
        lfw = {r["flip_average"]: r["accuracy_mean"] for r in doc["model"]["lfw_reports_same_model"]
               if r["dataset"] == "lfw-view2"}
        out.append(f"- Embedder: the stage runs at {fw:.2f} of one bare forward per face because the checkpoint "
                   f"averages each face with its mirror image (two forwards per face); against those two forwards "
                   f"it runs at {sw:.2f}." + (f" On LFW View 2 that averaging is worth {lfw[True]:.2%} against "
                                              f"{lfw[False]:.2%} without." if True in lfw and False in lfw else ""))
    if mat:
        small = min(mat["by_size"], key=int)
        q = mat["by_size"][small]["batch_64"]["queries_per_s"]
        out.append(f"- Matcher: numpy's OpenBLAS out of the box ({mat['config']['blas_threads_default']} threads) "
                   f"answered a batch of 64 queries over {int(small):,} identities at {q['numpy']:,.0f} queries/s, "
                   f"held to one thread at {q['numpy_1thread']:,.0f}; the whole stage went from {q['stage']:,.0f} to "
                   f"{q['stage_1thread']:,.0f} frames/s.")
    if kaf and "640x360" in kaf["by_size"]:
        f = kaf["by_size"]["640x360"]["frames_per_s"]
        out.append(f"- Kafka: kafka-python's producer with batch_size ~1 MB and its metrics off sent 640x360 frames "
                   f"{f['kafka_python_tuned_produce'] / f['kafka_python_produce']:.1f}x as fast as with its defaults "
                   f"({f['kafka_python_tuned_produce']:,.0f} vs {f['kafka_python_produce']:,.0f} frames/s; kcat "
                   f"{f['kcat_produce']:,.0f}).")
    if pipe:
        failed = [r for r in pipe["runs"] if not r["held"]]
        ms = pipe["cost_model"]["detector_cpu_ms_per_frame"]
        if failed and ms:
            r = failed[0]
            fps = pipe["config"]["fps_cap"]
            out.append(f"- Pipeline: at {r['cameras']} cameras the single-threaded detector used "
                       f"{r['cpu_cores']['detector']:.2f} of a core (the machine's other jobs held the rest: load "
                       f"{doc['machine']['load_average_start'][0]:g} on {doc['machine']['cores_logical']} cores). At "
                       f"{ms:.0f} CPU ms per frame a detector with a core of its own holds about {1000 / ms:.0f} "
                       f"frames/s, {1000 / ms / fps:.1f} cameras at {fps:g} fps; add detectors (partitions allow "
                       f"{pipe['config']['partitions']}) to go further.")
    return ["## Notes", "", *out, ""] if out else []
