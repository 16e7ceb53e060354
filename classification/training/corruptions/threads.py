"""One intra-op thread for the calling thread only, restored on exit: small corruptions stay fast under load.

A 224x224 image is too small for a second thread to help: every elementwise op of a few hundred
thousand values opens an OpenMP parallel region, and on a machine where another process is busy each
region waits for a core (3x to 30x slower per image). ``torch.set_num_threads`` would fix that but is
process-wide state (it also sets the value new threads start with), so it is not used here.

:func:`single_thread` instead sets the two per-thread controls that torch's CPU kernels consult: the
OpenMP runtime's ``nthreads-var`` of the calling thread (``omp_set_num_threads`` acts on the calling
thread only) and MKL's thread-local thread count (FFTs and matrix products). Both are restored on
exit, other threads never see the change, and ``torch.get_num_threads()`` in the caller is the same
before and after. Where torch ships no such runtime (another platform or build), it does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch

_LIBRARY_DIR = Path(torch.__file__).resolve().parent / "lib"
_OPENMP_RUNTIMES = ("libgomp.so.1", "libomp.so", "libiomp5.so", "libomp.dylib", "libiomp5.dylib")


def _function(library: Path, name: str, restype, argtypes):
    try:
        fn = getattr(ctypes.CDLL(str(library)), name)
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = restype, argtypes
    return fn


@lru_cache(maxsize=None)
def _controls() -> tuple:
    """(omp_get_max_threads, omp_set_num_threads, MKL_Set_Num_Threads_Local), each None where absent."""
    get_omp = set_omp = None
    for name in _OPENMP_RUNTIMES:
        if (_LIBRARY_DIR / name).is_file():
            get_omp = _function(_LIBRARY_DIR / name, "omp_get_max_threads", ctypes.c_int, [])
            set_omp = _function(_LIBRARY_DIR / name, "omp_set_num_threads", None, [ctypes.c_int])
            break
    if get_omp is None or set_omp is None:
        get_omp = set_omp = None
    set_mkl = None
    if torch.backends.mkl.is_available():
        for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
            if (_LIBRARY_DIR / name).is_file():
                # The C interface (by value); the lower-case symbol is the Fortran one (by reference).
                set_mkl = _function(_LIBRARY_DIR / name, "MKL_Set_Num_Threads_Local", ctypes.c_int, [ctypes.c_int])
                break
    return get_omp, set_omp, set_mkl


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one intra-op thread in the calling thread; every setting is restored after."""
    get_omp, set_omp, set_mkl = _controls()
    # torch applies its process-wide thread count to a thread on the thread's first parallel op; doing
    # that now keeps it from overriding the setting below inside the block.
    torch.get_num_threads()
    omp_before = get_omp() if get_omp is not None else None
    if omp_before is not None and omp_before != 1:
        set_omp(1)
    mkl_before = set_mkl(1) if set_mkl is not None else None
    try:
        yield
    finally:
        if mkl_before is not None:
            set_mkl(mkl_before)  # 0 restores "follow the global setting"
        if omp_before is not None and omp_before != 1:
            set_omp(omp_before)
