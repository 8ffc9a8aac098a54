"""The matcher's gallery index, kept in step with Redis by one thread; Redis may come and go.

The matcher's batches read the index in memory and never call Redis. One daemon thread, `gallery-sync`,
makes every Redis call of the matcher, in sessions:

    subscribe to {prefix}:changed -> load the gallery -> wait for a notification or `check_interval_s`
    -> compare the version -> reload when it changed -> wait ...

A Redis fault (connection or timeout) ends the session: the thread reports the dependency down
(`facestream_dependency_up{dependency="redis"}` 0), keeps serving the last index, waits a `Backoff`
delay and starts a new session. Each session reloads the gallery whatever the version says: changes made
while the matcher was away sent notifications nobody heard, and a restarted Redis may hold another
gallery under the same number. Subscribing before loading means no change can fall between the two.
Any other exception (bad data in Redis, a bug) is logged with its traceback and retried the same way:
the thread never dies, and the index it serves is always a complete one.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from services.matcher import index_process
from services.matcher.index import GalleryIndex
from services.redis_access import UNREACHABLE, unreachable
from shared import metrics

log = logging.getLogger("facestream")
# From this many people a reload runs in a child process (services/matcher/index_process.py): a smaller
# gallery reloads in milliseconds in the sync thread, and a child costs about a second to start.
PROCESS_MIN_PEOPLE = 20_000


@dataclass
class Backoff:
    """Delays between reconnect attempts: doubling from `base_s` up to `max_s`, each drawn from [d/2, d]
    (equal jitter: replicas that lost Redis together do not all return in the same instant). With the
    defaults: 0.25-0.5 s, 0.5-1 s, 1-2 s, ... and never more than 30 s."""
    base_s: float = 0.5
    max_s: float = 30.0
    rng: Callable[[], float] = field(default=random.random, repr=False)
    attempts: int = 0

    def next(self) -> float:
        d = min(self.max_s, self.base_s * 2 ** min(self.attempts, 30))
        self.attempts += 1
        return d * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.attempts = 0


class LiveIndex:
    """`index()` is the latest complete GalleryIndex; `loaded` is set once the first load succeeded.

    `store` is a GalleryStore (load, version, subscribe); `where` names Redis in logs (URL, password masked).
    `on_load(store)` runs in the sync thread with every load, before the new index is served: what else must
    follow the gallery (the threshold of its calibration, services/matcher/threshold.py) reads it there.
    A gallery of `process_min_people` or more (0: never) is read and built in a child process."""

    def __init__(self, store, model_version: str, check_interval_s: float, where: str,
                 backoff: Backoff | None = None, report_every_s: float = 60.0,
                 on_load: Callable[[object], None] | None = None, process_min_people: int = PROCESS_MIN_PEOPLE):
        self.store, self.model_version, self.check_interval_s = store, model_version, check_interval_s
        self.process_min_people = process_min_people
        self.on_load = on_load
        self.where, self.backoff, self.report_every_s = where, backoff or Backoff(), report_every_s
        self.loaded = threading.Event()
        self.up = False
        self._index: GalleryIndex | None = None
        self._stop = threading.Event()
        self._down_since: float | None = None
        self._reported = 0.0
        self._thread = threading.Thread(target=self._run, name="gallery-sync", daemon=True)
        metrics.DEPENDENCY_UP.labels("redis").set(0)

    def start(self) -> "LiveIndex":
        self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def __call__(self) -> GalleryIndex:
        index = self._index  # one read: a reload swaps the whole index, never part of it
        if index is None:  # the service does not consume before `loaded`; this is for direct callers
            return GalleryIndex.build({}, model_version=self.model_version)
        return index

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except UNREACHABLE as e:
                self._went_down(e)
            except Exception:  # not Redis being away: bad data or a bug; the last index stays
                log.exception("matcher: gallery sync failed; keeping gallery v%s and retrying",
                              self._index.version if self._index else "(none)")
            self._stop.wait(self.backoff.next())

    def _session(self) -> None:
        pubsub = self.store.subscribe()
        try:
            self._load()
            self._came_up()
            checked = time.monotonic()
            while not self._stop.is_set():
                wait = min(1.0, max(0.0, checked + self.check_interval_s - time.monotonic()))
                notified = pubsub.get_message(timeout=wait) is not None
                while notified and pubsub.get_message(timeout=0) is not None:
                    pass  # a burst of changes costs one reload
                if notified or time.monotonic() - checked >= self.check_interval_s:
                    checked = time.monotonic()
                    if self._index is None or self.store.version() != self._index.version:
                        self._load()
                    metrics.GALLERY_SYNCED.set(time.time())
        finally:
            try:
                pubsub.close()
            except Exception:  # closing a connection that is already gone
                pass

    def _load(self) -> None:
        index = None
        if self.process_min_people and self.store.size() >= self.process_min_people:
            try:
                index, skipped = index_process.load_index(self.store, self.model_version)  # off the loop's GIL
                version = index.version
            except index_process.NoSharedMemory as e:
                log.warning("matcher: %s; building the index in this process (the loop may stall)", e)
        if index is None:
            version, people, skipped = self.store.load(self.model_version)
            index = GalleryIndex.build(people, version, self.model_version)
        if skipped:
            log.warning("matcher: ignoring %d people enrolled with another model (re-enroll them): %s",
                        len(skipped), ", ".join(skipped[:10]))
        if self.on_load is not None:
            self.on_load(self.store)
        self._index = index
        self.loaded.set()
        metrics.GALLERY_IDENTITIES.set(len(index))
        metrics.GALLERY_EMBEDDINGS.set(index.size)
        metrics.GALLERY_RELOADS.inc()
        metrics.GALLERY_SYNCED.set(time.time())
        log.info("matcher: gallery v%d loaded: %d people, %d embeddings", version, len(index), index.size)

    def _came_up(self) -> None:
        metrics.DEPENDENCY_UP.labels("redis").set(1)
        if self._down_since is not None:
            log.info("matcher: Redis at %s reachable again after %.1f s; gallery reloaded, subscribed to changes",
                     self.where, time.monotonic() - self._down_since)
        self._down_since, self.up = None, True
        self.backoff.reset()

    def _went_down(self, exc: BaseException) -> None:
        metrics.DEPENDENCY_UP.labels("redis").set(0)
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = self._reported = now
            index = self._index
            doing = (f"identifying from gallery v{index.version} in memory ({len(index)} person(s))" if index
                     else "no gallery yet: not consuming (/readyz 503)")
            log.warning("matcher: %s; %s; reconnecting with backoff (at most %.0f s apart)",
                        unreachable(self.where, exc), doing, self.backoff.max_s)
        elif now - self._reported >= self.report_every_s:
            self._reported = now
            log.warning("matcher: %s for %.0f s; still retrying", unreachable(self.where, exc), now - self._down_since)
        self.up = False
