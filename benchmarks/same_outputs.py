"""Does this checkout train exactly what an earlier commit trained? A long study keeps
running from a worktree at a fixed commit while the code moves on; its runs stay
comparable with new ones only while every variant's training is bit for bit the same.

    python benchmarks/same_outputs.py REV [--sweep recipe_study] [--seed 0]

trains every variant of the sweep once, at the smoke profile (a few seconds each), from a
temporary worktree at REV and from this checkout, and compares what each record says of
training: the status, every epoch's losses, accuracies and loss trace, the final scores
and the parameter count. Timings are left out. Exit 1 if any variant differs. Needs the
data where `CIFAR10_ROOT` or data/ points; takes about 4 minutes per side on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def train_all(tree: Path, sweep: str, seed: int, out: Path) -> dict[str, tuple]:
    """Every variant of `sweep` at the smoke profile, trained from `tree`: variant -> what
    its record says of training."""
    env = {**os.environ, "CIFAR10_ROOT": os.environ.get("CIFAR10_ROOT", str(REPO / "data")),
           "PYTHONPATH": str(tree)}          # that tree's cifar_lib, whatever is installed
    print(f"training every variant of {sweep} from {tree}", flush=True)
    done = subprocess.run([sys.executable, "-m", "cifar_lib", "sweep", sweep, "--profile", "smoke",
                           "--seeds", str(seed), "--results-dir", str(out / "results"),
                           "--checkpoint-dir", str(out / "checkpoints")],
                          cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the sweep failed in {tree}:\n{done.stderr[-2000:]}")
    trained = {}
    for path in (out / "results").rglob("*.json"):
        r = json.loads(path.read_text())
        epochs = [(h["train_loss"], h["train_acc"], h["val_loss"], h["val_acc"], h["loss_trace"])
                  for h in r["history"]]
        trained[r["tags"]["variant"]] = (r["status"], epochs, r.get("final"), r["model"]["parameters"])
    return trained


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the commit to compare with (e.g. the study's worktree commit)")
    parser.add_argument("--sweep", default="recipe_study")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        old_tree = scratch / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.rev],
                       cwd=REPO, check=True, capture_output=True)
        try:
            old = train_all(old_tree, args.sweep, args.seed, scratch / "old")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO, check=True)
        new = train_all(REPO, args.sweep, args.seed, scratch / "new")
    differ = sorted(v for v in old.keys() | new.keys() if old.get(v) != new.get(v))
    for variant in sorted(old.keys() | new.keys()):
        print(f"{variant:40s} {'DIFFERENT' if variant in differ else 'identical'}")
    print(f"{len(old.keys() | new.keys()) - len(differ)} of {len(old.keys() | new.keys())} variants "
          f"train identically at {args.rev} and in this checkout")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
