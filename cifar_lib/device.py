"""Which device and numeric precision a run uses, the autocast / gradient-scaler pair
that goes with them, and how a CPU run allocates host memory."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import warnings
from dataclasses import dataclass

import torch

from .errors import ConfigError


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA > MPS > CPU unless a device is named; a name this machine cannot use is a
    ConfigError that says which it can."""
    if requested:
        try:
            dev = torch.device(requested)
        except RuntimeError:
            dev = None
        usable = {"cpu": True, "cuda": torch.cuda.is_available(),
                  "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()}
        if dev is None or not usable.get(dev.type, False) or (
                dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count()):
            here = ", ".join(d for d, ok in usable.items() if ok)
            raise ConfigError(f"--device {requested!r} is not a device this machine can train on; "
                              f"it has: {here} (or leave --device out to take the best)")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    # oneDNN runs bf16 convolutions natively on AVX512-BF16 / AMX CPUs; elsewhere bf16 is
    # emulated and slower than fp32. torch asks oneDNN through a private op: if a torch
    # release renames it, say so rather than train in fp32 without a word.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError) as e:
        warnings.warn(f"could not ask oneDNN whether this CPU runs bf16 natively "
                      f"(torch.ops.mkldnn._is_mkldnn_bf16_supported: {type(e).__name__}: {e}); "
                      f"training in fp32. Set precision = \"bf16\" in the config to force it.",
                      RuntimeWarning, stacklevel=2)
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> the fastest precision the device does well: bf16 on Ampere+ GPUs and on
    CPUs with native bf16, fp16 (with a gradient scaler) on older GPUs such as the T4,
    fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


@dataclass
class Precision:
    """Autocast context and gradient scaler for one precision on one device."""
    name: str
    device: torch.device

    @classmethod
    def resolve(cls, precision: str, device: torch.device) -> "Precision":
        return cls(resolve_precision(precision, device), device)

    @property
    def dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self):
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")


# --------------------------------------------------------------------------- host memory
# Keeping freed memory spares each CPU training step a page-fault storm (docs/engine.md).
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
