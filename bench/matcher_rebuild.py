"""The matcher's loop while its gallery of 1M identities is re-read from Redis and rebuilt beside it.

A real Redis holds a synthetic gallery (random unit vectors of the shipped model's 320 dimensions, one per
person, written in the gallery's own layout). The matcher's sync thread reloads it the way the service
does (`GalleryStore.load` then `GalleryIndex.build`), while the main thread runs the matcher's batch
function in a loop on a small index, as the service's loop keeps serving the old index during a reload.
The figure is the longest gap between two loop iterations during the reload, beside the loop's median
iteration with no reload. Contenders, in one run: `process` (what ships from 20,000 people: the reload in
a child process, services/matcher/index_process.py), `chunked` (in the sync thread, 2,000 people a
pipeline and 10,000 a build step: what ships for smaller galleries) and `one_shot` (the previous way: in
the thread, one pipeline of every person, one build call).
"""
from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import numpy as np
import redis

from bench.common import Settings
from shared.schemas import EmbeddedFace, FrameEmbeddings

DIM = 320  # the shipped fused model's dimension
SIZE, QUICK_SIZE = 1_000_000, 100_000
SIZE_OVERRIDE: int | None = None  # tests and quick checks


def seed(r: redis.Redis, prefix: str, n: int, rng: np.random.Generator) -> None:
    """n people in the gallery layout of services/matcher/gallery_store.py, written in pipelines."""
    import json

    meta = json.dumps({"model_version": "bench", "created": 0.0, "updated": 0.0, "sources": []})
    for i in range(0, n, 10_000):
        vecs = rng.standard_normal((min(10_000, n - i), DIM), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        with r.pipeline(transaction=False) as pipe:
            names = [f"p{i + k:07d}" for k in range(len(vecs))]
            pipe.sadd(f"{prefix}:people", *names)
            for name, v in zip(names, vecs):
                pipe.hset(f"{prefix}:person:{name}", "meta", meta)
                pipe.hset(f"{prefix}:emb:{name}", "e0", v.astype("<f4").tobytes())
            pipe.execute()
    r.set(f"{prefix}:version", 1)


def _loop_gaps(stop: threading.Event, process, frames) -> list[float]:
    gaps, last = [], time.perf_counter()
    while not stop.is_set():
        process(frames)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    return gaps


def measure(store, process, frames, how: str, baseline_s: float = 2.0) -> dict[str, Any]:
    from services.matcher.index import GalleryIndex
    from services.matcher.index_process import load_index

    stop = threading.Event()
    base = {"gaps": []}
    t = threading.Thread(target=lambda: base.update(gaps=_loop_gaps(stop, process, frames)))
    t.start()
    time.sleep(baseline_s)
    stop.set()
    t.join()
    out: dict[str, Any] = {}

    def rebuild() -> None:
        try:
            reload()
        except BaseException as e:  # noqa: BLE001 (recorded: the measure fails with it)
            out["error"] = e
        finally:
            stop.set()

    def reload() -> None:
        t0 = time.perf_counter()
        if how == "process":
            index, _ = load_index(store, "bench")
        else:
            kw = {} if how == "chunked" else {"chunk": 1 << 62}
            version, people, _ = store.load("bench", **kw)
            index = GalleryIndex.build(people, version, "bench", **kw)
        out.update(reload_s=time.perf_counter() - t0, identities=len(index))

    stop.clear()
    worker = threading.Thread(target=rebuild, name="gallery-sync")
    worker.start()
    gaps = _loop_gaps(stop, process, frames)
    worker.join()
    if "error" in out:
        raise RuntimeError(f"the {how} reload failed") from out["error"]
    return {**out, "loop_iterations": len(gaps), "longest_stall_s": max(gaps),
            "p99_iteration_s": float(np.percentile(gaps, 99)),
            "median_iteration_s_without_rebuild": statistics.median(base["gaps"]),
            "longest_iteration_s_without_rebuild": max(base["gaps"])}


def run(settings: Settings) -> dict[str, Any]:
    from services.matcher.gallery_store import GalleryStore
    from services.matcher.index import GalleryIndex
    from services.matcher.stage import Matcher
    from services.matcher.tracks import TrackPolicy

    n = SIZE_OVERRIDE or (QUICK_SIZE if settings.quick else SIZE)
    rng = np.random.default_rng(3)
    prefix = f"bench-rebuild-{int(time.time())}"
    r = redis.Redis.from_url(settings.redis_url)
    small = {f"s{i}": v[None] for i, v in enumerate(rng.standard_normal((1000, DIM)).astype(np.float32))}
    index = GalleryIndex.build(small, 1, "bench")
    matcher = Matcher(lambda: index, 0.5, "bench", "unused", TrackPolicy(min_continuity=0.45))
    q = index.matrix[:16] + 0.01
    frames = [FrameEmbeddings(f"cam-{i}", 0, time.time(), 640, 360, "bench",
                              (EmbeddedFace((100.0, 100.0, 220.0, 240.0), 0.99, v / np.linalg.norm(v)),))
              for i, v in enumerate(q)]
    t0 = time.perf_counter()
    try:
        seed(r, prefix, n, rng)
        seed_s = time.perf_counter() - t0
        store = GalleryStore(r, prefix)
        # what ships first, in a process that has not yet held a million-person read (gc, allocator)
        res = {how: measure(store, matcher.process, frames, how) for how in ("process", "chunked", "one_shot")}
    finally:
        keys = list(r.scan_iter(f"{prefix}:*", count=10_000))
        for i in range(0, len(keys), 10_000):
            r.delete(*keys[i:i + 10_000])
    return {
        "config": {"identities": n, "dim": DIM, "loop": "Matcher.process of 16 one-face frames on a 1,000-person "
                   "index", "seed_s": seed_s},
        "method": "the main thread loops the matcher's batch function while a thread reloads the gallery from "
                  "Redis and builds the index, as the service's sync thread does; longest_stall_s = the longest "
                  "loop iteration during the reload (the loop's own iteration is median_iteration_s_without_"
                  "rebuild, measured just before, 2 s)",
        "contenders": res,
        "longest_stall_s": res["process"]["longest_stall_s"],
        "stall_ratio_one_shot_over_process": res["one_shot"]["longest_stall_s"] / res["process"]["longest_stall_s"],
    }
