"""Running a sweep: every (variant, seed) run trained or read back from results/."""
from __future__ import annotations

from tqdm import tqdm

from .data import CIFAR10
from .experiment import run_or_load
from .sweeps import AUGMENTATION, HYPERPARAMETERS, SWEEPS, Sweep  # noqa: F401 (the notebooks' names)


def run_sweep(sweep: Sweep, profile: str, data: CIFAR10, *, seeds=None, **kwargs) -> list[dict]:
    """Every (variant, seed) run of the sweep, trained or read back from results/."""
    seeds = sweep.seeds if seeds is None else seeds
    jobs = [(v, s) for v in sweep.variants for s in seeds]
    records = []
    for variant, seed in tqdm(jobs, desc=f"{sweep.name} [{profile}]"):
        tags = {"sweep": sweep.name, "variant": variant, "factor": sweep.factor(variant)}
        record, _ = run_or_load(sweep.config(variant, profile), profile=profile, seed=seed,
                                data=data, read_test=False, tags=tags, progress=False,
                                verbose=False, **kwargs)
        records.append(record)
    return records
