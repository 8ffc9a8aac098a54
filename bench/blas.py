"""Read and set the thread count of numpy's OpenBLAS at run time (what threadpoolctl does, via ctypes).

numpy's wheels bundle scipy-openblas, which starts one thread per core. On this shared 2-core machine,
with torch's own thread pool in the same process (the matcher imports torch to read its checkpoint), a
small (64 x 128) @ (128 x N) product measured about 100 times slower with OpenBLAS's threads than with
one: the matcher part measures both.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np


def _lib() -> ctypes.CDLL | None:
    libs = Path(np.__file__).parent.parent / "numpy.libs"
    for path in sorted(libs.glob("libscipy_openblas*.so")):
        lib = ctypes.CDLL(str(path))
        if hasattr(lib, "scipy_openblas_set_num_threads64_"):
            return lib
    return None


_LIB = _lib()


def available() -> bool:
    return _LIB is not None


def get_threads() -> int | None:
    return int(_LIB.scipy_openblas_get_num_threads64_()) if _LIB else None


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with OpenBLAS limited to `n` threads (a no-op when the library is not found)."""
    if _LIB is None:
        yield
        return
    before = get_threads()
    _LIB.scipy_openblas_set_num_threads64_(ctypes.c_int(n))
    try:
        yield
    finally:
        _LIB.scipy_openblas_set_num_threads64_(ctypes.c_int(before))
