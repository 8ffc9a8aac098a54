"""The gallery in Redis: people, their embeddings and metadata, and a change notification.

Layout under a prefix (default `facestream:gallery`):
    {p}:people             SET of names
    {p}:person:{name}      HASH: meta (JSON: model_version, created, updated, sources)
    {p}:emb:{name}         HASH: embedding id (hash of the source photo and face) -> float32 bytes
    {p}:version            INT, incremented by every change
    {p}:changed            pub/sub channel: the new version, published after every change
Writes are MULTI/EXEC transactions, so a reader never sees half an enrollment. Matchers rebuild their
in-memory index when notified, and also compare the version every `check_interval_s` in case a
notification was missed (pub/sub delivers at most once).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
import redis

DEFAULT_PREFIX = "facestream:gallery"


@dataclass(frozen=True)
class PersonInfo:
    name: str
    embeddings: int
    model_version: str
    updated: float


class GalleryStore:
    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX):
        self.r, self.p = client, prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX) -> "GalleryStore":
        return cls(redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30), prefix)

    @property
    def channel(self) -> str:
        return f"{self.p}:changed"

    def version(self) -> int:
        return int(self.r.get(f"{self.p}:version") or 0)

    def add(self, name: str, embeddings: dict[str, np.ndarray], model_version: str, sources: list[str],
            replace: bool = False) -> int:
        """Store a person's embeddings (id -> unit vector) in one transaction; returns the new gallery version."""
        if not name or any(c in name for c in "\n\r\t") or len(name) > 200:
            raise ValueError(f"invalid name {name!r}")
        existing = self.person_meta(name)
        if existing and existing.get("model_version") != model_version and not replace:
            raise ValueError(f"{name} is enrolled with model {existing.get('model_version')}, not {model_version}: "
                             "re-enroll with --replace")
        now = time.time()
        meta = {"model_version": model_version, "created": (existing or {}).get("created", now), "updated": now,
                "sources": sorted(set(((existing or {}).get("sources", []) if not replace else []) + sources))}
        with self.r.pipeline(transaction=True) as pipe:
            if replace:
                pipe.delete(f"{self.p}:emb:{name}")
            pipe.sadd(f"{self.p}:people", name)
            pipe.hset(f"{self.p}:person:{name}", mapping={"meta": json.dumps(meta)})
            pipe.hset(f"{self.p}:emb:{name}",
                      mapping={k: np.asarray(v, "<f4").tobytes() for k, v in embeddings.items()})
            pipe.incr(f"{self.p}:version")
            version = pipe.execute()[-1]
        self.r.publish(self.channel, version)
        return int(version)

    def remove(self, name: str) -> bool:
        """Delete a person and every embedding of theirs; False when there was no such person."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.srem(f"{self.p}:people", name)
            pipe.delete(f"{self.p}:person:{name}", f"{self.p}:emb:{name}")
            pipe.incr(f"{self.p}:version")
            removed, _, version = pipe.execute()
        self.r.publish(self.channel, version)
        return bool(removed)

    def person_meta(self, name: str) -> dict | None:
        raw = self.r.hget(f"{self.p}:person:{name}", "meta")
        return json.loads(raw) if raw else None

    def people(self) -> list[PersonInfo]:
        names = sorted(n.decode() for n in self.r.smembers(f"{self.p}:people"))
        with self.r.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.hlen(f"{self.p}:emb:{n}")
                pipe.hget(f"{self.p}:person:{n}", "meta")
            res = pipe.execute()
        out = []
        for i, n in enumerate(names):
            meta = json.loads(res[2 * i + 1] or "{}")
            out.append(PersonInfo(n, int(res[2 * i]), meta.get("model_version", "?"), meta.get("updated", 0.0)))
        return out

    def load(self, model_version: str | None = None) -> tuple[int, dict[str, np.ndarray], list[str]]:
        """(version, {name: (k, D) embeddings}, names skipped for another model version), consistently:
        the version is read in the same transaction as the data."""
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                pipe.get(f"{self.p}:version")
                pipe.smembers(f"{self.p}:people")
                version, names = pipe.execute()
            names = sorted(n.decode() for n in names)
            with self.r.pipeline(transaction=True) as pipe:
                for n in names:
                    pipe.hgetall(f"{self.p}:emb:{n}")
                    pipe.hget(f"{self.p}:person:{n}", "meta")
                pipe.get(f"{self.p}:version")
                res = pipe.execute()
            if res[-1] == version:  # nothing changed between the two reads
                break
        people, skipped = {}, []
        for i, n in enumerate(names):
            embs, meta = res[2 * i], json.loads(res[2 * i + 1] or "{}")
            if model_version is not None and meta.get("model_version") != model_version:
                skipped.append(n)
                continue
            if embs:
                people[n] = np.stack([np.frombuffer(v, "<f4") for _, v in sorted(embs.items())])
        return int(version or 0), people, skipped


class ChangeWatcher:
    """Sets `changed` when the gallery changes: a pub/sub subscription on a daemon thread."""

    def __init__(self, store: GalleryStore):
        self.changed = threading.Event()
        self._pubsub = store.r.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(**{store.channel: lambda _msg: self.changed.set()})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.5, daemon=True)

    def close(self) -> None:
        self._thread.stop()
        self._pubsub.close()
