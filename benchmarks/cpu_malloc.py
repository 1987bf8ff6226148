"""Host malloc on a CPU: the engine's training steps with glibc's default malloc against
malloc that keeps freed memory (cifar_lib.device, what every CPU run now uses).

    python benchmarks/cpu_malloc.py [--models improved fast] [--batch-size 512] [--rounds 3]

The setting is process-wide and glibc's default cannot be restored once it is changed, so
every measurement is a fresh process, and the two settings alternate (ABAB...) so that drift
on a shared machine hits both. Each process reports images/s over --steps training steps
after --warmup, and its kernel (system) CPU seconds and page faults over those steps.
Writes results/benchmarks/cpu-malloc-<stamp>.json with the medians and their ratio.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from cifar_lib.device import keep_freed_memory, malloc_mode
from cifar_lib.paths import RESULTS_DIR
from cifar_lib.records import device_info, versions, write_record

MODES = ("default", "keep")


def child(model: str, batch_size: int, steps: int, warmup: int) -> dict:
    """One measurement, in this process, with the malloc CIFAR_CPU_MALLOC names."""
    from throughput import Trainer, Variant, load_images     # this script's folder

    keep_freed_memory()                                     # a no-op for CIFAR_CPU_MALLOC=default
    images, labels, _ = load_images()
    trainer = Trainer(model, Variant("engine"), images, labels, batch_size, torch.device("cpu"))
    for _ in range(warmup):
        trainer.step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    img_s = trainer.timed(steps)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"model": model, "malloc": malloc_mode(), "img_s": img_s,
            "system_seconds": after.ru_stime - before.ru_stime,
            "user_seconds": after.ru_utime - before.ru_utime,
            "page_faults": after.ru_minflt - before.ru_minflt}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["improved", "fast"])
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3, help="processes per setting and model")
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per process")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per process")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "benchmarks")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, args.steps, args.warmup)))
        return 0

    device = torch.device("cpu")
    print(f"device: {device_info(device)['name']}; torch {torch.__version__}; batch "
          f"{args.batch_size}, {args.steps} timed steps per process", flush=True)
    start, rows = time.perf_counter(), []
    for model in args.models:
        for round_ in range(args.rounds):
            for mode in MODES:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", model, "--batch-size", str(args.batch_size),
                     "--steps", str(args.steps), "--warmup", str(args.warmup)],
                    env={**os.environ, "CIFAR_CPU_MALLOC": mode}, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"measurement failed ({model}, {mode}):\n{out.stderr[-2000:]}")
                row = {**json.loads(out.stdout.strip().splitlines()[-1]), "asked": mode, "round": round_}
                rows.append(row)
                print(f"  {model:9s} {row['malloc']:25s} {row['img_s']:7.1f} img/s  system "
                      f"{row['system_seconds']:5.1f} s  page faults {row['page_faults']:,}", flush=True)

    summary = []
    for model in args.models:
        mine = [r for r in rows if r["model"] == model]
        median = {m: statistics.median(r["img_s"] for r in mine if r["asked"] == m) for m in MODES}
        kept_here = all(r["malloc"] != "default" for r in mine if r["asked"] == "keep")
        speedup = median["keep"] / median["default"] if kept_here else None
        summary.append({"model": model, "default_img_s": median["default"],
                        "kept_img_s": median["keep"], "speedup": speedup})
        print(f"{model}: {median['default']:.1f} -> {median['keep']:.1f} img/s (median), "
              + (f"{speedup:.2f}x" if speedup else "keeping freed memory is not available here"))

    stamp = dt.datetime.now(dt.timezone.utc)
    record = {"benchmark": "cpu_malloc", "created_at": stamp.isoformat(timespec="seconds"),
              "device": device_info(device), "versions": versions(),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "wall_seconds": time.perf_counter() - start, "summary": summary, "rows": rows}
    path = args.out / f"cpu-malloc-{stamp:%Y%m%dT%H%M%S}.json"
    write_record(record, path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
