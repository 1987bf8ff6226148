"""Command line of the CIFAR-10 study kit: python -m cifar_lib train | evaluate | sweep |
tune | report | configs."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import PROFILES, ConfigError, available_configs, load_config, resolve_profile
from .data import DataError
from .paths import CHECKPOINT_DIR, FIGURES_DIR, REPORT_DIR, RESULTS_DIR, RUNS_DIR
from .train import DivergenceError, TrainingInterrupted


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def time_to_accuracy(record: dict, target: float) -> str:
    """When validation accuracy first reached `target`, in epochs and minutes of training."""
    minutes = 0.0
    for h in record["history"]:
        minutes += h["train_seconds"] / 60
        if h["val_acc"] is not None and h["val_acc"] >= target:
            return f"val >= {target:.0%} after {_plural(h['epoch'], 'epoch')} ({minutes:.1f} min)"
    return f"val never reached {target:.0%}"


def training_line(cfg, profile: str, seed: int, data) -> str:
    """What a run is about to do, in one line; the images it trains on as split_data counts
    them (a smoke run's 1,024, not the split's 45,000 or 50,000)."""
    from .data import split_data

    images = len(split_data(data, cfg.val_size, final=cfg.final, train_subset=cfg.train_subset).train[1])
    return (f"training {cfg.name} (profile {profile}, seed {seed}): {cfg.model}, "
            f"{_plural(cfg.epochs, 'epoch')}, batch {cfg.batch_size}, {cfg.optimizer} lr "
            f"{cfg.lr:g}, {cfg.pipeline} pipeline, on {images:,} training images"
            + (" (final: the validation split's included)" if cfg.final else ""))


def _data(args):
    """CIFAR-10 from --data-root (or the default place), described on stderr: every
    command says which copy it uses, and whether it is the official release."""
    from .data import load_cifar10

    data = load_cifar10(args.data_root)
    print(data.describe(), file=sys.stderr)
    return data


def cmd_train(args) -> int:
    from .device import pick_device
    from .experiment import run_experiment, start_point
    from .runlock import run_lock

    if args.final and args.tune:
        raise ConfigError("--final trains on the validation split too and --tune never reads "
                          "the test set, so nothing would be scored: drop one of them")
    profile = resolve_profile(args.profile)
    cfg = load_config(args.config, profile, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, pipeline=args.pipeline,
                      final=True if args.final else None,
                      compile=True if args.compile else None)
    # Every check that needs no data comes before the data loads: the run's owner, the
    # device, what to resume, writable folders.
    with run_lock(cfg, profile, args.seed, args.checkpoint_dir):
        start_point(cfg, profile, args.seed, pick_device(args.device), args.resume,
                    args.results_dir, args.checkpoint_dir)
        data = _data(args)
        print(training_line(cfg, profile, args.seed, data), file=sys.stderr)
        record, path = run_experiment(cfg, profile=profile, seed=args.seed, data=data,
                                      device=args.device, results_dir=args.results_dir,
                                      checkpoint_dir=args.checkpoint_dir,
                                      progress=not args.quiet, resume=args.resume,
                                      read_test=not args.tune)
    f = record["final"]
    scores = " ".join(f"{k} {_pct(f[k])}" for k in
                      ("val_acc", "val_acc_tta", "test_acc", "test_acc_tta") if k in f)
    if not record["test_read"]:
        scores += " (tuning run: test set not read)"
    data_kind = "official data" if record["data"]["official"] else "NOT official data (local copy)"
    if cfg.target_val_acc and not cfg.final:
        scores += f" | {time_to_accuracy(record, cfg.target_val_acc)}"
    for warning in record.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{cfg.name} [{profile}] seed {args.seed}: {scores} | "
          f"train {record['train_seconds']:.1f} s, "
          f"wall {record['wall_seconds']:.1f} s | {record['device']['name']}, "
          f"{record['precision']} | {data_kind} | record {path} | model {record['checkpoint']}")
    return 0


def cmd_evaluate(args) -> int:
    from .device import Precision, pick_device
    from .evaluation import score
    from .checkpoints import load_model
    from .experiment import eval_loader

    dev = pick_device(args.device)
    model, cfg = load_model(args.checkpoint, dev)
    data = _data(args)
    # The same scoring as the end of a training run: TTA only if the config asks for it.
    test = score(model, eval_loader(cfg, data.test_images, data.test_labels, dev),
                       precision=Precision.resolve(cfg.precision, dev), tta=cfg.tta,
                       tta_shift=cfg.tta_shift)
    tta = f" test_acc_tta {_pct(test['acc_tta'])}" if "acc_tta" in test else ""
    print(f"{args.checkpoint}: test_acc {_pct(test['acc'])}{tta} "
          f"test_loss {test['loss']:.4f} on {len(data.test_labels)} images")
    return 0


WAIT_SECONDS = 120      # sweep --wait: how often to look again for runs other processes hold


def cmd_sweep(args) -> int:
    from .device import pick_device
    from .records import check_writable
    from .study.runner import run_sweep, run_sweep_shared
    from .study.sweeps import find_sweep
    from .study.tables import runs_frame, seed_summary

    sweep = find_sweep(args.name)
    if args.variant:
        try:    # with the baseline each variant is paired with (its finished runs are reused)
            sweep = sweep.subset([sweep.baseline, *[v for v in args.variant if v != sweep.baseline]])
        except ValueError as e:
            raise ConfigError(f"{e}; name them with --variant as written there") from None
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: the number of runs at once is 1 or more")
    if args.storage and args.jobs > 1:
        raise ConfigError("--storage spreads a sweep over workers already; start one command "
                          "per worker instead of --jobs")
    profile = resolve_profile(args.profile)
    sweep.check(profile)              # a mistake in the file is named before the data loads,
    pick_device(args.device)          # and so are a device this machine lacks
    check_writable(args.results_dir)  # and folders it cannot write
    check_writable(args.checkpoint_dir)
    data = _data(args)
    where = dict(device=args.device, results_dir=args.results_dir, checkpoint_dir=args.checkpoint_dir)
    if args.storage:
        records = run_sweep_shared(sweep, profile, data, args.storage, seeds=args.seeds, **where)
    else:
        records = run_sweep(sweep, profile, data, seeds=args.seeds, jobs=args.jobs, **where)
        # --wait: runs another process holds are waited for, so two terminals running the
        # same command share the queue and both end only when the whole sweep is recorded
        while args.wait and len(records) < len(sweep.runs(args.seeds)):
            held = len(sweep.runs(args.seeds)) - len(records)
            print(f"{_plural(held, 'run')} of {sweep.name} held by other processes: checking "
                  f"again in {WAIT_SECONDS} s", file=sys.stderr)
            time.sleep(WAIT_SECONDS)
            records = run_sweep(sweep, profile, data, seeds=args.seeds, jobs=args.jobs, **where)
    runs = runs_frame(records)
    if runs.empty:
        print("every planned run was taken by other workers")
        return 0
    for metric in (sweep.metric, f"{sweep.metric}_tta"):
        if runs[metric].notna().any():
            print(f"{metric}:\n{seed_summary(runs, metric=metric, order=list(sweep.variants)).to_string()}")
    return 0


def cmd_tune(args) -> int:
    from .device import pick_device
    from .study.runner import run_sweep
    from .study.sweeps import find_sweep
    from .study.tables import compare_sweep, runs_frame, summarise_effects
    from .study.tuning import check_n_trials, confirmation, default_study_name, study_for, tune

    if (args.config is None) == (args.sweep is None):
        raise ConfigError("tune needs a config (tune fast ...) or --sweep NAME (its baseline at "
                          "the sweep's budget), not both")
    sweep = find_sweep(args.sweep) if args.sweep is not None else None
    if args.confirm and args.sweep is None:
        raise ConfigError("--confirm trains the best trial with a sweep's declared seeds: name "
                          "the sweep with --sweep NAME")
    check_n_trials(args.n_trials, args.confirm)
    profile = resolve_profile(args.profile)
    # With --sweep the search starts from the sweep's baseline at the sweep's own budget, so
    # its trials and their confirmation stand beside that sweep's runs.
    if sweep:
        sweep.check(profile)          # a mistake in the file is named before the data loads
    pick_device(args.device)          # and so is a device this machine lacks
    cfg = sweep.config(sweep.baseline, profile) if sweep else load_config(args.config, profile)
    where = dict(results_dir=args.results_dir, checkpoint_dir=args.checkpoint_dir)
    data = _data(args)
    if args.n_trials:
        study = tune(cfg, profile=profile, data=data, n_trials=args.n_trials,
                     study_name=args.study_name, storage=args.storage, device=args.device, **where)
    else:
        study = study_for(cfg, profile, args.study_name, args.storage, args.results_dir)
        if study is None:
            raise ConfigError(f"no study {args.study_name or default_study_name(cfg, profile)} to confirm "
                              f"yet: run trials first (--n-trials N)")
    states = {}
    for t in study.trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    print(f"study {study.study_name}: {len(study.trials)} trials ({states}); best val_acc "
          f"{_pct(study.best_value)} with {study.best_params} (validation split only)")
    if args.confirm:
        check = confirmation(sweep, study, profile)
        records = run_sweep(check, profile, data, device=args.device, **where)
        table = compare_sweep(check, runs_frame(records))
        print(table.to_string(), summarise_effects(table), sep="\n")
    return 0


def cmd_report(args) -> int:
    import time

    from .report.build import build_report

    start = time.perf_counter()
    path = build_report(args.results_dir, args.figures_dir, args.report_dir, profile=args.profile)
    from .report.document import paper_shape

    shape = paper_shape(path.read_text(), path.with_suffix(".pdf"))
    print(f"wrote {path}, {path.with_suffix('.html')} and {path.with_suffix('.pdf')} from "
          f"{args.results_dir} in {time.perf_counter() - start:.1f} s: {shape['pages']} pages "
          f"and {shape['words']:,} words before the appendix")
    return 0


def cmd_configs(args) -> int:
    for name in available_configs():
        cfg = load_config(name, "full")
        print(f"{name:20s} {cfg.description}")
    return 0


def _shared_flags(results_dir: Path = RESULTS_DIR) -> tuple[argparse.ArgumentParser,
                                                             argparse.ArgumentParser]:
    """Flags shared by the commands: every one that scores a model takes the data and the
    device; every one that trains also a profile and where records (`results_dir` unless
    told) and checkpoints go. New parsers each call: a default set on one is not shared."""
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/")
    runs.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    profiled = argparse.ArgumentParser(add_help=False, parents=[runs])
    profiled.add_argument("--profile", default="auto", choices=("auto", *PROFILES),
                          help="auto: full with a CUDA GPU, cpu otherwise")
    profiled.add_argument("--results-dir", type=Path, default=results_dir,
                          help=f"where records go (default {results_dir.name}/)")
    profiled.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR)
    return runs, profiled


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cifar_lib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    runs, profiled = _shared_flags()

    t = sub.add_parser("train", parents=[_shared_flags(RUNS_DIR)[1]],   # one's own runs: runs/
                       help="train one config with one seed and write a results record")
    t.add_argument("--config", required=True, help="config name in configs/ or a .toml path")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--pipeline", choices=("tensor", "reference"), default=None)
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--final", action="store_true",
                   help="train on all 50,000 training images (no validation split); only once "
                        "every choice was made on validation")
    t.add_argument("--compile", action="store_true",
                   help="train the torch.compile'd model (scoring and branch weights run eagerly)")
    t.add_argument("--tune", action="store_true",
                   help="a tuning run: report validation accuracy only, never read the test set")
    t.add_argument("--resume", action="store_true",
                   help="continue the newest unfinished run of this config, profile and seed")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", parents=[runs], help="test accuracy of a saved checkpoint")
    e.add_argument("checkpoint")
    e.set_defaults(func=cmd_evaluate)

    w = sub.add_parser("sweep", parents=[profiled],
                       help="train (or reuse) every variant and seed of a sweep: "
                       "validation split only (a final sweep: the test set once per run)")
    w.add_argument("name", help="a sweep in configs/sweeps/ (core_study, block_ablation, ...)")
    w.add_argument("--variant", action="append", default=None,
                   help="train only this variant and the baseline it is compared with "
                   "(repeatable; the baseline's finished runs are reused); default: all of them")
    w.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train these seeds (for every variant); default: the sweep file's")
    w.add_argument("--jobs", type=int, default=1,
                   help="runs at once, in worker processes sharing the device (or one GPU "
                        "each when several are visible); a rerun resumes unfinished runs")
    w.add_argument("--wait", action="store_true",
                   help="when another process is training some of the sweep's runs, wait for "
                        "them and go on until every planned run is recorded")
    w.add_argument("--storage", default=None,
                   help="share the sweep with workers on other machines through an Optuna "
                        "storage (journal:PATH on a shared disk, sqlite:///PATH, postgresql://...): "
                        "each worker runs the same command and takes the next unclaimed run")
    w.set_defaults(func=cmd_sweep)

    u = sub.add_parser("tune", parents=[profiled],
                       help="Optuna search (TPE, median pruning) on the validation split")
    u.add_argument("config", nargs="?", default=None,
                   help="config name in configs/ or a .toml path (or --sweep)")
    u.add_argument("--sweep", default=None,
                   help="search from this sweep's baseline at the sweep's budget (core_study ...)")
    u.add_argument("--n-trials", type=int, required=True,
                   help="trials this worker runs (0 with --confirm: only confirm)")
    u.add_argument("--confirm", action="store_true",
                   help="then train the best trial's settings with the sweep's declared seeds, "
                        "paired with its baseline (needs --sweep)")
    u.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by all workers (default: SQLite under "
                        "results/<profile>/tune/)")
    u.add_argument("--study-name", default=None, help="default: <config>-<profile>")
    u.set_defaults(func=cmd_tune)

    r = sub.add_parser("report", help="rebuild figures/ and report/ from results/ (no training)")
    r.add_argument("--profile", default="cpu", choices=PROFILES,
                   help="which records to report (smoke records are never reported by default)")
    r.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    r.add_argument("--figures-dir", type=Path, default=FIGURES_DIR)
    r.add_argument("--report-dir", type=Path, default=REPORT_DIR)
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("configs", help="list the configs in configs/")
    c.set_defaults(func=cmd_configs)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, PermissionError) as e:     # the user's to fix: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"error: training diverged: {e}. The run's record is marked 'failed'.",
              file=sys.stderr)
        return 3
    except TrainingInterrupted as e:
        # train resumes with --resume; a sweep resumes its unfinished run by itself
        if not e.resumable:
            again = {"train": "run the same command again to start it over",
                     "sweep": "run the same command again: recorded runs are reused and "
                              "this one starts over"}.get(args.command, "start it again")
            print(f"interrupted ({e}), before its first epoch ended: there is no checkpoint "
                  f"to resume from; {again}", file=sys.stderr)
            return 130
        how = {"train": ": add --resume to the same command to continue",
               "sweep": ": run the same command again to continue (recorded runs are reused "
                        "and this one resumes from its checkpoint)"}.get(args.command, "")
        print(f"interrupted ({e}); the last epoch's checkpoint is kept{how}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
