"""Experiment configs: small TOML files under configs/, one table of overrides per
profile (smoke / cpu / full), validated before any work starts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError  # noqa: F401 (raised here, imported from here by callers)
from .loaders import NORMALIZATIONS, PIPELINES, check_augmentations
from .paths import CONFIG_DIR, tomllib


PROFILES = ("smoke", "cpu", "full")


def resolve_profile(profile: str) -> str:
    """A profile as asked for, with `auto` (the CLI's and the notebooks' default) made
    concrete: `full` with a CUDA GPU, `cpu` otherwise."""
    if profile == "auto":
        import torch

        return "full" if torch.cuda.is_available() else "cpu"
    return check_profile(profile, "auto")


def check_profile(profile: str, *also: str) -> str:
    """`profile` if it is one (or one of `also`), else a ConfigError listing them."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {', '.join([*also, *PROFILES])}")
    return profile


OPTIMIZERS = ("sgd", "adamw", "rmsprop", "muon")
SCHEDULES = ("constant", "plateau", "onecycle", "cosine", "linear")
LOSS_REDUCTIONS = ("mean", "sum")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# What every profile means unless a config says otherwise: smoke is a seconds-long check
# that the whole path works, never a result.
DEFAULT_PROFILES = {
    "smoke": {"epochs": 1, "train_subset": 1024, "eval_subset": 1000},
    "cpu": {},
    "full": {},
}




@dataclass
class Config:
    name: str = "unnamed"
    description: str = ""
    # model
    model: str = "improved"
    model_args: dict = field(default_factory=dict)
    # data
    pipeline: str = "tensor"
    augment: list = field(default_factory=list)
    crop_padding: int = 4
    rotate_degrees: float = 0.0
    cutout_size: int = 0
    normalize: str = "half"
    val_size: int = 5000
    final: bool = False            # train on all 50,000 training images (no validation split):
                                   # only once every choice was made on validation
    train_subset: int = 0          # 0: the whole training split
    eval_subset: int = 0           # 0: the whole validation and test sets
    num_workers: int = 0           # reference pipeline only
    # optimisation
    optimizer: str = "rmsprop"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    # optimizer = "muon": `lr` and `muon_momentum` for conv filters (orthogonalised
    # updates), Nesterov SGD with `momentum` for the rest at `bias_lr` (norm shifts),
    # `mixer_lr` (the blocks' mixers) and `head_lr` (the last linear layer); `weight_decay`
    # is then the decay per step.
    muon_momentum: float = 0.6
    bias_lr: float = 0.05
    mixer_lr: float = 1e-4
    head_lr: float = 0.5
    loss_reduction: str = "mean"   # "sum": gradients grow with the batch (airbench's units)
    schedule: str = "plateau"
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    warmup_fraction: float = 0.2   # onecycle: share of steps spent warming up
    epochs: int = 50
    batch_size: int = 128
    # evaluation
    target_val_acc: float = 0.0    # > 0: the CLI says when validation accuracy first reached it
    tta: bool = False              # also report accuracy with test-time augmentation: flips,
    tta_shift: int = 0             # and with tta_shift > 0 also diagonal shifts by that many pixels
    # engine
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False          # torch.compile the model for training (scoring runs eagerly)
    compile_backend: str = "inductor"   # "aot_eager" / "eager": compile without code generation
    compile_mode: str = "default"  # inductor's mode: "default", "max-autotune-no-cudagraphs", ...

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(key: str, value):
    """Type-check one setting against its field's default."""
    default = FIELDS[key].default if FIELDS[key].default is not dataclasses.MISSING else \
        FIELDS[key].default_factory()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
    elif isinstance(default, (list, dict, str)) and not isinstance(value, type(default)):
        raise ConfigError(f"{key} must be a {type(default).__name__}, got {value!r}")
    return value


def validate(cfg: Config) -> Config:
    """Raise ConfigError naming the first bad setting and the valid choices."""
    from .models import MODELS, model_arguments

    def choose(key, valid):
        if getattr(cfg, key) not in valid:
            raise ConfigError(f"unknown {key} {getattr(cfg, key)!r}; valid: {', '.join(valid)}")

    choose("model", sorted(MODELS))
    choose("optimizer", OPTIMIZERS)
    choose("schedule", SCHEDULES)
    choose("pipeline", PIPELINES)
    choose("precision", PRECISIONS)
    choose("loss_reduction", LOSS_REDUCTIONS)
    choose("normalize", sorted(NORMALIZATIONS))
    try:
        check_augmentations(cfg.augment, cfg.pipeline)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for key in ("lr", "batch_size", "epochs"):
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"{key} must be positive, got {getattr(cfg, key)}")
    for key in ("weight_decay", "train_subset", "eval_subset", "crop_padding", "cutout_size",
                "num_workers", "rotate_degrees", "tta_shift"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(cfg, key)}")
    for key in ("bias_lr", "mixer_lr", "head_lr"):
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"{key} must be positive, got {getattr(cfg, key)}")
    for key in ("label_smoothing", "warmup_fraction", "momentum", "muon_momentum",
                "target_val_acc"):
        if not 0 <= getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must lie in [0, 1), got {getattr(cfg, key)}")
    if not 0 < cfg.plateau_factor < 1:
        raise ConfigError(f"plateau_factor must lie in (0, 1), got {cfg.plateau_factor}")
    unknown = sorted(set(cfg.model_args) - set(model_arguments(cfg.model)))
    if unknown:
        raise ConfigError(f"unknown model_args {', '.join(unknown)} for model {cfg.model!r}; "
                          f"valid: {', '.join(model_arguments(cfg.model))}")
    dropout = cfg.model_args.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model_args.dropout must lie in [0, 1), got {dropout!r}")
    if cfg.model == "fast" and cfg.pipeline != "tensor":
        raise ConfigError("model 'fast' needs pipeline = \"tensor\": its whitening filters are "
                          "computed from the training images held as one tensor, which the "
                          f"{cfg.pipeline!r} pipeline does not keep; set pipeline = \"tensor\"")
    if cfg.final and cfg.schedule == "plateau":
        raise ConfigError("final = true trains without a validation split, so the plateau "
                          "schedule (which steps on validation loss) cannot run; pick another schedule")
    if cfg.val_size <= 0 or cfg.val_size % 10:
        raise ConfigError(f"val_size must be a positive multiple of 10 (one share per class), "
                          f"got {cfg.val_size}")
    return cfg


def saved_config(saved: dict) -> Config:
    """A config as a record or checkpoint saved it, read by today's Config: a setting added
    since counts as its default, one removed since is dropped (changed_settings says which)."""
    return Config(**{k: v for k, v in saved.items() if k in FIELDS})


def changed_settings(saved: dict, cfg: Config) -> list[str]:
    """The settings in which a saved config (a record's or a checkpoint's) differs from
    `cfg`: the one test of "the same run" for reusing a record and for resuming. A setting
    added to Config after it was saved counts as its default; one Config no longer has
    counts as changed. The description is prose, not a setting: rewording it changes no run."""
    wanted = cfg.to_dict()
    saved_now = saved_config(saved).to_dict()
    return sorted(({k for k in saved if k not in FIELDS}
                   | {k for k in wanted if saved_now[k] != wanted[k]}) - {"description"})


def apply(cfg: Config, overrides: dict, source: str) -> Config:
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; "
                          f"valid settings: {', '.join(FIELDS)}")
    values = {k: _coerce(k, v) for k, v in overrides.items()}
    return dataclasses.replace(cfg, **values)


RENAMED = {"best": "deep"}     # old config names a user may still type


def config_path(name: str) -> Path:
    """A config given by name (looked up in configs/) or by path."""
    p = Path(name)
    if p.suffix == ".toml" and p.exists():
        return p
    # `fast` or `fast.toml`: either names configs/fast.toml
    candidate = CONFIG_DIR / (p.name if p.suffix == ".toml" and p.parent == Path(".") else f"{name}.toml")
    if candidate.exists():
        return candidate
    if name in RENAMED:
        raise ConfigError(f"no config {name!r}: it is called {RENAMED[name]!r} now "
                          f"(fix: --config {RENAMED[name]}; its records moved with it)")
    known = ", ".join(available_configs()) or "(none)"
    raise ConfigError(f"no config {name!r}: looked for {p} and {candidate}; "
                      f"known configs: {known}")


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_config(name: str, profile: str = "cpu", *, source: str = "command line",
                **overrides) -> Config:
    """Read a config file (on top of the config its `base` key names, if any), apply its
    profile's table, then explicit overrides (None values are ignored, so CLI flags that were
    not given change nothing); an error in them is blamed on `source`."""
    check_profile(profile)
    path = config_path(name)
    raw, profiles = _read_config(path, seen=())
    cfg = apply(Config(name=path.stem), raw, str(path))
    cfg = apply(cfg, {**DEFAULT_PROFILES[profile], **profiles.get(profile, {})},
                f"{path} [profiles.{profile}]")
    cfg = apply(cfg, {k: v for k, v in overrides.items() if v is not None}, source)
    return validate(cfg)


def _read_config(path: Path, seen: tuple[Path, ...]) -> tuple[dict, dict]:
    """A config file's settings and profile tables; with `base = "NAME"`, those of config
    NAME with this file's changes, so a variant of a recipe is a few lines."""
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    profiles = raw.pop("profiles", {})
    unknown_profiles = sorted(set(profiles) - set(PROFILES))
    if unknown_profiles:
        raise ConfigError(f"{path}: unknown profile table(s) {unknown_profiles}; "
                          f"valid: {', '.join(PROFILES)}")
    base = raw.pop("base", None)
    if base is None:
        return raw, profiles
    chain = (*seen, path.resolve())
    base_path = config_path(base)
    if base_path.resolve() in chain:
        raise ConfigError(f"{path}: base = {base!r} leads back to itself "
                          f"({' -> '.join(p.stem for p in (*chain, base_path))}); break the cycle")
    base_raw, base_profiles = _read_config(base_path, chain)
    base_raw.pop("description", None)              # it describes the base, not this config
    # This file's settings replace the base's everywhere, in its profile tables too: a
    # variant with epochs = 4 trains 4 epochs at every profile, not the base's cpu epochs.
    merged = {p: {**{k: v for k, v in base_profiles.get(p, {}).items() if k not in raw},
                  **profiles.get(p, {})} for p in PROFILES}
    return {**base_raw, **raw}, {p: table for p, table in merged.items() if table}
