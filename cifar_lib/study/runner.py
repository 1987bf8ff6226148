"""Running a sweep: every (variant, seed) run trained or read back from results/, in this
process, in N worker processes that share the device (or spread over the GPUs), or in any
number of workers on many machines that share an Optuna storage."""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from ..config import ConfigError
from ..data import CIFAR10
from ..paths import RESULTS_DIR
from .reuse import find_record, machine_key, run_or_load, running_here
from ..runlock import RunInProgress
from ..train import DivergenceError, TrainingInterrupted, progress_stream
from .sweeps import AUGMENTATION, HYPERPARAMETERS, SWEEPS, Sweep  # noqa: F401 (the notebooks' names)


def run_sweep(sweep: Sweep, profile: str, data: CIFAR10, *, seeds=None, jobs: int = 1,
              **kwargs) -> list[dict]:
    """Every (variant, seed) run of the sweep, trained or read back from results/, in the
    order variant by variant, seed by seed. `seeds`, where given, replaces every variant's.
    A run another live process is training is skipped (runlock.py), so two commands of one
    sweep share its queue; its record is read back by the next call once it lands.

    With `jobs` > 1, that many worker processes each take the next run not yet taken, so
    no run is done twice; small CIFAR nets leave a big GPU mostly idle, and N runs at once
    fill it. Workers share the device, or take GPUs in turn when several are visible; on a
    CPU each gets cpu_count / jobs threads. A run whose worker died leaves its progress
    checkpoint: running the same sweep again resumes it (as with jobs = 1).

    Runs already recorded are reused from any machine, but where a variant of a seed
    trains here, the baseline of that seed is trained here too (see bases_needed_here).
    """
    tasks = sweep.runs(seeds)
    kwargs.setdefault("results_dir", RESULTS_DIR)       # a sweep's runs are the study's evidence
    here = bases_needed_here(sweep, profile, data, tasks, kwargs)
    if jobs <= 1:
        # a CPU run takes minutes to an hour: a bar over its epochs shows it is alive
        records = [_run(sweep, profile, data, v, s, kwargs, progress="epochs",
                        on_this_device=v == sweep.baseline and s in here)
                   for v, s in tqdm(tasks, desc=f"{sweep.name} [{profile}]", file=progress_stream())]
        return [r for r in records if r is not None]     # None: another process holds it
    if not Path(data.root).is_dir():
        raise ConfigError(f"--jobs needs the data on disk for the workers to read; "
                          f"{data.root!r} is not a folder")
    context = multiprocessing.get_context("spawn")        # fork and torch's threads do not mix
    counter = context.Value("i", 0)
    done = {}
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                               initargs=(str(data.root), jobs, counter))
    try:
        futures = {pool.submit(_worker_run, sweep, profile, v, s, kwargs,
                               v == sweep.baseline and s in here): (v, s) for v, s in tasks}
        for future in tqdm(as_completed(futures), total=len(futures), file=progress_stream(),
                           desc=f"{sweep.name} [{profile}] x{jobs}"):
            done[futures[future]] = future.result()
    finally:
        # On Ctrl-C (or a run's error) the queued runs are dropped; the running ones got
        # the signal too and stop at a step boundary, keeping their checkpoints.
        pool.shutdown(wait=True, cancel_futures=True)
    return [done[t] for t in tasks if done[t] is not None]   # None: another process holds it


def bases_needed_here(sweep: Sweep, profile: str, data: CIFAR10, tasks, kwargs: dict) -> set[int]:
    """The seeds whose baseline run must come from this device: a difference is only taken
    between runs of the same seed on the same device and precision, so where a variant of
    a seed trains here (it has no record yet) or last trained here, the baseline of that
    seed is trained here too, even if another machine has a record of it."""
    results_dir = kwargs.get("results_dir", RESULTS_DIR)
    seeds = set()
    for variant, seed in tasks:
        if variant == sweep.baseline or seed in seeds:
            continue
        cfg = sweep.config(variant, profile)
        found = find_record(cfg, profile=profile, seed=seed, data=data, results_dir=results_dir,
                            read_test=sweep.final)
        if found is None or machine_key(found[0]) == running_here(cfg, kwargs.get("device")):
            seeds.add(seed)
    return seeds


def _run(sweep: Sweep, profile: str, data: CIFAR10, variant: str, seed: int, kwargs: dict,
         progress: bool | str = False, on_this_device: bool = False) -> dict:
    tags = {"sweep": sweep.name, "variant": variant, "factor": sweep.factor(variant)}

    def run():
        return run_or_load(sweep.config(variant, profile), profile=profile, seed=seed, data=data,
                           read_test=sweep.final, tags=tags, progress=progress, verbose=False,
                           resume_unfinished=True, on_this_device=on_this_device,
                           reuse_failed=True, **kwargs)[0]
    try:
        return run()
    except RunInProgress as e:
        # Two sweeps of one queue share its runs: each skips the run the other holds.
        print(f"{sweep.name} {variant} seed {seed}: skipped, another process is training it "
              f"({e.owner}); its record is read back once it lands", file=sys.stderr)
        return None
    except DivergenceError as e:
        # A run that diverges failed to train: a result the tables report, not a reason to
        # stop the sweep. Its record (status 'failed') is what the sweep gives back, now
        # and on every rerun.
        print(f"{sweep.name} {variant} seed {seed}: {e}; recorded as a failure to train",
              file=sys.stderr)
        return run()


# --------------------------------------------------------------------------- workers
_WORKER: dict = {}


def _start_worker(data_root: str, jobs: int, counter) -> None:
    import torch

    from ..data import load_cifar10

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _WORKER["parent"] = os.getppid()
    gpus = torch.cuda.device_count()
    _WORKER["device"] = f"cuda:{index % gpus}" if gpus > 1 else None
    if not gpus:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
    _WORKER["data"] = load_cifar10(data_root, download=False)


def _worker_run(sweep: Sweep, profile: str, variant: str, seed: int, kwargs: dict,
                on_this_device: bool) -> dict | None:
    # The pool hands a worker its next runs ahead of time. A worker whose run a signal
    # stopped (Ctrl-C, SIGTERM), or whose sweep is gone (its parent died), starts none of
    # them: else it would go on training, unwatched, after the sweep was stopped.
    if _WORKER.get("stopped") or os.getppid() != _WORKER["parent"]:
        return None
    kwargs = {**kwargs, "device": kwargs.get("device") or _WORKER["device"]}
    try:
        return _run(sweep, profile, _WORKER["data"], variant, seed, kwargs, on_this_device=on_this_device)
    except TrainingInterrupted:
        _WORKER["stopped"] = True
        raise


# --------------------------------------------------------------------------- many machines
def run_sweep_shared(sweep: Sweep, profile: str, data: CIFAR10, storage: str, *, seeds=None,
                     heartbeat: int = 60, **kwargs) -> list[dict]:
    """This worker's share of a sweep spread over many machines. The sweep's planned
    (variant, seed) runs are the trials of an Optuna study in `storage` (see
    tuning.open_storage), queued once by the worker that creates it; every worker running
    the same command takes the next queued run until none is left, so no run is done twice.
    Records, resume and atomic writes are those of any run. The workers must be one kind
    of device at one precision (the first to start names it): runs from another would
    not pair with the rest, so such a worker is refused. On a database storage each
    worker beats a heartbeat: a run whose worker stopped beating for 2 x `heartbeat`
    seconds is failed and queued again, and resumes from its progress checkpoint when the
    workers share the checkpoints folder. Returns the records this worker wrote or reused."""
    import optuna

    from .tuning import open_storage

    tasks = sweep.runs(seeds)
    kwargs.setdefault("results_dir", RESULTS_DIR)
    here_seeds = bases_needed_here(sweep, profile, data, tasks, kwargs)   # the rule run_sweep keeps
    storage = open_storage(storage, heartbeat=heartbeat, retry_stale=True)
    # The study is named by exactly the runs it plans: another --variant or --seeds choice,
    # or a changed sweep file, is another study.
    import hashlib
    plan = hashlib.sha1(repr((sweep.base, sweep.profiles.get(profile), sweep.final,
                              [(v, sweep.variants[v], s) for v, s in tasks])).encode()).hexdigest()[:10]
    name = f"sweep-{sweep.name}-{profile}-{plan}"
    here = list(running_here(sweep.config(sweep.baseline, profile), kwargs.get("device")))
    try:        # the one worker that creates the study queues the planned runs, once
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.set_user_attr("ran_on", here)
        for i, (variant, seed) in enumerate(tasks):
            study.enqueue_trial({"run": i}, user_attrs={"variant": variant, "seed": seed})
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    first = study.user_attrs.get("ran_on", here)
    if first != here:
        raise ConfigError(f"sweep {sweep.name}: the study {name} in this storage runs on "
                          f"{first[0]} at {first[1]}, and this worker is {here[0]} at {here[1]}; "
                          f"its runs would not pair with the others' (a difference is only taken "
                          f"between runs on the same device and precision). Start this sweep's "
                          f"workers on machines of one kind, or give this machine its own storage.")
    done: list[dict] = []

    def objective(trial):
        if "variant" not in trial.user_attrs:          # not a queued run: the queue is empty
            trial.study.stop()
            raise optuna.TrialPruned("every planned run is taken")
        variant, seed = tasks[trial.suggest_int("run", 0, len(tasks) - 1)]
        record = _run(sweep, profile, data, variant, seed, kwargs, progress="epochs",
                      on_this_device=variant == sweep.baseline and seed in here_seeds)
        if record is None:                 # a local process is training it: not ours
            raise optuna.TrialPruned("another process on this machine is training this run")
        done.append(record)
        return record["final"][sweep.metric] if record["status"] == "complete" else 0.0  # diverged

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective)
    return done
