"""Checkpoints: the final model for `evaluate`, and the full training state after every
epoch for `--resume` (written atomically, read with weights_only=True), found and checked
against the config that wants to continue it."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from .config import Config, ConfigError, changed_settings, saved_config
from .models import build_model, model_arguments, uncompiled
from .records import atomic_write_bytes


def _save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load(path, device) -> dict:
    # weights_only=True: tensors, numbers, strings and containers only; a checkpoint that
    # tries to construct anything else is refused instead of run.
    return torch.load(path, map_location=device, weights_only=True)


def save_model(path: Path, model, cfg: Config, run_id: str, model_args: dict) -> None:
    _save({"run_id": run_id, "config": cfg.to_dict(), "model_args": model_args,
           "model_state": uncompiled(model).state_dict()}, path)


def load_model(path, device: torch.device) -> tuple[torch.nn.Module, Config]:
    """The trained model and its config, from a final or a progress checkpoint
    (weights_only: loading runs no code). A model argument this kit no longer has (FastNet's
    `learn_whitening`, say) is dropped: the weights say what was learned, and if they do not
    fit today's model the error says so."""
    state = _model_file(Path(path), device)
    cfg = saved_config(state["config"])
    known = model_arguments(cfg.model)
    retired = sorted(set(state["model_args"]) - set(known))
    model = build_model(cfg.model, device=device, channels_last=cfg.channels_last,
                        **{k: v for k, v in state["model_args"].items() if k in known})
    try:    # a progress checkpoint holds the model as it stood after its last epoch
        model.load_state_dict(state["model_state"] if "model_state" in state else state["model"])
    except RuntimeError as e:
        raise ConfigError(f"{path}: its weights do not fit today's {cfg.model} model"
                          + (f" (it was built with {', '.join(retired)}, which the kit no longer "
                             f"has)" if retired else "")
                          + f": {str(e).splitlines()[0]} Evaluate it with the kit version that "
                          "trained it (the record's git_commit)") from None
    return model, cfg


def _model_file(path: Path, device) -> dict:
    """A final or progress checkpoint's contents; any other file is named for what it is."""
    if not path.is_file():
        raise ConfigError(f"no checkpoint file at {path}")
    if path.suffix == ".json":
        import json
        try:
            named = json.loads(path.read_text()).get("checkpoint")
        except (ValueError, AttributeError):
            named = None
        raise ConfigError(f"{path} is a results record, not a model"
                          + (f"; its model is {named}" if named else
                             "; a complete run's record names its model under 'checkpoint'"))
    if path.name.endswith(".npz"):
        raise ConfigError(f"{path} holds a run's saved test predictions, not a model; evaluate "
                          f"the checkpoint its record names under 'checkpoint'")
    try:
        state = _load(path, device)
    except pickle.UnpicklingError:      # not a pickle, or one that would construct objects
        raise ConfigError(f"{path} is not a checkpoint the kit wrote: it holds something other "
                          "than tensors and plain values, which is never loaded (it could run "
                          "code)") from None
    except (RuntimeError, EOFError) as e:
        raise ConfigError(f"{path} is not a checkpoint the kit wrote ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or "config" not in state or not (
            "model_state" in state or "model" in state):
        raise ConfigError(f"{path} is not a checkpoint the kit wrote (no model and config in it)")
    return state


def rng_state(device: torch.device) -> dict:
    """Every generator training draws from outside the loader (dropout, init)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def save_progress(path: Path, *, run_id: str, epoch: int, model, optimizer, plateau,
                  scaler, history: list[dict], device: torch.device, extra: dict) -> None:
    """Everything needed to continue after `epoch` (0-based) exactly as if never stopped.

    The loader needs no state of its own: each batch is drawn from a generator seeded by
    (seed, epoch, step), so the position (epoch + 1, step 0) determines the rest; so do
    step-wise rates (recipe.rate_at). Only the plateau schedule has a state to keep.
    """
    _save({"run_id": run_id, "position": {"epoch": epoch + 1, "step": 0},
           "model": uncompiled(model).state_dict(), "optimizer": optimizer.state_dict(),
           "scheduler": plateau.state_dict() if plateau is not None else None,
           "scaler": scaler.state_dict(), "history": history, "rng": rng_state(device), **extra}, path)


def load_progress(path, device: torch.device) -> dict:
    return _load(path, device)


def find_progress(folder: Path, prefix: str, every: bool = False):
    """The newest resumable checkpoint whose run id starts with `prefix` (None if there is
    none), or with `every` all of them, oldest first."""
    found = sorted(Path(folder).glob(f"{prefix}-*.progress.pt"), key=lambda p: p.stat().st_mtime)
    if every:
        return found
    return found[-1] if found else None


def unfinished_run(cfg: Config, checkpoint_dir: Path, prefix: str,
                   ran_on: tuple[str, str] | None = None) -> Path | None:
    """The newest progress checkpoint left by a stopped run of exactly this config (the
    runs of a sweep share a prefix, so the config decides). With `ran_on` = (device name,
    precision), only one made there: a run finished on another machine would pair as if
    it had run here (checkpoints older than this rule name no machine and are taken)."""
    for path in reversed(find_progress(checkpoint_dir, prefix, every=True)):
        state = load_progress(path, torch.device("cpu"))
        made_on = tuple(state.get("ran_on") or ()) or None
        if not changed_settings(state["config"], cfg) and (
                ran_on is None or made_on is None or made_on == tuple(ran_on)):
            return path
    return None


def resume_state(cfg: Config, resume, checkpoint_dir: Path, prefix: str, dev) -> dict:
    """The training state to continue: the checkpoint `resume` names (True: the newest of
    this config, profile and seed), refused with the settings that differ if `cfg` changed."""
    found = Path(resume) if not isinstance(resume, bool) else (
        unfinished_run(cfg, checkpoint_dir, prefix) or find_progress(checkpoint_dir, prefix))
    if found is None or not found.is_file():
        raise ConfigError(f"nothing to resume: no {prefix}-*.progress.pt in {checkpoint_dir} "
                          "(a run leaves one after each epoch until it completes); "
                          "start without --resume")
    state = load_progress(found, dev)
    changed = changed_settings(state["config"], cfg)
    if changed:
        raise ConfigError(f"{found} was made with a different config (changed: "
                          f"{', '.join(changed)}); resume with the same settings")
    return state
