"""Embedder scale-out: throughput with 1, 2 and 3 embedder processes in one consumer group.

Real `facestream embedder` processes (one torch thread each) share a 6-partition faces topic. After each
process joins, the benchmark waits until the group has rebalanced (every process holds some of the six
partitions), then puts M FrameFaces of real aligned crops on the topic, spread evenly over the partitions,
and times from the first send to the moment the embeddings topic holds all M outputs. The processes are
added one by one (the group rebalances each time, as under an autoscaler), so the counts run in sequence,
not interleaved: the load averages recorded beside each figure tell how much the machine changed.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Any

from bench.common import Settings, load_average
from bench.inputs import aligned_crop_sets, crop_jpegs, frame_faces
from bench.kafka_util import Offsets, Topics, delete_groups, produce, run_id
from bench.sampler import cpu_seconds
from services.local_pipeline import LocalPipeline, Service

PARTITIONS = 6
CAMERAS = [f"so-cam-{i}" for i in range(12)]


def start_embedder(pipe: LocalPipeline, faces: str, embeddings: str, group: str, label: str) -> Service:
    return pipe.start("embedder", "--faces-topic", faces, "--embeddings-topic", embeddings, "--group-id", group,
                      "--threads", "1", wait_ready=False, label=label)


def assigned(services: list[Service]) -> list[int]:
    return [int(s.metric("facestream_assigned_partitions")) for s in services]


def wait_balanced(services: list[Service], partitions: int, timeout_s: float = 90.0) -> list[int]:
    """Until every process holds some partitions and together they hold all, twice in a row (a process
    that is being revoked still reports its old count); returns the counts. Raises on timeout."""
    deadline, streak, got = time.monotonic() + timeout_s, 0, []
    while time.monotonic() < deadline:
        got = assigned(services)
        ok = sum(got) == partitions and all(n >= 1 for n in got)
        streak = streak + 1 if ok else 0
        if streak >= 2:
            return got
        time.sleep(0.5)
    raise RuntimeError(f"the group did not rebalance: assigned partitions per process {got}")


def wait_outputs(offsets: Offsets, topic: str, target: int, timeout_s: float) -> float:
    """Seconds until `topic` holds `target` messages (polled every 50 ms)."""
    t0 = time.monotonic()
    while offsets.end(topic) < target:
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{topic}: {offsets.end(topic)} of {target} outputs after {timeout_s:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def run(settings: Settings, detector) -> dict[str, Any]:
    counts = (1, 2) if settings.quick else (1, 2, 3)
    n_frames, faces_per_frame = (48, 2) if settings.quick else (180, 2)
    repeats = 1 if settings.quick else 2
    sets = aligned_crop_sets(detector)  # a fused model's faces carry each tower's crop
    jpegs, more = crop_jpegs(sets[0]), (crop_jpegs(sets[1]) if len(sets) > 1 else None)
    env = {"FACESTREAM_KAFKA_BOOTSTRAP": settings.bootstrap}
    if settings.model is not None:
        env["FACESTREAM_MODEL"] = str(settings.model)
    pipe = LocalPipeline(settings.out / "logs" / "scale_out", env=env)
    group, seq, by_count = f"bench-scale-{run_id()}", [0], {}
    with Topics(settings.kafka) as topics:
        faces, embs = topics.make("bench-so-faces", PARTITIONS), topics.make("bench-so-emb", PARTITIONS)
        offsets = Offsets(settings.kafka)

        def put(n: int) -> int:
            """Produce n frames; returns the output count to wait for."""
            target = offsets.end(embs) + n
            msgs = frame_faces(jpegs, n, faces_per_frame, CAMERAS, seq[0], more_jpegs=more)
            seq[0] += n
            produce(settings.kafka, faces, [m.encode() for m in msgs], [m.camera_id.encode() for m in msgs],
                    partitions=PARTITIONS)
            return target

        try:
            procs: list[Service] = []
            for k in counts:
                procs.append(start_embedder(pipe, faces, embs, group, f"embedder-{k}"))
                pipe.wait_ready(procs[-1], timeout_s=180)
                split = wait_balanced(procs, PARTITIONS)
                wait_outputs(offsets, embs, put(4 * PARTITIONS), 120)  # warm-up: model kernels, fetch sessions
                secs, cores, loads = [], [], []
                for _ in range(repeats):
                    loads.append(load_average()[0])
                    cpu0 = sum(cpu_seconds(p.proc.pid) for p in procs)
                    t0 = time.monotonic()
                    target = put(n_frames)
                    wait_outputs(offsets, embs, target, 300)
                    secs.append(time.monotonic() - t0)
                    cores.append((sum(cpu_seconds(p.proc.pid) for p in procs) - cpu0) / secs[-1])
                sec = statistics.median(secs)
                by_count[str(k)] = {"processes": k, "assigned_partitions": split, "seconds": secs,
                                    "frames_per_s": n_frames / sec, "faces_per_s": n_frames * faces_per_frame / sec,
                                    "cpu_cores_used": statistics.median(cores), "load_average_1m": loads}
        finally:
            offsets.close()
            codes = pipe.stop()
            delete_groups(settings.kafka, [group])
    base = by_count[str(counts[0])]["faces_per_s"]
    return {
        "config": {"processes": list(counts), "partitions": PARTITIONS, "frames_per_measurement": n_frames,
                   "faces_per_frame": faces_per_frame, "repeats": repeats, "torch_threads_per_process": 1,
                   "cores": os.cpu_count()},
        "method": "processes added one at a time; after each rebalance and a warm-up batch, the median over "
                  "repeats of the time from the first send to the last output; ratio = faces/s with k "
                  "processes over faces/s with one",
        "by_processes": by_count,
        "throughput_ratio": {k: v["faces_per_s"] / base for k, v in by_count.items()},
        "exit_codes": codes,
    }
