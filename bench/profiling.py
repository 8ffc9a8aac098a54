"""Where the time goes, for every stage measured under 0.9 of its raw component.

Single-threaded batch functions are profiled in this process with cProfile (deterministic; the numbers
are self time per function). kafka-python does its network I/O on a background thread that cProfile does
not see, so its transfers are profiled with py-spy (sampling every thread) on a child process running
`python -m bench.profiling kafka-produce|kafka-consume ...`. Either way the functions are grouped into
a few readable buckets (the model, MTCNN's Python code, each OpenCV call, msgpack, kafka-python, ...).
"""
from __future__ import annotations

import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from bench.common import ROOT


def bucket(filename: str, func: str) -> str:
    """A readable name for where a function's self time belongs."""
    f = filename.replace("\\", "/")
    if not func:
        return "no Python frame (interpreter start-up/shutdown, C code)"
    if "_thread.lock" in func:
        return "waiting on another thread (lock)"
    if "time.sleep" in func:
        return "sleeping (kafka-python back-off, group join)"
    if "cv2." in func:
        return "OpenCV " + func.split("cv2.")[-1].rstrip(">")
    for key, name in (("kafka/metrics", "kafka-python's own client metrics (sensors)"),
                      ("kafka/record", "kafka-python record encoding/decoding (crc, varints)"),
                      ("facenet_pytorch", "MTCNN (facenet-pytorch Python code)"), ("torch", "torch (model compute)"),
                      ("msgpack", "msgpack"), ("kafka", "kafka-python"), ("prometheus_client", "prometheus metrics"),
                      ("numpy", "numpy"), ("selectors", "waiting on the broker (select)"),
                      ("threading", "waiting on another thread"), ("socket", "socket I/O")):
        if key in f or key in func:
            return name
    if str(ROOT) in f or f.startswith(("services/", "shared/", "training/", "bench/")):
        rel = f.split(str(ROOT) + "/")[-1]
        return f"facestream {rel}:{func}"
    return "other: " + (func if f == "~" else f"{Path(f).name}:{func}")


def _summary(self_times: Counter, total: float, top: int) -> dict[str, Any]:
    grouped = Counter()
    for (filename, func), t in self_times.items():
        grouped[bucket(filename, func)] += t
    return {"total_s": total,
            "buckets": [{"where": k, "seconds": v, "share": v / total if total else 0.0}
                        for k, v in grouped.most_common(top)],
            "functions": [{"where": f"{Path(fn).name}:{func}", "seconds": v, "share": v / total if total else 0.0}
                          for (fn, func), v in self_times.most_common(top)]}


def cprofile(fn: Callable[[], Any], min_seconds: float = 2.0, top: int = 10) -> dict[str, Any]:
    """Run `fn` under cProfile until at least `min_seconds` have passed; self time grouped into buckets."""
    prof = cProfile.Profile()
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < min_seconds or calls == 0:
        prof.enable()
        fn()
        prof.disable()
        calls += 1
    st = pstats.Stats(prof)
    self_times = Counter({(k[0], k[2]): v[2] for k, v in st.stats.items()})  # type: ignore[attr-defined]
    out = _summary(self_times, sum(self_times.values()), top)
    out.update(tool="cProfile", calls=calls)
    return out


def pyspy(args: list[str], top: int = 10) -> dict[str, Any]:
    """Run `python -m bench.profiling ARGS` under `py-spy record` (all threads; samples taken while
    importing are dropped); self time is the count of samples whose innermost frame is each function."""
    spy = Path(sys.executable).parent / "py-spy"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stacks.txt"
        subprocess.run([str(spy), "record", "--format", "raw", "--rate", "250", "-o", str(out), "--",
                        sys.executable, "-m", "bench.profiling", *args], cwd=ROOT, check=True,
                       capture_output=True, timeout=300)
        self_times: Counter = Counter()
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if "<frozen importlib" in stack:  # the child's imports: start-up, not the transfer
                continue
            leaf = stack.split(";")[-1]  # "func (file:line)"
            func, _, where = leaf.partition(" (")
            self_times[(where.rsplit(":", 1)[0], func)] += int(count) / 250
    res = _summary(self_times, sum(self_times.values()), top)
    res.update(tool="py-spy (all threads, idle excluded)")
    return res


def _kafka_child(mode: str, bootstrap: str, topic: str, payload_file: str, n: int) -> None:
    """The transfer that bench.kafka_transport times for kafka-python, alone in a process. The payloads
    were written by the parent (a msgpack list), so that no video decoding lands in the profile."""
    import msgpack

    from bench import kafka_transport

    if mode == "kafka-produce":
        distinct = msgpack.unpackb(Path(payload_file).read_bytes())
        kafka_transport._kp_produce(bootstrap, topic, [distinct[i % len(distinct)] for i in range(n)])
    else:
        kafka_transport._kp_consume(bootstrap, topic, 0, n)


def kafka_profiles(bootstrap: str, size: str, n: int) -> dict[str, Any]:
    """py-spy profiles of kafka-python producing then consuming n frames of `size` on a fresh topic."""
    import msgpack

    from bench.inputs import frame_messages, video_frames
    from bench.kafka_util import Topics

    payloads = [m.encode() for m in frame_messages(video_frames(size, 20), "bench-cam")]
    with Topics(bootstrap) as topics, tempfile.TemporaryDirectory() as tmp:
        topic = topics.make("bench-profile-kafka", 1)
        path = Path(tmp) / "payloads.msgpack"
        path.write_bytes(msgpack.packb(payloads))
        return {mode: pyspy([mode, bootstrap, topic, str(path), str(n)])
                for mode in ("kafka-produce", "kafka-consume")}


if __name__ == "__main__":
    _kafka_child(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
