"""Reusing runs, as a study needs it: the record of an identical finished run is read
back instead of training again (so notebooks re-run in seconds), and a run that will be
paired with another must have run on the same kind of machine at the same precision."""
from __future__ import annotations

from pathlib import Path

from ..checkpoints import unfinished_run
from ..config import Config, changed_settings
from ..data import CIFAR10
from ..device import Precision, pick_device
from ..paths import CHECKPOINT_DIR, RESULTS_DIR, record_folders
from ..records import device_info, read_record, run_folder, run_prefix
from ..runlock import run_lock


def machine_key(record: dict) -> tuple[str, str]:
    """Where a run ran, as pairing needs it: (device name, precision). Two runs are compared
    only when their keys are equal; a CPU's name carries its model, cores and matrix units."""
    return record["device"]["name"], record["precision"]


def running_here(cfg: Config, device: str | None = None) -> tuple[str, str]:
    """(device name, precision) as a record of `cfg` trained in this process would say them."""
    dev = pick_device(device)
    return device_info(dev)["name"], Precision.resolve(cfg.precision, dev).name


def find_record(cfg: Config, *, profile: str, seed: int, data: CIFAR10,
                results_dir: Path = RESULTS_DIR, read_test: bool = True,
                ran_on: tuple[str, str] | None = None,
                statuses: tuple[str, ...] = ("complete",)) -> tuple[dict, Path] | None:
    """The newest record of exactly this config, profile and seed on the same data (by
    fingerprint) that ended in one of `statuses` ('failed': it diverged), that read the
    test set if `read_test` asks for it (a failed run read nothing), and, with `ran_on` =
    (device name, precision), that ran there; None if there is none."""
    folder = run_folder(results_dir, profile, cfg.name)
    for path in sorted(folder.glob(f"{run_prefix(cfg.name, profile, seed)}-*.json"), reverse=True):
        record = read_record(path)
        if (record.get("status") in statuses and not changed_settings(record["config"], cfg)
                and record["data"]["fingerprint"] == data.fingerprint
                and (record["status"] == "failed" or record["test_read"] or not read_test)
                and (ran_on is None or ran_on == machine_key(record))):
            return record, path
    return None


def run_or_load(cfg: Config, *, profile: str, seed: int = 0, data: CIFAR10,
                results_dir: Path | None = None, read_test: bool = True, tags: dict | None = None,
                progress: bool | str = "epochs", verbose: bool = True,
                resume_unfinished: bool = False, checkpoint_dir: Path = CHECKPOINT_DIR,
                on_this_device: bool = False, reuse_failed: bool = False, **kwargs) -> tuple[dict, Path]:
    """Experiments are data: reuse the record of an identical finished run if there is one
    (so notebooks re-run in seconds), otherwise train and write a new one; with
    `resume_unfinished`, continue a stopped run of the same config if one left a checkpoint.
    With `on_this_device`, only a record made on this device at the precision this config
    gets here is reused (a run that another run will be paired with must have run here).
    With `reuse_failed`, so is the record of an identical run that diverged: the same seed
    diverges again, so a sweep keeps it as its answer."""
    ran_on = running_here(cfg, kwargs.get("device")) if on_this_device else None
    # by default a record of the study's is reused, and a new run is one's own
    folders = record_folders(results_dir)
    statuses = ("complete", "failed") if reuse_failed else ("complete",)

    def recorded():
        return next(filter(None, (find_record(cfg, profile=profile, seed=seed, data=data,
                                              results_dir=folder, read_test=read_test,
                                              ran_on=ran_on, statuses=statuses)
                                  for folder in folders)), None)
    found = recorded()
    if found is None:
        from ..experiment import run_experiment   # training loads only when a run must train

        # Another process may be training this run (RunInProgress), or may have just
        # finished it: look again once the run is ours.
        with run_lock(cfg, profile, seed, checkpoint_dir):
            found = recorded()
            if found is None:
                resume = resume_unfinished and unfinished_run(
                    cfg, Path(checkpoint_dir), run_prefix(cfg.name, profile, seed),
                    ran_on=running_here(cfg, kwargs.get("device")))
                return run_experiment(cfg, profile=profile, seed=seed, data=data,
                                      results_dir=folders[-1], read_test=read_test, tags=tags,
                                      progress=progress, checkpoint_dir=checkpoint_dir,
                                      resume=resume or False, **kwargs)
    if verbose:
        ended = (f"finished {found[0]['finished_at']}" if found[0]["status"] == "complete"
                 else "it diverged")
        print(f"{cfg.name} [{profile}] seed {seed}: reusing {found[1].name} ({ended}; "
              f"delete it to train again)")
    return found
