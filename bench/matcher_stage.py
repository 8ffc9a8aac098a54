"""Matcher against a bare vectorized top-1, at gallery sizes 1k, 100k and 1M, with the memory it holds.

The gallery is synthetic: random unit vectors of the model's dimension, one per identity (a size sweep
needs no real faces: the search costs the same whatever the vectors hold). Queries are gallery rows plus
noise, so that they match and the matcher's tracks grow as they would on a real camera.
Contenders per size, interleaved per repeat, for a batch of Q queries (Q = the matcher's 64 frames of one
face each, and Q = 1 for a single face):
  numpy      scores = q @ M.T; best = argmax; the raw component;
  search     GalleryIndex.search (the same plus the owner and name look-up);
  stage      Matcher.process on Q FrameEmbeddings: search, threshold, tracks, votes, events (Q = 64 only).
Each also runs as `<name>_1thread` with numpy's OpenBLAS held to one thread (bench.blas): out of the box
OpenBLAS starts a thread per core, which on this shared machine made small products erratic (0.1 ms or
20 ms for the same call, depending on whether someone else's job held the other core).
"""
from __future__ import annotations

import gc
import resource
import time
from typing import Any

import numpy as np
import psutil

from bench import blas
from bench.common import Settings, interleaved, ratio, stats
from shared.schemas import EmbeddedFace, FrameEmbeddings

SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 100_000)
Q = 64
DIM = 128


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def build_index(n: int, rng: np.random.Generator):
    """A GalleryIndex of n identities through the matcher's own builder; (index, build seconds, MB held)."""
    from services.matcher.index import GalleryIndex

    gc.collect()
    before = _rss_mb()
    vecs = rng.standard_normal((n, DIM), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    people = {f"person-{i:07d}": vecs[i:i + 1] for i in range(n)}
    t0 = time.perf_counter()
    index = GalleryIndex.build(people, version=1, model_version="bench")
    seconds = time.perf_counter() - t0
    del people, vecs
    gc.collect()
    return index, seconds, _rss_mb() - before


def _frames(queries: np.ndarray, t: float, cameras: int = 16) -> list[FrameEmbeddings]:
    """One face per frame; camera i sees the same person at the same place, so each camera holds one track."""
    out = []
    for i, q in enumerate(queries):
        cam = i % cameras
        out.append(FrameEmbeddings(f"bench-cam-{cam}", i, t, 640, 360, "bench",
                                   (EmbeddedFace((100.0, 100.0, 220.0, 240.0), 0.99, q),)))
    return out


def _ratios(times: dict[str, list[float]]) -> dict[str, float]:
    """Each contender against numpy under the same thread setting (`x_1thread` against `numpy_1thread`),
    and numpy on one thread against numpy out of the box."""
    out = {k: ratio(times["numpy_1thread" if k.endswith("_1thread") else "numpy"], times[k])
           for k in times if not k.startswith("numpy")}
    out["numpy_1thread"] = ratio(times["numpy"], times["numpy_1thread"])
    return out


def run(settings: Settings) -> dict[str, Any]:
    from services.matcher.stage import Matcher
    from services.matcher.tracks import TrackPolicy

    rng = np.random.default_rng(0)
    repeats = 3 if settings.quick else 5
    by_size: dict[str, Any] = {}
    for n in (QUICK_SIZES if settings.quick else SIZES):
        index, build_s, held_mb = build_index(n, rng)
        picks = rng.integers(0, n, 16)  # 16 cameras, one person each
        base = index.matrix[picks]
        noise = rng.standard_normal((Q, DIM), dtype=np.float32) * 0.02
        queries = base[np.arange(Q) % 16] + noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        matcher = Matcher(lambda: index, 0.5, "bench", "unused", TrackPolicy(min_continuity=0.45))
        clock = [time.time()]

        def numpy_top1(q: np.ndarray):
            s = q @ index.matrix.T
            best = s.argmax(axis=1)
            return best, s[np.arange(len(q)), best]

        def stage() -> None:
            clock[0] += 0.2  # capture time moves on like a 5 fps camera
            matcher.process(_frames(queries, clock[0]))

        def one_thread(fn):
            def call() -> None:
                with blas.threads(1):
                    fn()
            return call

        batch = {"numpy": lambda: numpy_top1(queries), "search": lambda: index.search(queries), "stage": stage}
        single = {"numpy": lambda: numpy_top1(queries[:1]), "search": lambda: index.search(queries[:1])}
        times = interleaved({**batch, **{f"{k}_1thread": one_thread(f) for k, f in batch.items()}}, repeats)
        single = interleaved({**single, **{f"{k}_1thread": one_thread(f) for k, f in single.items()}}, repeats)
        names, _ = index.search(queries)
        assert names == [index.names[p] for p in picks[np.arange(Q) % 16]], "the search found the wrong people"
        by_size[str(n)] = {
            "identities": n, "build_s": build_s,
            "memory_mb": {"index_arrays": (index.matrix.nbytes + index.owner.nbytes) / 2**20,
                          "rss_increase": held_mb,
                          "scores_per_batch_of_64": Q * n * 4 / 2**20},
            "batch_64": {"queries_per_s": {k: Q / stats(v)["median"] for k, v in times.items()},
                         "ms_per_batch": {k: stats([t * 1000 for t in v]) for k, v in times.items()},
                         "ratio_to_numpy": _ratios(times)},
            "batch_1": {"queries_per_s": {k: 1 / stats(v)["median"] for k, v in single.items()},
                        "ms_per_query": {k: stats([t * 1000 for t in v]) for k, v in single.items()},
                        "ratio_to_numpy": _ratios(single)},
        }
        del index, matcher
        gc.collect()
    return {
        "config": {"sizes": list(QUICK_SIZES if settings.quick else SIZES), "dim": DIM, "queries_per_batch": Q,
                   "repeats": repeats, "blas_threads_default": blas.get_threads(),
                   "blas_threads_settable": blas.available()},
        "method": "contenders interleaved per repeat after one warm-up round; queries/s from the median "
                  "repeat; ratio = median over repeats of numpy time / contender time, with numpy under the "
                  "same OpenBLAS thread setting (numpy_1thread: against numpy out of the box). memory: index_arrays "
                  "= matrix + owner bytes; rss_increase = this process's resident size after building (names "
                  "included) minus before; scores_per_batch_of_64 = the transient (Q, N) float32 score matrix, "
                  "computed",
        "raw_component": "numpy",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "by_size": by_size,
    }


def profile_target(settings: Settings, n: int = 100_000):
    from services.matcher.stage import Matcher
    from services.matcher.tracks import TrackPolicy

    rng = np.random.default_rng(1)
    index, _, _ = build_index(n, rng)
    q = index.matrix[np.arange(Q) % 16] + 0.01
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    matcher = Matcher(lambda: index, 0.5, "bench", "unused", TrackPolicy(min_continuity=0.45))
    return lambda: matcher.process(_frames(q, time.time()))
