"""What every notebook does first: pick the profile, load the data, say what it runs with."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .config import PROFILES, ConfigError, auto_profile
from .data import CIFAR10, load_cifar10
from .records import device_info
from .device import pick_device


def resolve_profile(profile: str = "auto") -> str:
    """CIFAR_PROFILE (e.g. `smoke` in CI) overrides the notebook's choice; `auto` is `full`
    with a CUDA GPU and `cpu` otherwise."""
    profile = os.environ.get("CIFAR_PROFILE") or profile
    if profile == "auto":
        profile = auto_profile()
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r} (from CIFAR_PROFILE or the notebook); "
                          f"valid: auto, {', '.join(PROFILES)}")
    return profile


@dataclass
class Session:
    profile: str
    device: str
    data: CIFAR10


def start(profile: str = "auto", data_root=None) -> Session:
    """Resolve the profile, load CIFAR-10 (downloading the official release if no copy is
    found) and print the profile, device and data identity the notebook runs with."""
    profile = resolve_profile(profile)
    device = pick_device()
    data = load_cifar10(data_root)
    print(f"profile: {profile}\ndevice: {device_info(device)['name']}\ndata: {data.describe()}\n"
          f"fingerprint: {data.fingerprint}")
    return Session(profile, str(device), data)
