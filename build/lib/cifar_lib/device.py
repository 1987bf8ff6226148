"""Which device and numeric precision a run uses, and the autocast / gradient-scaler pair
that goes with them."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA > MPS > CPU unless a device is named."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    # oneDNN runs bf16 convolutions natively on AVX512-BF16 / AMX CPUs; elsewhere bf16 is
    # emulated and slower than fp32.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
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
