"""Training throughput: the seed's pipeline against the engine, side by side in one run.

    python benchmarks/throughput.py [--batch-size 128] [--repeats 7] [--steps 8] [--ladder]

(with the kit installed, as `bash run.sh setup` does, or with PYTHONPATH=. from the
repository root)

For every registered model it times training steps (forward, backward, optimizer) of
  reference  the seed's way: torchvision transforms + DataLoader, per-branch blocks, fp32,
             contiguous memory;
  engine     device-resident data with batch augmentation, channels-last, the precision
             `auto` picks for this device, the cheap dropout mask, and the block form that
             is faster on this device;
  + torch.compile  the engine compiled (with --compile), timed beside the eager engine.
Repeats of the variants alternate (ABAB...), so drift on a shared machine hits them alike; each
reports the median images/s. With --ladder, ImprovedNet also gets one row per engine
feature added in turn, and a row with the fused block instead. Figures go to results/benchmarks/ with device and versions.
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cifar_lib.device import keep_freed_memory, malloc_mode
from cifar_lib.data import DataError, load_cifar10
from cifar_lib.device import Precision, pick_device
from cifar_lib.loaders import make_loader
from cifar_lib.models import MODELS, build_model, engine_defaults
from cifar_lib.paths import RESULTS_DIR
from cifar_lib.records import device_info, versions, write_record

AUGMENT = {"augment": ("crop", "flip", "rotate"), "rotate_degrees": 10.0, "crop_padding": 4}


@dataclass(frozen=True)
class Variant:
    name: str
    pipeline: str = "tensor"
    fused: bool | None = None          # None: what engine_defaults picks for the device
    cheap_dropout: bool = True
    channels_last: bool = True
    precision: str = "auto"
    compile: bool = False


REFERENCE = Variant("reference", pipeline="reference", fused=False, cheap_dropout=False,
                    channels_last=False, precision="fp32")
LADDER = [
    Variant("+ tensor loader", fused=False, cheap_dropout=False, channels_last=False,
            precision="fp32"),
    Variant("+ channels-last", fused=False, cheap_dropout=False, precision="fp32"),
    Variant("+ autocast", fused=False, cheap_dropout=False),
    Variant("+ cheap dropout mask", fused=False),
    Variant("  with fused blocks", fused=True),
]


class Trainer:
    """One model + optimizer + endless batch stream, set up as a variant says."""

    def __init__(self, model_name: str, variant: Variant, images, labels, batch_size: int,
                 device: torch.device):
        self.device = device
        self.precision = Precision.resolve(variant.precision, device)
        torch.manual_seed(0)
        if "fused" in engine_defaults(device, model_name):      # models with both block forms
            fused = engine_defaults(device, model_name)["fused"] if variant.fused is None else variant.fused
            switches = {"fused": fused, "cheap_dropout": variant.cheap_dropout}
        else:                                                    # FastNet: one block form
            fused, switches = None, {}
        self.fused = fused
        model = build_model(model_name, **switches).to(device)
        if variant.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if variant.compile else model
        self.model.train()
        self.optimizer = torch.optim.RMSprop([p for p in self.model.parameters() if p.requires_grad],
                                             lr=1e-3)
        # The tensor loader hands out channels-last batches; a variant without
        # channels-last must not get that layout for free.
        self.layout = torch.channels_last if variant.channels_last else torch.contiguous_format
        self.loader = make_loader(variant.pipeline, images, labels, batch_size, device=device,
                                  train=True, **AUGMENT)
        self.batches = self._forever()

    def _forever(self):
        for epoch in itertools.count():
            if hasattr(self.loader, "set_epoch"):
                self.loader.set_epoch(epoch)
            yield from self.loader

    def step(self):
        x, y = next(self.batches)
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.layout)
        y = y.to(self.device, non_blocking=True)
        with self.precision.autocast():
            loss = F.cross_entropy(self.model(x).float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return len(y)

    def timed(self, steps: int) -> float:
        """Images per second over `steps` training steps."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start, images = time.perf_counter(), 0
        for _ in range(steps):
            images += self.step()
        sync()
        return images / (time.perf_counter() - start)


def measure(model_name, variants, images, labels, args, device) -> list[dict]:
    trainers = [Trainer(model_name, v, images, labels, args.batch_size, device) for v in variants]
    for t in trainers:                 # warm-up: allocator, oneDNN / cuDNN kernel choice, compile
        for _ in range(args.warmup):
            t.step()
    rates = [[] for _ in trainers]
    for _ in range(args.repeats):      # interleaved repeats
        for t, r in zip(trainers, rates):
            r.append(t.timed(args.steps))
    rows = []
    for v, t, r in zip(variants, trainers, rates):
        rows.append({"model": model_name, "variant": v.name, "pipeline": v.pipeline,
                     "fused": t.fused, "cheap_dropout": v.cheap_dropout,
                     "channels_last": v.channels_last,
                     "precision": t.precision.name, "compile": v.compile,
                     "median_img_s": statistics.median(r), "min_img_s": min(r),
                     "max_img_s": max(r), "repeats": r})
    return rows


def load_images(n: int = 5000):
    try:
        data = load_cifar10(download=False)
        return data.train_images[:n], data.train_labels[:n], data.describe()
    except DataError:
        rng = np.random.default_rng(0)   # speed does not depend on pixel values
        return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                rng.integers(0, 10, n), "random uint8 images (CIFAR-10 not found)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per variant")
    ap.add_argument("--steps", type=int, default=8, help="training steps per repeat")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    ap.add_argument("--models", nargs="*", default=sorted(MODELS))
    ap.add_argument("--ladder", action="store_true", help="one row per engine feature (ImprovedNet)")
    ap.add_argument("--compile", action="store_true", help="engine with torch.compile")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "benchmarks")
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    if device.type == "cpu":          # as every CPU training run does (benchmarks/cpu_malloc.py)
        keep_freed_memory()
    images, labels, data_note = load_images()
    print(f"device: {device_info(device)['name']}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; data: {data_note}", flush=True)
    rows = []
    start = time.perf_counter()
    for name in args.models:
        variants = [REFERENCE, *(LADDER if args.ladder and name == "improved" else [Variant("engine")])]
        if args.compile:             # beside the eager engine, so the ratio comes from one run
            variants.append(Variant("+ torch.compile", compile=True))
        rows += measure(name, variants, images, labels, args, device)
        print(f"  {name}: done after {time.perf_counter() - start:.0f} s", flush=True)

    table = pd.DataFrame(rows)
    ref = table[table.variant == "reference"].set_index("model").median_img_s
    table["speedup"] = table.median_img_s / table.model.map(ref)
    shown = table[["model", "variant", "fused", "precision", "median_img_s", "min_img_s",
                   "max_img_s", "speedup"]]
    print()
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))

    stamp = dt.datetime.now(dt.timezone.utc)
    record = {"benchmark": "throughput", "created_at": stamp.isoformat(timespec="seconds"),
              "device": device_info(device), "host_malloc": malloc_mode(),
              "versions": versions(), "data": data_note,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "wall_seconds": time.perf_counter() - start,
              "rows": json.loads(table.to_json(orient="records"))}   # plain JSON types
    path = args.out / f"throughput-{device.type}-{stamp:%Y%m%dT%H%M%S}.json"
    write_record(record, path)
    print(f"\nwrote {path}")
    engine_rows = table[(table.model == "improved") & (table.variant != "reference")
                        & table.cheap_dropout & (table.fused == engine_defaults(device, "improved")["fused"])
                        & (table.compile == args.compile)]
    if len(engine_rows):
        print(f"ImprovedNet engine/reference speedup: {engine_rows.iloc[-1].speedup:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
