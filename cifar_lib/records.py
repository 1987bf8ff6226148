"""Results records: one JSON file per run under results/, written atomically, plus the
environment facts (versions, device, git commit) every record carries."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from .paths import REPO_ROOT, RESULTS_DIR


SCHEMA = 1


def run_folder(results_dir, profile: str, config_name: str) -> Path:
    """Where a run's record and its predictions live: results/<profile>/<config>/."""
    return Path(results_dir) / profile / config_name


def run_prefix(config_name: str, profile: str, seed: int) -> str:
    """How every run id (and so its file names) starts: <config>-<profile>-seed<N>."""
    return f"{config_name}-{profile}-seed{seed}"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file in the same folder, then rename it into place: readers
    see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600); give it the mode any new file gets.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_record(record: dict, path: Path) -> Path:
    atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=False) + "\n").encode())
    return path


def read_record(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def iter_records(root: str | os.PathLike = RESULTS_DIR, include_smoke: bool = False):
    """Every run record under root. Left out: benchmarks, smoke runs unless asked, and
    results/archive/ (records kept as history, which no table, notebook or report reads)."""
    for p in sorted(Path(root).rglob("*.json")):
        parts = set(p.relative_to(root).parts)
        if parts & {"benchmarks", "archive"} or (not include_smoke and "smoke" in parts):
            continue
        yield p, read_record(p)


@dataclass
class RunFiles:
    """Where one run's files go: its record and predictions under results/, its progress
    checkpoint and final weights under checkpoints/."""
    run_id: str
    record: Path                    # results/<profile>/<config>/<run id>.json
    predictions: Path               # ... .predictions.npz beside it
    progress: Path                  # checkpoints/<run id>.progress.pt, until the run completes
    model: Path                     # checkpoints/<run id>.pt, the trained weights

    @classmethod
    def make(cls, cfg, profile, seed, results_dir, checkpoint_dir, state) -> "RunFiles":
        """Names for a new run (or the resumed one); fails now if a folder is not writable."""
        folder, checkpoint_dir = run_folder(results_dir, profile, cfg.name), Path(checkpoint_dir)
        check_writable(folder)
        check_writable(checkpoint_dir)
        run_id = state["run_id"] if state else (f"{run_prefix(cfg.name, profile, seed)}-"
                                                f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
        return cls(run_id, folder / f"{run_id}.json", folder / f"{run_id}.predictions.npz",
                   checkpoint_dir / f"{run_id}.progress.pt", checkpoint_dir / f"{run_id}.pt")


class RunRecord:
    """One run's record: started once, then changed only through these methods, each of
    which says when the file is rewritten (atomically, so a reader never sees half)."""

    def __init__(self, path: Path, fields: dict):
        self.path, self.fields = Path(path), fields

    def __getitem__(self, key):
        return self.fields[key]

    @property
    def history(self) -> list[dict]:
        return self.fields["history"]

    def add_epoch(self, row: dict) -> None:
        """A finished epoch (not written yet: the progress checkpoint holds it until the
        run stops or completes)."""
        self.fields["history"].append(row)

    def stop(self, status: str, error: str, elapsed: dict, resumable: bool = True) -> None:
        """A run that ended early ('failed', 'interrupted', 'pruned'), with every finished
        epoch; written. An interrupted run names how to resume it, if it left a checkpoint."""
        self.fields.update(status=status, error=error, **elapsed)
        if status == "interrupted" and resumable:
            self.fields["resume_with"] = "--resume"
        self.write()

    def complete(self, final: dict, test_read: bool, elapsed: dict, checkpoint: Path,
                 finished_at: str) -> None:
        """The scores of a finished run; written."""
        self.fields.update(status="complete", final=final, test_read=test_read, **elapsed,
                           checkpoint=str(checkpoint), finished_at=finished_at)
        self.write()

    def attach(self, **files) -> None:
        """Files saved beside the record (by name); written by the next write()."""
        self.fields.update(files)

    def warn(self, message: str) -> None:
        self.fields.setdefault("warnings", []).append(message)

    def write(self) -> Path:
        return write_record(self.fields, self.path)


def check_writable(folder: Path) -> None:
    """Fail now, not after an hour of training, if records cannot be written to `folder`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write results to {folder} ({e.strerror}); choose "
                              "another folder with --results-dir or fix its permissions") from None


def git_commit() -> str | None:
    if REPO_ROOT is None:
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        # Changed code makes a run "-dirty"; changed results do not (an Optuna study's
        # tracked database changes as soon as a search starts, from a clean checkout).
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)results"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict:
    import numpy
    import torchvision

    from . import __version__
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "cifar_lib": __version__}


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 7B13", ...): machines with the same core count
    differ several-fold in speed, so every time is kept with the CPU that made it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:                                                    # macOS
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def matrix_units(flags: set[str]) -> str:
    """The widest units a CPU offers for convolutions ('AMX', 'AVX512-BF16', 'AVX512',
    'AVX2'; '' if none of these). A virtual machine may hide some: under the same model
    string FastNet has trained in bf16 at ~130 images/s on one machine and at 250-430 on
    another, two machines whose runs must not be paired, so a run names its units."""
    for unit, flag in (("AMX", "amx_bf16"), ("AVX512-BF16", "avx512_bf16"),
                       ("AVX512", "avx512f"), ("AVX2", "avx2")):
        if flag in flags:
            return unit
    return ""


def device_info(device: torch.device) -> dict:
    """What ran the run: device type and name, and always the CPU model, its matrix units
    and core count. On a CPU the name (what pairing compares) includes the units."""
    info = {"type": device.type, "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "cpu_units": matrix_units(cpu_flags()), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        units = f", {info['cpu_units']}" if info["cpu_units"] else ""
        info["name"] = f"{info['cpu']} ({os.cpu_count()} cores{units})"
    return info
