"""A background sampler for the pipeline benchmark: CPU and memory of each service, and consumer lag.

Every `interval_s` it records, per service process (psutil on its PID), cumulative CPU seconds (user +
system) and resident memory, and per stage the lag of its consumer group computed from offsets
(end offsets of the input topic minus the group's committed offsets): exact, at this resolution, unlike
the services' own lag gauges, which refresh every 5 s.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.kafka_util import Offsets


@dataclass(frozen=True)
class GroupTopic:
    stage: str
    group: str
    topic: str


@dataclass
class Sample:
    t: float  # monotonic seconds
    cpu_s: dict[str, float]
    rss_mb: dict[str, float]
    lag: dict[str, int]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident size since it started (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


@dataclass
class Sampler:
    bootstrap: str
    groups: list[GroupTopic]
    interval_s: float = 1.0
    pids: dict[str, int] = field(default_factory=dict)  # service name -> pid; may change between samples
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._offsets = Offsets(self.bootstrap)
        self._thread.start()
        return self

    def track(self, name: str, pid: int) -> None:
        with self._lock:
            self.pids[name] = pid

    def untrack(self, name: str) -> None:
        with self._lock:
            self.pids.pop(name, None)

    def _sample(self) -> Sample:
        with self._lock:
            pids = dict(self.pids)
        cpu, rss = {}, {}
        for name, pid in pids.items():
            try:
                p = psutil.Process(pid)
                t = p.cpu_times()
                cpu[name], rss[name] = t.user + t.system, p.memory_info().rss / 2**20
            except psutil.Error:  # the process just ended (ingest at the end of its clip)
                continue
        lag = {g.stage: self._offsets.lag(g.group, g.topic) for g in self.groups}
        s = Sample(time.monotonic(), cpu, rss, lag)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception:  # one failed admin request must not end the sampling; the next one retries
                pass
            self._stop.wait(self.interval_s)

    def between(self, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.t <= t1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._offsets.close()
