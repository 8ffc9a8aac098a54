"""A large gallery's index, read from Redis and built in a child process, handed over in shared memory.

The matcher's sync thread reloads the gallery while the loop identifies faces with the old index, but a
thread shares the loop's GIL: reading a million people's replies and stacking their vectors is a long
string of Python and numpy work that the loop waits behind (measured by `bench/matcher_rebuild.py`: the
loop's longest stall during a 1M-person reload). A child process has a GIL of its own. It reads the
gallery with the same `GalleryStore.load`, builds the same `GalleryIndex`, and writes its arrays (the
matrix, the row owners, and the names as one fixed-width byte array) into shared memory; the parent maps
them without copying or creating a million objects, and unlinks them at once (the mapping lives on).

The child is a fresh interpreter (`python -m services.matcher.index_process`; not a fork: the parent has
threads) and gets the Redis connection settings, the password included, on its stdin, never on its
command line or in its environment. A Redis fault in the child
comes back as the same kind of redis error, so the sync thread's reconnect logic is unchanged; any other
failure comes back as a RuntimeError with the child's message.
"""
from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import traceback
from multiprocessing import shared_memory
from typing import Sequence

import numpy as np
import redis

from services.matcher.index import GalleryIndex
from shared.paths import REPO_ROOT

TIMEOUT_S = 900.0  # a 1M-person gallery loads in about a minute on one core


class NoSharedMemory(RuntimeError):
    """/dev/shm cannot hold the index: the caller builds it in its own process instead."""


class Names(Sequence):
    """The index's names, one fixed-width UTF-8 byte array in shared memory, decoded on access."""

    def __init__(self, raw: np.ndarray, keep: list):
        self._raw, self._keep = raw, keep  # `keep`: the shared-memory segments, open while the index lives

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [bytes(x).decode() for x in self._raw[i]]
        return bytes(self._raw[i]).decode()

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Names({len(self)} names)"


def _share(arr: np.ndarray, keep: list) -> tuple[str, tuple, str]:
    shm = shared_memory.SharedMemory(create=True, size=max(arr.nbytes, 1))
    np.ndarray(arr.shape, arr.dtype, buffer=shm.buf)[...] = arr
    keep.append(shm)
    return shm.name, arr.shape, arr.dtype.str


def _send(f, obj) -> None:
    pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    f.flush()


def _die_with_parent() -> None:
    """SIGTERM when the parent dies (Linux), and SIGTERM ends this process through its `finally`."""
    import ctypes
    import signal

    def stop(signum, frame):
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, stop)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's stdin closing still ends the wait below


def child_main() -> int:
    """The child: one request on stdin, one reply on the saved stdout, then wait for the parent's word that
    it has mapped the segments. Unless that word came, the segments are unlinked here: a parent that died
    or gave up leaves nothing in /dev/shm."""
    from multiprocessing import resource_tracker

    from services.matcher.gallery_store import GalleryStore

    _die_with_parent()
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")  # the reply channel; anything else printed goes to stderr
    os.dup2(2, 1)
    connection_class, connection_kwargs, prefix, model_version = pickle.load(inp)
    keep: list = []
    mapped = False
    try:
        client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=connection_class,
                                                                   **connection_kwargs))
        version, people, skipped = GalleryStore(client, prefix).load(model_version)
        index = GalleryIndex.build(people, version, model_version)
        del people
        names = np.array([n.encode() for n in index.names], dtype=bytes) if len(index) else np.zeros(0, "S1")
        need = index.matrix.nbytes + index.owner.nbytes + names.nbytes
        free = _shm_free()
        if need > 0.9 * free:  # writing past /dev/shm's size would kill this process with SIGBUS
            _send(out, ("noshm", need, free))
            return 0
        arrays = [_share(a, keep) for a in (index.matrix, index.owner, names)]
        _send(out, ("ok", version, skipped, arrays))
        mapped = inp.read(1) == b"m"  # or EOF: the parent went away
    except (redis.ConnectionError, redis.TimeoutError) as e:
        _reply(out, ("redis", type(e).__name__, str(e)))
    except BaseException as e:  # noqa: BLE001 (reported to the parent, which logs and retries)
        _reply(out, ("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
    finally:
        for shm in keep:
            shm.close()
            if not mapped:
                try:
                    shm.unlink()  # also unregisters it from this process's resource tracker
                except FileNotFoundError:
                    pass
            else:  # the parent unlinked it; this process's tracker must not try again at exit
                resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001
    return 0


def _reply(out, msg) -> None:
    try:
        _send(out, msg)
    except (BrokenPipeError, OSError):
        pass  # the parent is gone: nobody to tell


def _shm_free() -> int:
    """Bytes free in /dev/shm (a container's default is 64 MiB: the matcher's pod mounts a memory volume)."""
    try:
        st = os.statvfs("/dev/shm")
        return st.f_bavail * st.f_frsize
    except OSError:
        return 1 << 62


# The connection settings a child needs (the rest of a pool's kwargs are redis-py's own per-pool handlers and
# sentinels, which do not survive pickling): where, who, how long, and TLS.
CONNECTION_KEYS = {"host", "port", "path", "db", "username", "password", "socket_timeout", "socket_connect_timeout",
                   "socket_keepalive", "health_check_interval", "client_name", "protocol", "encoding",
                   "encoding_errors", "decode_responses"}


def _settings(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if (k in CONNECTION_KEYS or k.startswith("ssl_")) and type(v) is not object}


def load_index(store, model_version: str, timeout_s: float = TIMEOUT_S) -> tuple[GalleryIndex, list[str]]:
    """(the gallery's index, names skipped for another model version), built in a child process."""
    pool = store.r.connection_pool
    kwargs = _settings(pool.connection_kwargs)
    # the child's settings come on its stdin: no Redis credential of the parent's environment goes with it
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESTREAM_REDIS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "services.matcher.index_process"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)
    try:
        _send(proc.stdin, (pool.connection_class, kwargs, store.p, model_version))
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            raise RuntimeError(f"the gallery build process sent nothing in {timeout_s:.0f} s")
        try:
            msg = pickle.load(proc.stdout)
        except EOFError:
            raise RuntimeError(f"the gallery build process ended without a reply (exit {proc.wait(10)})") from None
        if msg[0] == "redis":
            raise (redis.TimeoutError if msg[1] == "TimeoutError" else redis.ConnectionError)(msg[2])
        if msg[0] == "error":
            raise RuntimeError(f"the gallery build process failed: {msg[1]}\n{msg[2]}")
        if msg[0] == "noshm":
            raise NoSharedMemory(f"the index needs {msg[1] / 2**20:.0f} MiB of /dev/shm, {msg[2] / 2**20:.0f} MiB "
                                 "free: mount a larger memory volume there (deploy/k8s matcher.yaml)")
        _, version, skipped, arrays = msg
        keep, views = [], []
        for name, shape, dtype in arrays:
            shm = shared_memory.SharedMemory(name=name)
            shm.unlink()  # the mapping stays valid; nothing is left in /dev/shm if either process dies
            keep.append(shm)
            views.append(np.ndarray(shape, np.dtype(dtype), buffer=shm.buf))
        proc.stdin.write(b"m")
        proc.stdin.flush()
        matrix, owner, names = views
        index = GalleryIndex(Names(names, keep), matrix, owner, version, model_version)
        return index, skipped
    finally:
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(child_main())
