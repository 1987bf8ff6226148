"""Training on a CPU without a page-fault storm: glibc's malloc told to keep freed memory.

Every training step allocates and frees the same large activation buffers. By default
glibc serves blocks above its mmap threshold (128 KiB, rising to at most 32 MiB) with a
fresh mmap, returns them with munmap and trims the heap's freed top, so each step maps,
first-touches (one page fault per 4 KiB page) and unmaps gigabytes. On a sandboxed 2-core
AMD EPYC, half of a training process's CPU time went to the kernel that way. Keeping freed
memory for reuse removes it, at the price of a process that holds on to its peak memory,
which a training run reaches every step anyway. It is the effect of running PyTorch on a
CPU with jemalloc or tcmalloc, without another library.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4        # mallopt parameters, from glibc's malloc.h
_kept = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep what it frees (no mmap for large blocks, no trimming), for
    the rest of the process. Returns whether that is in effect: False where the C library
    is not glibc (macOS, Windows, musl) or CIFAR_CPU_MALLOC=default asks for the default."""
    global _kept
    if _kept:
        return True
    if os.environ.get("CIFAR_CPU_MALLOC", "keep") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success; -1 as the trim threshold disables trimming (man mallopt)
    _kept = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, -1) == 1
    return _kept


def malloc_mode() -> str:
    """How this process allocates host memory, for records: times depend on it."""
    return "glibc, freed memory kept" if _kept else "default"
