"""The whole pipeline under load: N simulated cameras through ingest, detector, embedder and matcher.

One detector, one embedder and one matcher (one torch thread each, as the tests and the demo run them)
serve the whole part; each load is one ingest process with N file cameras played at their real frame
rate, capped to `fps` and scaled to `width`, for `capture_s` seconds, then the pipeline drains and the
matcher ends the cameras' tracks before the next load starts. Per load: capture -> decision latency
(per face, from the matcher's facestream_end_to_end_latency_seconds histogram; per event, event_ts -
last_seen of the identity events), frames processed vs dropped as stale, consumer lag over time (from
group offsets, every second), CPU cores and peak memory per service, and whether the load held.
"""
from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path
from typing import Any

from bench import cost_model, promtext
from bench.common import DATA, Settings, percentile
from bench.inputs import looped_clip
from bench.kafka_util import Offsets
from bench.pipeline_rig import PipelineRig, enroll
from bench.sampler import Sampler, cpu_seconds, peak_rss_mb

CLIP = "hamilton_lin_manuel_miranda_9s.mp4"  # 640x360 at 30 fps, faces in most frames
E2E = "facestream_end_to_end_latency_seconds"
TRACK_END_WAIT_S = 4.0  # the matcher ends a quiet camera's tracks after track_max_gap_s (2) + 1 s


def _scrape(services: dict) -> dict[str, list[promtext.Sample]]:
    return {name: promtext.parse(svc.get("/metrics", timeout=10)[1]) for name, svc in services.items()}


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _wait_drained(offsets: Offsets, rig: PipelineRig, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if all(offsets.lag(g.group, g.topic) == 0 for g in rig.lag_groups()):
            return True
        time.sleep(0.5)
    return False


def _pcts(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), **{f"p{q}": percentile(values, q) for q in (50, 95, 99)}}


def one_load(rig: PipelineRig, services: dict, sampler: Sampler, offsets: Offsets, n: int, clip: Path,
             fps: float, width: int, capture_s: float) -> dict[str, Any]:
    cams = {f"cam-n{n}-{i}": clip for i in range(n)}
    before = _scrape(services)
    cpu0 = {k: cpu_seconds(s.proc.pid) for k, s in services.items()}
    published0, child0 = offsets.end(rig.frames), _children_cpu()
    t_start = time.monotonic()
    ingest = rig.ingest(cams, fps, width, int(fps * capture_s), label=f"ingest-n{n}")
    sampler.track("ingest", ingest.proc.pid)
    code = ingest.proc.wait(timeout=capture_s + 120)  # reaped here: its CPU lands in RUSAGE_CHILDREN
    t_cap = time.monotonic()
    sampler.untrack("ingest")
    cpu1 = {k: cpu_seconds(s.proc.pid) for k, s in services.items()}
    ingest_cpu = _children_cpu() - child0
    drained = _wait_drained(offsets, rig, limit_s=120)
    time.sleep(TRACK_END_WAIT_S)
    t_end = time.monotonic()
    after = _scrape(services)
    if code != 0:
        raise RuntimeError(f"ingest for {n} cameras exited with {code}:\n{ingest.log_tail()}")

    def delta(svc: str, name: str, **labels: str) -> float:
        return promtext.total(after[svc], name, **labels) - promtext.total(before[svc], name, **labels)

    published = offsets.end(rig.frames) - published0
    consumed = delta("detector", "facestream_messages_in_total")
    stale = delta("detector", "facestream_stale_dropped_total")
    wall = t_cap - t_start
    window = sampler.between(t_start, t_end)
    half = t_start + wall / 2
    late = [s.lag["detector"] for s in window if half <= s.t <= t_cap]
    shed = delta("detector", "facestream_frames_shed_total")
    unchanged = delta("detector", "facestream_frames_unchanged_total")
    v = cost_model.verdict(n, fps, stale / max(consumed, 1), late, shed_fraction=shed / max(consumed, 1))
    e2e = promtext.buckets(after["matcher"], E2E, "camera_id", set(cams))
    # decisions only: a visit-ended event comes a visit gap after the last face, not from a decision
    events = [r.event for r in rig.collector.events if r.event.camera_id in cams and r.event.kind != "visit-ended"]
    ev_lat = [e.event_ts - e.last_seen for e in events]
    cores = {k: (cpu1[k] - cpu0[k]) / wall for k in services}
    cores["ingest"] = ingest_cpu / wall
    cores["total"] = sum(cores.values())
    ingest_rss = [s.rss_mb.get("ingest", 0.0) for s in window]
    return {
        "cameras": n, "capture_s": wall, "drained": drained, "held": v.held, "verdict": v.reason,
        "frames": {"published": published, "offered_fps": published / wall, "consumed_by_detector": consumed,
                   "processed": consumed - stale, "dropped_stale": stale, "stale_fraction": stale / max(consumed, 1),
                   "shed": shed, "unchanged_by_motion_gating": unchanged,
                   "detected": consumed - stale - shed - unchanged,
                   "faces_kept": delta("detector", "facestream_faces_per_frame_sum", stage="detector"),
                   "faces_embedded": delta("embedder", "facestream_faces_embedded_total"),
                   "frames_matched": delta("matcher", "facestream_messages_in_total")},
        "latency_s": {
            "face_capture_to_decision": {"source": f"{E2E} buckets of this load's cameras, interpolated",
                                         "n": e2e.get(float("inf"), 0.0),
                                         **{f"p{q}": promtext.quantile(e2e, q / 100) for q in (50, 95, 99)}},
            "event_all": {"source": "identity events: event_ts - last_seen", **_pcts(ev_lat)},
            "event_identified": {"source": "identity events naming someone (decided on a face, not on a "
                                           "track's end)",
                                 **_pcts([x for x, e in zip(ev_lat, events) if e.identity is not None])},
        },
        "events": len(events),
        "lag": {"bound": v.lag_bound,
                "max": {st: max((s.lag[st] for s in window), default=0) for st in ("detector", "embedder", "matcher")},
                "series": [[round(s.t - t_start, 2), s.lag["detector"], s.lag["embedder"], s.lag["matcher"]]
                           for s in window],
                "series_columns": ["t_s", "detector", "embedder", "matcher"]},
        "cpu_cores": cores,
        "peak_rss_mb": {**{k: peak_rss_mb(s.proc.pid) for k, s in services.items()},
                        "ingest": max(ingest_rss, default=0.0)},
    }


def run(settings: Settings, detector, model, threshold: float) -> dict[str, Any]:
    counts = (1, 2) if settings.quick else (1, 2, 3, 4, 6, 8)
    capture_s = 8.0 if settings.quick else 30.0
    fps, width = settings.fps, settings.width
    clip = DATA / "videos" / CLIP if settings.quick else looped_clip(CLIP, 3)  # 10 s, or 30 s looped
    rig = PipelineRig(settings.bootstrap, settings.redis_url, settings.out / "logs" / "pipeline", threshold,
                      settings.model, kafka=settings.kafka)
    runs, sampler, offsets = [], None, None
    try:
        people = enroll(settings.redis_url, rig.prefix, detector, model, DATA / "videos" / "enroll")
        services = rig.start()
        sampler = Sampler(settings.kafka, rig.lag_groups())
        for k, s in services.items():
            sampler.track(k, s.proc.pid)
        sampler.start()
        offsets = Offsets(settings.kafka)
        c0, t0 = {k: cpu_seconds(s.proc.pid) for k, s in services.items()}, time.monotonic()
        time.sleep(3.0)  # what the services cost doing nothing (polls, metrics, heartbeats)
        idle = {k: (cpu_seconds(s.proc.pid) - c0[k]) / (time.monotonic() - t0) for k, s in services.items()}
        for n in counts:
            runs.append(one_load(rig, services, sampler, offsets, n, clip, fps, width, capture_s))
    finally:
        if offsets is not None:
            offsets.close()
        if sampler is not None:
            sampler.stop()
        codes = rig.close()
    best = cost_model.largest_held(runs)
    at_best = next((r for r in runs if r["cameras"] == best), None)
    cost = cost_model.per_camera_cost(runs, sum(idle.values()))
    det_ms = [1000 * r["cpu_cores"]["detector"] * r["capture_s"] / max(r["frames"]["processed"], 1)
              for r in runs if r["held"]]
    return {
        "config": {"cameras": list(counts), "capture_s": capture_s, "fps_cap": fps, "width": width,
                   "clip": CLIP, "clip_size": "640x360", "clip_fps": 30, "detectors": 1, "embedders": 1,
                   "matchers": 1, "torch_threads_per_service": 1, "partitions": 4, "gallery_people": people,
                   "threshold": threshold, "max_frame_age_ms": 5000, "held_rule": cost_model.HELD_RULE},
        "method": "one run per camera count, in increasing order, on one set of services; CPU from psutil "
                  "(user+system) over the capture window; peak memory = VmHWM of each service (ingest: the "
                  "largest sampled RSS); lag from group offsets every second",
        "idle_cores": idle,
        "runs": runs,
        "largest_cameras_held": best,
        "p99_face_latency_s_at_largest": at_best["latency_s"]["face_capture_to_decision"]["p99"] if at_best else None,
        "cost_model": {**cost, "resolution": f"{width}x{round(width * 9 / 16)}", "fps": fps,
                       "detector_cpu_ms_per_frame": statistics.median(det_ms) if det_ms else None,
                       "cameras_per_core": (1 / cost["per_camera_cores"]
                                            if (cost["per_camera_cores"] or 0) > 0 else None)},
        "exit_codes": codes,
        "service_restarts": rig.restarts,
    }
