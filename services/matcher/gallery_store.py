"""The gallery in Redis: people, their embeddings and metadata, and a change notification.

Layout under a prefix (default `facestream:gallery`):
    {p}:people             SET of names
    {p}:person:{name}      HASH: meta (JSON: model_version, created, updated, sources)
    {p}:emb:{name}         HASH: embedding id (hash of the source photo and face) -> float32 bytes
    {p}:calibration        STRING: JSON, the threshold `facestream calibrate` measured on this gallery
    {p}:version            INT, incremented by every change (the calibration's too)
    {p}:changed            pub/sub channel: the new version, published after every change
Writes are MULTI/EXEC transactions that also bump the version and publish it, so a reader never sees
half an enrollment and a writer that loses Redis has either written and notified or done neither.
Matchers rebuild their in-memory index when notified, and also compare the version every
`check_interval_s` in case a notification was missed (pub/sub delivers at most once); see
services/matcher/live_index.py for what they do while Redis is away. Names are checked by
services/gallery/names.py.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services import redis_access
from services.gallery.names import check_name

DEFAULT_PREFIX = "facestream:gallery"
LOAD_CHUNK = 2000  # people per pipeline when the gallery is read
# INCR the version and PUBLISH it inside the writer's transaction (scripts may run in MULTI/EXEC)
_BUMP = "local v = redis.call('INCR', KEYS[1]) redis.call('PUBLISH', ARGV[1], v) return v"


class GalleryChanging(RuntimeError):
    """Writes kept coming while the gallery was read: no consistent copy this time."""


def sorted_names(raw) -> list[str]:
    """Names sorted in runs of 10,000 merged in Python: one sort of a million names was one C call that
    held the GIL for a second, and the matcher's loop shares the process with the thread that reads."""
    import heapq

    names = [n.decode() if isinstance(n, bytes) else n for n in raw]
    runs = [sorted(names[i:i + 10_000]) for i in range(0, len(names), 10_000)]
    return list(heapq.merge(*runs))


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
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, *, timeout_s: float = 10.0, retries: int = 1,
                 user: str = "", password: str = "", ca_file: str = "") -> "GalleryStore":
        """`retries`: redis-py's own retries of a failed command (services/redis_access.py: few, fast)."""
        return cls(redis_access.client(url, user=user, password=password, ca_file=ca_file, timeout_s=timeout_s,
                                       retries=retries), prefix)

    @classmethod
    def for_config(cls, cfg: redis_access.RedisSettings, prefix: str = DEFAULT_PREFIX, **kw) -> "GalleryStore":
        """With a command's Redis settings: URL, ACL user and password, TLS CA."""
        return cls(redis_access.client_for(cfg, **kw), prefix)

    def ping(self) -> None:
        """Raise redis' ConnectionError or TimeoutError unless the server answers."""
        self.r.ping()

    def subscribe(self) -> redis.client.PubSub:
        """A subscription to the change channel on a connection of its own that never reconnects by
        itself: a dropped connection raises, so the subscriber learns that it may have missed changes
        (and a restarted Redis may hold another gallery under the same version number)."""
        pool = self.r.connection_pool
        once = redis.ConnectionPool(connection_class=pool.connection_class,
                                    **{**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)})
        pubsub = redis.Redis(connection_pool=once).pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
        except BaseException:
            pubsub.close()
            raise
        return pubsub

    @property
    def channel(self) -> str:
        return f"{self.p}:changed"

    def version(self) -> int:
        return int(self.r.get(f"{self.p}:version") or 0)

    def add(self, name: str, embeddings: dict[str, np.ndarray], model_version: str, sources: list[str],
            replace: bool = False) -> int:
        """Store a person's embeddings (id -> unit vector) in one transaction; returns the new gallery version.
        Raises InvalidName (a ValueError) for a name that breaks the rule of services/gallery/names.py."""
        name = check_name(name)
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
            pipe.eval(_BUMP, 1, f"{self.p}:version", self.channel)
            version = pipe.execute()[-1]
        return int(version)

    def remove(self, name: str) -> bool:
        """Delete a person and every embedding of theirs; False when there was no such person."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.srem(f"{self.p}:people", name)
            pipe.delete(f"{self.p}:person:{name}", f"{self.p}:emb:{name}")
            pipe.eval(_BUMP, 1, f"{self.p}:version", self.channel)
            removed, _, _ = pipe.execute()
        return bool(removed)

    @property
    def calibration_key(self) -> str:
        return f"{self.p}:calibration"

    def write_calibration(self, doc: dict) -> int:
        """Store a calibration (services/gallery/calibrate.py) and notify like any change, so that running
        matchers re-read it with their next reload; returns the new gallery version."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.calibration_key, json.dumps(doc))
            pipe.eval(_BUMP, 1, f"{self.p}:version", self.channel)
            return int(pipe.execute()[-1])

    def calibration(self) -> dict | None:
        """The stored calibration, or None; ValueError when the key holds no JSON object."""
        raw = self.r.get(self.calibration_key)
        if raw is None:
            return None
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError(f"{self.calibration_key} holds no JSON object")
        return doc

    def person_meta(self, name: str) -> dict | None:
        raw = self.r.hget(f"{self.p}:person:{name}", "meta")
        return json.loads(raw) if raw else None

    def size(self) -> int:
        """How many people the gallery holds (one cheap command)."""
        return int(self.r.scard(f"{self.p}:people"))

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

    def load(self, model_version: str | None = None, chunk: int = LOAD_CHUNK
             ) -> tuple[int, dict[str, np.ndarray], list[str]]:
        """(version, {name: (k, D) embeddings}, names skipped for another model version), consistently:
        the people are read `chunk` at a time and the version before and after; a change in between reads
        again. Chunks, not one transaction of two commands a person: a 1M-person MULTI held Redis (every
        other client, the visit store too) for the whole read, and its one reply held the matcher's GIL
        while it was parsed. A gallery that changed during each of four reads raises GalleryChanging (the
        matcher keeps its last index and tries again after a backoff); a half-read one is never returned."""
        for _ in range(4):
            with self.r.pipeline(transaction=True) as pipe:
                pipe.get(f"{self.p}:version")
                pipe.smembers(f"{self.p}:people")
                version, raw_names = pipe.execute()
            names = sorted_names(raw_names)
            res: list = []
            for i in range(0, max(len(names), 1), chunk):
                with self.r.pipeline(transaction=False) as pipe:
                    for n in names[i:i + chunk]:
                        pipe.hgetall(f"{self.p}:emb:{n}")
                        pipe.hget(f"{self.p}:person:{n}", "meta")
                    pipe.get(f"{self.p}:version")
                    *got, now = pipe.execute()
                    res += got
            if now == version:  # nothing changed while it was read (every write bumps the version)
                break
        else:
            raise GalleryChanging(f"the gallery under {self.p} changed during each of 4 reads")
        people, skipped = {}, []
        for i, n in enumerate(names):
            embs, meta = res[2 * i], json.loads(res[2 * i + 1] or "{}")
            if model_version is not None and meta.get("model_version") != model_version:
                skipped.append(n)
                continue
            if embs:
                people[n] = np.stack([np.frombuffer(v, "<f4") for _, v in sorted(embs.items())])
        return int(version or 0), people, skipped

