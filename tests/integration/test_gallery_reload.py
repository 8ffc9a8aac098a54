"""A large gallery's reload on a real Redis: read in chunks, built in a child process, the same index as the
one-shot read, and a Redis that goes away while the child reads is a Redis error the sync thread retries."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from services.matcher.gallery_store import GalleryStore
from services.matcher.index import GalleryIndex
from services.matcher.index_process import load_index
from services.matcher.live_index import LiveIndex

pytestmark = pytest.mark.integration


@pytest.fixture
def gallery(redis_url):
    from bench.matcher_rebuild import seed

    r = redis.Redis.from_url(redis_url)
    prefix = f"facestream:test-reload-{uuid.uuid4().hex[:8]}"
    seed(r, prefix, 5_003, np.random.default_rng(0))  # not a multiple of any chunk
    yield GalleryStore(r, prefix)
    keys = list(r.scan_iter(f"{prefix}:*", count=10_000))
    for i in range(0, len(keys), 5_000):
        r.delete(*keys[i:i + 5_000])


def test_chunked_reads_and_builds_give_the_one_shot_index(gallery):
    v1, people1, _ = gallery.load("bench", chunk=1 << 62)
    v2, people2, _ = gallery.load("bench", chunk=7)
    assert v1 == v2 == 1 and list(people1) == list(people2) and len(people1) == 5_003
    a = GalleryIndex.build(people1, v1, "bench", chunk=1 << 62)
    b = GalleryIndex.build(people2, v2, "bench", chunk=333)
    assert a.names == b.names and np.array_equal(a.matrix, b.matrix) and np.array_equal(a.owner, b.owner)


def test_the_child_process_builds_the_same_index_and_the_matcher_serves_it(gallery):
    version, people, _ = gallery.load("bench")
    want = GalleryIndex.build(people, version, "bench")
    got, skipped = load_index(gallery, "bench")
    assert skipped == [] and got.version == want.version and len(got) == len(want) == 5_003
    assert np.array_equal(got.matrix, want.matrix) and np.array_equal(got.owner, want.owner)
    assert list(got.names) == list(want.names) and got.names[17] == want.names[17]
    q = want.matrix[[3, 4000]]
    assert got.search(q)[0] == want.search(q)[0] == [want.names[3], want.names[4000]]

    live = LiveIndex(gallery, "bench", check_interval_s=60.0, where="test", process_min_people=1000).start()
    try:
        assert live.loaded.wait(60.0) and len(live()) == 5_003 and live().names == want.names
    finally:
        live.close()


def _segments() -> set[str]:
    from pathlib import Path

    return {p.name for p in Path("/dev/shm").glob("psm_*")}


def test_no_shared_memory_is_left_behind_by_a_load_or_a_failed_one(gallery):
    before = _segments()
    index, _ = load_index(gallery, "bench")
    assert len(index) == 5_003 and _segments() == before, "the parent unlinks what it mapped"
    with pytest.raises(redis.ConnectionError):
        load_index(GalleryStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1), gallery.p), "bench")
    assert _segments() == before


def test_a_gallery_written_to_through_every_read_is_refused_not_half_read(gallery):
    import threading

    from services.matcher.gallery_store import GalleryChanging

    stop = threading.Event()

    def writer():
        r = redis.Redis(connection_pool=gallery.r.connection_pool)
        while not stop.is_set():
            r.incr(f"{gallery.p}:version")  # what every enrollment does
            stop.wait(0.002)

    t = threading.Thread(target=writer)
    t.start()
    try:
        with pytest.raises(GalleryChanging, match="changed during each of 4 reads"):
            gallery.load("bench", chunk=100)
    finally:
        stop.set()
        t.join()
    version, people, _ = gallery.load("bench")  # quiet again: read whole
    assert len(people) == 5_003 and version > 1


def test_a_redis_the_child_cannot_reach_is_a_redis_error(gallery):
    away = GalleryStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1), gallery.p)
    with pytest.raises(redis.ConnectionError):
        load_index(away, "bench")
