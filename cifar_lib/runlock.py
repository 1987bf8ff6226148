"""One process per run. A run holds an exclusive lock while it trains, so a second `sweep`
started beside the first (the natural way to "use both cores") or a `train --resume` of a
live run skips or refuses that run instead of training it again under the same id. The
operating system drops a lock when its process dies, so a stopped run's lock is free at
once: the next process takes it over and resumes the run from its checkpoint."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

from .config import Config, ConfigError


class RunInProgress(ConfigError):
    """Another live process is training this run (same config, profile and seed)."""

    def __init__(self, message: str, owner: str):
        super().__init__(message)
        self.owner = owner              # "pid N on HOST"


_HELD: dict[Path, int] = {}      # lock file -> nesting depth in this process


def run_key(cfg: Config) -> str:
    """A short fingerprint of the settings that make a run (the description is prose)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k != "description"}
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def lock_path(cfg: Config, profile: str, seed: int, checkpoint_dir) -> Path:
    return Path(checkpoint_dir) / f"{cfg.name}-{profile}-seed{seed}-{run_key(cfg)}.lock"


@contextlib.contextmanager
def run_lock(cfg: Config, profile: str, seed: int, checkpoint_dir):
    """Hold this run's lock for the block, or raise RunInProgress naming the live owner.
    Re-entrant within one process (a sweep's lookup and the training it starts share it)."""
    path = lock_path(cfg, profile, seed, checkpoint_dir)
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    fd = _acquire(path, f"{cfg.name} [{profile}] seed {seed}")
    _HELD[path] = 1
    try:
        yield path
    finally:
        del _HELD[path]
        with contextlib.suppress(OSError):
            path.unlink()           # while still locked: a waiter re-checks the inode (below)
        os.close(fd)                # releases the lock


def _acquire(path: Path, what: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise RunInProgress(
                f"{what} is being trained by another process ({owner}); it is not trained "
                f"twice. Wait for it to finish (its record then appears), or stop that "
                f"process and run this command again to resume it", owner) from None
        try:                        # the file we locked may have been unlinked by its last owner
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
            return fd
        os.close(fd)


def _read_owner(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode().strip() or "pid unknown"
    except OSError:
        return "pid unknown"
