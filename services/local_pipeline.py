"""Run the four services as local processes: what `make demo`, the end-to-end tests and the benchmarks use.

Each service is a real `facestream <service>` process talking to the real broker and Redis; this module
only starts them with free metrics ports, waits until each answers /readyz, reads their metrics, and stops
them with SIGTERM (so they commit and leave their groups) or SIGKILL (to test that nothing is lost).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shared.kafka_clients import Access, make_consumer

ROOT = Path(__file__).resolve().parent.parent
FACESTREAM = [sys.executable, "-m", "services.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    metrics_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait(self, timeout_s: float) -> int:
        """The exit status; a process still running after `timeout_s` is killed and reported with its log."""
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise RuntimeError(f"{self.name} did not stop within {timeout_s} s:\n{self.log_tail()}") from None

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total


@dataclass
class LocalPipeline:
    """Start services with `start(name, *args)`; `stop()` ends them all."""
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    def start(self, name: str, *args: str, wait_ready: bool = True, timeout_s: float = 120.0,
              label: str | None = None) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        label = label or f"{name}-{len([s for s in self.services if s.name.startswith(name)])}"
        log_path = self.log_dir / f"{label}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([*FACESTREAM, name, "--metrics-port", str(port), *args], cwd=ROOT, env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        svc = Service(label, proc, port, log_path)
        self.services.append(svc)
        if wait_ready:
            self.wait_ready(svc, timeout_s)
        return svc

    def wait_ready(self, svc: Service, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if svc.proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited with status {svc.proc.returncode}:\n{svc.log_tail()}")
            if svc.get("/readyz")[0] == 200:
                return
            time.sleep(0.3)
        raise RuntimeError(f"{svc.name} not ready after {timeout_s:.0f}s:\n{svc.log_tail()}")

    def wait_drained(self, quiet_s: float = 4.0, limit_s: float = 180.0) -> bool:
        """Until no consuming stage has taken a message for `quiet_s`; False if that took over `limit_s`."""
        stages = [s for s in self.services if not s.name.startswith("ingest") and s.proc.poll() is None]
        start = last = time.monotonic()
        counts = None
        while time.monotonic() - last < quiet_s:
            if time.monotonic() - start > limit_s:
                return False
            time.sleep(0.5)
            now = [s.metric("facestream_messages_in_total") for s in stages]
            if now != counts:
                counts, last = now, time.monotonic()
        return True

    def kill(self, svc: Service) -> None:
        os.killpg(svc.proc.pid, signal.SIGKILL)
        svc.proc.wait(10)

    def stop(self, svc: Service | None = None, timeout_s: float = 30.0) -> dict[str, int]:
        """SIGTERM (graceful: the batch in hand is committed), SIGKILL after `timeout_s`; exit codes by name."""
        targets = [svc] if svc else list(reversed(self.services))
        for s in targets:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        codes = {}
        for s in targets:
            try:
                codes[s.name] = s.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(s.proc.pid, signal.SIGKILL)
                codes[s.name] = s.proc.wait(10)
        return codes


def clip_frames(clip: Path, fps_cap: float) -> int:
    """How many frames ingest publishes for one play of a video file at a frame-rate cap."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    count, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS) or 30.0
    cap.release()
    return max(1, int(count * min(1.0, fps_cap / fps)))


def reset_groups_to_latest(access: Access, groups: dict[str, str]) -> None:
    """Commit the end offsets of each group's topic ({group: topic}): the group starts from now, as
    `kafka-consumer-groups --reset-offsets --to-latest` would do; messages left by earlier runs are skipped."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    for group, topic in groups.items():
        c = make_consumer(access, group, "facestream-reset")
        try:
            parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
            ends = c.end_offsets(parts)
            c.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in ends.items()})
        finally:
            c.close()
