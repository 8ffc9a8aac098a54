"""The four services as real processes on the real broker and Redis, for the pipeline benchmark.

Topics, consumer groups and the gallery prefix are unique to the run (as the end-to-end tests do), so the
benchmark never reads or disturbs another run's data; `close()` stops every process it started (SIGTERM,
then SIGKILL) and deletes the topics, groups and gallery keys.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kafka import TopicPartition

from bench.kafka_util import Topics, delete_groups, run_id
from bench.sampler import GroupTopic
from services.local_pipeline import LocalPipeline, Service
from shared.kafka_clients import Access, make_consumer
from shared.schemas import IdentityEvent

PARTITIONS = 4


@dataclass
class Received:
    event: IdentityEvent
    received_ts: float


class EventCollector(threading.Thread):
    """Reads the events topic from its start for the whole run (no group), keeping every event."""

    def __init__(self, bootstrap: Access, topic: str):
        super().__init__(name="bench-events", daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.events: list[Received] = []
        self._halt = threading.Event()

    def run(self) -> None:
        c = make_consumer(self.bootstrap, None, "bench-events", isolation_level="read_committed")
        try:
            parts = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
            c.assign(parts)
            c.seek_to_beginning(*parts)
            while not self._halt.is_set():
                for recs in c.poll(timeout_ms=300).values():
                    now = time.time()
                    self.events += [Received(IdentityEvent.decode(r.value), now) for r in recs]
        finally:
            c.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def enroll(redis_url: str, prefix: str, detector, model, people_dir: Path) -> int:
    """Enroll every person of `people_dir` (one folder each) under `prefix`, in this process, through the
    same detector, alignment and model as the pipeline; returns the number of people."""
    from services.gallery.enroll import Accepted, embed_photos, expand
    from services.matcher.gallery_store import GalleryStore

    store = GalleryStore.from_url(redis_url, prefix)
    people = 0
    for person in sorted(p for p in people_dir.iterdir() if p.is_dir()):
        files, _ = expand([str(person)])
        ok = [r for r in embed_photos(files, detector, model, "largest") if isinstance(r, Accepted)]
        if ok:
            store.add(person.name, {a.embedding_id: a.embedding for a in ok}, model.model_version,
                      [str(a.path) for a in ok])
            people += 1
    return people


@dataclass
class PipelineRig:
    bootstrap: str
    redis_url: str
    log_dir: Path
    threshold: float
    model: Path | None = None
    run: str = field(default_factory=run_id)
    kafka: Access | None = None  # the clients' security (default: plaintext to `bootstrap`)

    def __post_init__(self) -> None:
        self.kafka = self.kafka or self.bootstrap
        self.topics = Topics(self.kafka)
        self.prefix = f"facestream:bench-{self.run}"
        env = {"FACESTREAM_KAFKA_BOOTSTRAP": self.bootstrap, "FACESTREAM_REDIS_URL": self.redis_url}
        if self.model is not None:
            env["FACESTREAM_MODEL"] = str(self.model)
        self.pipe = LocalPipeline(self.log_dir, env=env)
        self.groups = {s: f"bench-{s}-{self.run}" for s in ("detector", "embedder", "matcher")}
        self.collector: EventCollector | None = None
        self.restarts: list[dict] = []

    def start(self) -> dict[str, Service]:
        """Create the topics, start detector, embedder and matcher, wait until each holds its partitions."""
        t = self.topics
        self.frames, self.faces = t.make("bench-frames", PARTITIONS), t.make("bench-faces", PARTITIONS)
        self.embeddings, self.events = t.make("bench-embeddings", PARTITIONS), t.make("bench-events", PARTITIONS)
        g = self.groups
        self.args = {
            "detector": ("--frames-topic", self.frames, "--faces-topic", self.faces, "--group-id", g["detector"],
                         "--threads", "1"),
            "embedder": ("--faces-topic", self.faces, "--embeddings-topic", self.embeddings, "--group-id",
                         g["embedder"], "--threads", "1"),
            "matcher": ("--embeddings-topic", self.embeddings, "--events-topic", self.events, "--group-id",
                        g["matcher"], "--gallery-prefix", self.prefix, "--threshold", str(self.threshold)),
        }
        services = {name: self.pipe.start(name, *args, wait_ready=False) for name, args in self.args.items()}
        for name in services:
            services[name] = self._assigned(name, services[name])
        self.collector = EventCollector(self.kafka, self.events)
        self.collector.start()
        return services

    def _assigned(self, name: str, svc: Service, timeout_s: float = 45.0) -> Service:
        """Wait until `svc` holds all its partitions. A member that never gets them (seen once: the consumer
        stopped heartbeating right after its first rebalance) has its stacks dumped into the log folder with
        py-spy, is killed and started once more; `restarts` records it. A second failure raises."""
        for attempt in (1, 2):
            self.pipe.wait_ready(svc, timeout_s=180)
            deadline = time.monotonic() + timeout_s
            while svc.metric("facestream_assigned_partitions") != PARTITIONS and time.monotonic() < deadline:
                time.sleep(0.5)
            if svc.metric("facestream_assigned_partitions") == PARTITIONS:
                return svc
            dump = self.log_dir / f"{svc.name}-stuck-py-spy.txt"
            with open(dump, "w") as f:
                subprocess.run([str(Path(sys.executable).parent / "py-spy"), "dump", "--pid", str(svc.proc.pid)],
                               stdout=f, stderr=subprocess.STDOUT, timeout=30)
            self.restarts.append({"service": name, "py_spy_dump": str(dump), "log": str(svc.log_path)})
            self.pipe.kill(svc)
            self.pipe.services.remove(svc)
            if attempt == 2:
                raise RuntimeError(f"{name} never held its {PARTITIONS} partitions, twice; see {dump}")
            svc = self.pipe.start(name, *self.args[name], wait_ready=False, label=f"{name}-retry")
        return svc

    def lag_groups(self) -> list[GroupTopic]:
        return [GroupTopic("detector", self.groups["detector"], self.frames),
                GroupTopic("embedder", self.groups["embedder"], self.faces),
                GroupTopic("matcher", self.groups["matcher"], self.embeddings)]

    def ingest(self, cameras: dict[str, Path], fps: float, width: int, max_frames: int, label: str) -> Service:
        """One ingest process playing `cameras` ({id: video file}) at their real frame rate."""
        cams = [x for cid, path in cameras.items() for x in ("--camera", f"{cid}={path}")]
        return self.pipe.start("ingest", *cams, "--frames-topic", self.frames, "--fps", str(fps),
                               "--max-width", str(width), "--max-frames", str(max_frames), wait_ready=False,
                               label=label)

    def close(self) -> dict[str, int]:
        """Stop every process (SIGTERM, SIGKILL after 30 s), then delete topics, groups and gallery keys."""
        try:
            if self.collector is not None:
                self.collector.stop()
        finally:
            codes = self.pipe.stop()
        try:
            self.topics.close()
            delete_groups(self.kafka, list(self.groups.values()))
        finally:
            import redis

            r = redis.Redis.from_url(self.redis_url)
            for key in r.scan_iter(f"{self.prefix}:*"):
                r.delete(key)
        return codes
