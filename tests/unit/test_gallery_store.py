"""The pure parts of reaching the gallery: the reconnect backoff, URL masking, and the matcher's LiveIndex
going through Redis away and back, against an in-memory fake of the store (no server)."""
from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
import redis

from services.matcher.live_index import Backoff, LiveIndex
from services.redis_access import mask_url, unreachable
from shared import metrics


def test_backoff_doubles_to_its_bound_with_jitter_in_the_upper_half():
    top = Backoff(0.5, 30.0, rng=lambda: 1.0)
    assert [top.next() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    low = Backoff(0.5, 30.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.25, 0.5, 1.0]
    top.reset()
    assert top.next() == 0.5
    assert 0.25 <= Backoff().next() <= 0.5
    many = Backoff()
    assert max(many.next() for _ in range(1000)) <= 30.0  # no overflow after many attempts


@pytest.mark.parametrize("url, shown", [
    ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
    ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://secret@host/0", "redis://***@host/0"),
    ("rediss://u:p%40ss@host:6380/1", "rediss://u:***@host:6380/1"),
    ("redis://host:6379/0?password=secret&db=2", "redis://host:6379/0?password=***&db=2"),
    ("unix:///run/redis.sock?password=secret", "unix:///run/redis.sock?password=***"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_mask_url_hides_every_password(url, shown):
    assert mask_url(url) == shown


def test_unreachable_is_one_line_without_the_secret():
    exc = redis.exceptions.ConnectionError("Error 111 connecting to host:6379.\nsecret went by")
    line = unreachable("redis://user:secret@host:6379/0", exc)
    assert line == "Redis at redis://user:***@host:6379/0 is unreachable (Error 111 connecting to host:6379. " \
                   "*** went by)"


class FakePubSub:
    def __init__(self, store: "FakeStore"):
        self.store = store

    def get_message(self, timeout: float = 0.0):
        if self.store.down:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        try:
            return self.store.notes.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        pass


class FakeStore:
    """What LiveIndex uses of a GalleryStore; `down` makes every call raise as a dead server does."""

    def __init__(self):
        self.down, self.broken = False, False
        self.people: dict[str, np.ndarray] = {}
        self.gen = 0
        self.notes: queue.Queue = queue.Queue()
        self.lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise redis.exceptions.ConnectionError("Error 111 connecting to fake. Connection refused.")

    def subscribe(self) -> FakePubSub:
        self._check()
        return FakePubSub(self)

    def version(self) -> int:
        self._check()
        return self.gen

    def size(self) -> int:
        self._check()
        return len(self.people)

    def load(self, model_version=None):
        self._check()
        if self.broken:
            raise ValueError("bad bytes in the gallery")
        with self.lock:
            return self.gen, dict(self.people), []

    def enroll(self, name: str, seed: int, notify: bool = True, bump: bool = True) -> None:
        v = np.random.default_rng(seed).normal(size=(1, 8)).astype(np.float32)
        with self.lock:
            self.people[name] = v / np.linalg.norm(v)
            self.gen += bump
        if notify:
            self.notes.put({"type": "message", "data": str(self.gen).encode()})


def until(check, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def redis_up() -> float:
    return metrics.DEPENDENCY_UP.labels("redis")._value.get()


@pytest.fixture
def live():
    store = FakeStore()
    made: list[LiveIndex] = []

    def make(check_interval_s: float = 60.0) -> LiveIndex:
        made.append(LiveIndex(store, "m", check_interval_s, "redis://fake", Backoff(0.01, 0.05)).start())
        return made[-1]

    yield store, make
    for index in made:
        index.close()


def test_it_waits_for_a_redis_that_is_down_at_start_then_loads(live):
    store, make = live
    store.down = True
    store.enroll("Ann", 1, notify=False)
    index = make()
    assert not index.loaded.wait(0.3) and redis_up() == 0
    assert len(index()) == 0  # nothing to serve yet
    store.down = False
    assert index.loaded.wait(3) and until(lambda: redis_up() == 1)
    assert index().names == ("Ann",)


def test_it_serves_from_memory_while_redis_is_away_and_reloads_on_return_whatever_the_version(live):
    store, make = live
    store.enroll("Ann", 1, notify=False)
    index = make()
    assert index.loaded.wait(3)
    store.down = True
    assert until(lambda: not index.up and redis_up() == 0)
    assert index().names == ("Ann",)  # still identifying
    # a restarted Redis with another gallery under the same version number, and no notification
    store.enroll("Bob", 2, notify=False, bump=False)
    store.down = False
    assert until(lambda: index().names == ("Ann", "Bob")), "not reloaded on reconnect"
    assert redis_up() == 1


def test_a_notification_reloads_and_a_missed_one_is_caught_by_the_version_check(live):
    store, make = live
    index = make(check_interval_s=1.0)
    assert index.loaded.wait(3) and len(index()) == 0
    store.enroll("Ann", 1)
    assert until(lambda: index().names == ("Ann",), 0.9), "a notification did not reload"
    store.enroll("Bob", 2, notify=False)
    assert until(lambda: index().names == ("Ann", "Bob"), 2.5), "the periodic check did not reload"


def test_bad_data_keeps_the_last_index_and_the_thread_alive(live):
    store, make = live
    store.enroll("Ann", 1, notify=False)
    index = make()
    assert index.loaded.wait(3)
    store.broken = True
    store.enroll("Bob", 2)
    time.sleep(0.3)
    assert index().names == ("Ann",) and index._thread.is_alive()
    store.broken = False
    store.enroll("Cy", 3)
    assert until(lambda: index().names == ("Ann", "Bob", "Cy"))
