"""Sweeps as data: a base config, named variants (overrides), seeds; run or reuse each run."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tqdm import tqdm

from .config import load_config
from .data import CIFAR10
from .experiment import run_or_load


@dataclass(frozen=True)
class Sweep:
    """Variants of one base config, each trained with every seed and compared on the
    validation split (sweep runs never read the test set)."""
    name: str
    base: str
    variants: dict[str, dict]
    factors: dict[str, str] = field(default_factory=dict)   # variant -> what it varies
    seeds: tuple[int, ...] = (0, 1, 2)

    def config(self, variant: str, profile: str):
        cfg = load_config(self.base, profile, **self.variants[variant])
        # Runs of a sweep live together: results/<profile>/<sweep name>/
        return dataclasses.replace(cfg, name=self.name)


AUGMENTATION = Sweep(
    name="augmentation", base="study",
    variants={
        "none": {"augment": []},
        "crop": {"augment": ["crop"]},
        "flip": {"augment": ["flip"]},
        "rotation": {"augment": ["rotate"]},
        "crop+flip": {"augment": ["crop", "flip"]},
        "all": {"augment": ["crop", "flip", "rotate"]},
    })

HYPERPARAMETERS = Sweep(
    name="hyperparameters", base="study",
    variants={
        "base": {},
        "lr 3e-4": {"lr": 3e-4},
        "lr 3e-3": {"lr": 3e-3},
        "dropout 0": {"model_args": {"dropout": 0.0}},
        "dropout 0.3": {"model_args": {"dropout": 0.3}},
        "no batch norm": {"model_args": {"batch_norm": False}},
        "SGD": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4},
        "AdamW": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        "one-cycle": {"schedule": "onecycle"},
    },
    factors={"base": "base", "lr 3e-4": "learning rate", "lr 3e-3": "learning rate",
             "dropout 0": "dropout", "dropout 0.3": "dropout", "no batch norm": "batch norm",
             "SGD": "optimizer", "AdamW": "optimizer", "one-cycle": "schedule"})

SWEEPS = {s.name: s for s in (AUGMENTATION, HYPERPARAMETERS)}


def run_sweep(sweep: Sweep, profile: str, data: CIFAR10, *, seeds=None, **kwargs) -> list[dict]:
    """Every (variant, seed) run of the sweep, trained or read back from results/."""
    seeds = sweep.seeds if seeds is None else seeds
    jobs = [(v, s) for v in sweep.variants for s in seeds]
    records = []
    for variant, seed in tqdm(jobs, desc=f"{sweep.name} [{profile}]"):
        tags = {"sweep": sweep.name, "variant": variant,
                "factor": sweep.factors.get(variant, variant)}
        record, _ = run_or_load(sweep.config(variant, profile), profile=profile, seed=seed,
                                data=data, read_test=False, tags=tags, progress=False,
                                verbose=False, **kwargs)
        records.append(record)
    return records
