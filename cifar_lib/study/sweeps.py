"""Sweeps as data: one file per study in configs/sweeps/ names its base config, its
variants (one setting changed each) and the seeds every variant runs, declared up front.
Reading them needs neither torch nor the training code, so the report can group records by them."""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..paths import CONFIG_DIR, tomllib


SWEEPS_DIR = CONFIG_DIR / "sweeps"


@dataclass(frozen=True)
class Sweep:
    """Variants of one base config, each trained with every seed and compared on the
    validation split; or, for a `final` sweep, trained on all 50,000 training images and
    scored once on the test set (measuring a recipe already chosen, e.g. at other budgets)."""
    name: str
    base: str
    variants: dict[str, dict]
    factors: dict[str, str] = field(default_factory=dict)   # variant -> what it varies
    seeds: tuple[int, ...] = (0, 1, 2)
    profiles: dict[str, dict] = field(default_factory=dict)  # profile -> the sweep's budget
    baseline: str | None = None      # the variant others are compared to (default: the first)
    is_subset: bool = False          # a view of some of a sweep file's variants (see subset)
    final: bool = False              # final runs: no validation split, the test set read once
    # question -> its variants: one table each (with the baseline), from one set of runs
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # another sweep -> {this sweep's variant: the same change under that sweep's name}
    counterparts: dict[str, dict[str, str]] = field(default_factory=dict)
    # the command that trains its runs where `sweep NAME` cannot ({profile} filled in):
    # a variant made outside the sweep file, such as an Optuna study's best trial
    made_by: str = ""
    # a run whose final accuracy (a fraction) is under this failed to train: reported as a
    # failure, never pooled as an effect (None: no rule declared)
    failure_below: float | None = None
    spread_alpha: float = 0.01       # a variant's own spread out of line with its family's pool
    # the sd of a paired difference (points) the power reasoning planned with (None: none)
    planned_sd_diff: float | None = None
    # the declared analysis: "two-way" (the variant x seed residual, Bonferroni per family)
    # or "paired" (the paired differences pooled, screened with Cochran's C; stats.py)
    analysis: str = "two-way"
    # seeds a declared second stage adds, for the baseline and the arms stage 1 left unresolved
    second_stage_seeds: tuple[int, ...] = ()
    # the study's budget: hours of recorded run time on one kind of machine (None: none)
    cap_hours: float | None = None
    # families declared to run only if the cap allows: a study cut short may lack them
    optional_groups: tuple[str, ...] = ("optional",)
    # variant -> the same change made in another sweep ({"sweep", "variant", "against"})
    transfer: dict[str, dict] = field(default_factory=dict)
    source: str = ""                 # the file it was read from ('' when built in code)

    def __post_init__(self):
        baseline = self.baseline or next(iter(self.variants))
        named = [("baseline", baseline)] + [(f"groups.{g}", v) for g, vs in self.groups.items() for v in vs]
        for what, name in named:
            if name not in self.variants:
                raise ConfigError(f"sweep {self.name}: {what} names {name!r}, which is not one of "
                                 f"its variants {list(self.variants)}")
        object.__setattr__(self, "baseline", baseline)         # frozen: set once, here

    def config(self, variant: str, profile: str):
        from ..config import load_config

        # The sweep's own budget for a profile (if it sets one), then the variant's change.
        where = f"{self.source or 'sweep ' + self.name}, variant {variant!r}"
        try:
            cfg = load_config(self.base, profile, source=where,
                              **{**self.profiles.get(profile, {}), **self.variants[variant],
                                 "final": self.final})
        except ConfigError as e:
            raise ConfigError(str(e) if where in str(e) else f"{where}: {e}") from None
        # Runs of a sweep live together: results/<profile>/<sweep name>/
        return dataclasses.replace(cfg, name=self.name)

    def check(self, profile: str) -> None:
        """Every variant's config built and validated, so a mistake in one is named (file
        and variant) before any data is loaded or any run trains."""
        for variant in self.variants:
            self.config(variant, profile)

    @property
    def metric(self) -> str:
        """What its runs are compared on: validation accuracy, or test accuracy for final runs."""
        return "test_acc" if self.final else "val_acc"

    def runs(self, seeds=None) -> list[tuple[str, int]]:
        """Every planned (variant, seed) run, variant by variant: the sweep's seeds (the same
        for every variant, so each variant pairs with the baseline seed by seed), or `seeds`."""
        return [(v, s) for v in self.variants for s in (self.seeds if seeds is None else seeds)]

    @property
    def families(self) -> dict[str, tuple[str, ...]]:
        """The declared families (`groups`); a file that declares none is one family of every
        variant but the baseline, named after the sweep."""
        return dict(self.groups) or {self.name: tuple(v for v in self.variants if v != self.baseline)}

    @property
    def planned_runs(self) -> int:
        return len(self.runs())

    def required_runs(self) -> list[tuple[str, int]]:
        """The planned runs less those of the families declared to run only if the cap
        allows (`optional_groups`): what a study cut short must keep."""
        optional = {v for g in self.optional_groups for v in self.groups.get(g, ())}
        return [(v, s) for v, s in self.runs() if v not in optional]

    def done(self, recorded) -> set[tuple[str, int]]:
        """The planned runs among `recorded`, the (variant, seed) of each recorded run."""
        return set(recorded) & set(self.runs())

    def recorded(self, runs) -> set[tuple[str, int]]:
        """The planned runs a runs frame holds, a run recorded twice counted once."""
        return self.done(zip(runs["variant"], runs["seed"]))

    def subset(self, variants: list[str], baseline: str | None = None) -> Sweep:
        """Some of this sweep's variants, compared to `baseline` (default: the first named):
        the same runs and records, so one question of a larger sweep gets its own table."""
        unknown = [v for v in variants if v not in self.variants]
        if unknown:
            raise ValueError(f"sweep {self.name} has no variant(s) {unknown}; its variants: "
                             f"{list(self.variants)}")
        return dataclasses.replace(self, variants={v: self.variants[v] for v in variants},
                                   baseline=baseline or variants[0], is_subset=True, groups={},
                                   counterparts={})

    def counterparts_in(self, other: Sweep) -> tuple[Sweep, dict[str, str]]:
        """`other` holding every change this sweep declares as its counterpart there, and that
        map ({variant here: its name there}). A counterpart that `other`'s file lacks was made
        outside the file under `other`'s name (an Optuna study's best trial, retrained with its
        seeds): it carries this sweep's settings for it."""
        names = dict(self.counterparts.get(other.name, {}))
        made = {w: self.variants[v] for v, w in names.items() if w not in other.variants}
        return dataclasses.replace(other, variants={**other.variants, **made}), names

    def group(self, name: str) -> Sweep:
        """One question of the sweep: its variants beside the baseline, on the same runs."""
        if name not in self.groups:
            raise ValueError(f"sweep {self.name} has no group {name!r}; its groups: {list(self.groups)}")
        return self.subset([self.baseline, *[v for v in self.groups[name] if v != self.baseline]])

    def command(self, profile: str) -> str:
        """The command that trains this sweep's missing runs (finished ones are reused)."""
        if self.made_by:
            return self.made_by.format(profile=profile)
        only = "".join(f" --variant {shlex.quote(v)}" for v in self.variants) if self.is_subset else ""
        return f"python -m cifar_lib sweep {self.name} --profile {profile}{only}"

    def progress(self, recorded, profile: str) -> str:
        """'' once every planned run is recorded; otherwise what the tables rest on and which
        runs are still to come (a slow machine measures a sweep over several sittings, and its
        tables must say so). `recorded`: the (variant, seed) of each recorded run."""
        planned = self.runs()
        done = self.done(recorded)
        if len(done) == len(planned):
            return ""
        counts = {v: sum((v, s) in done for s in self.seeds) for v in self.variants}
        missing = [v for v, n in counts.items() if n == 0]
        partial = [f"{v} ({n} of {len(self.seeds)} seeds)" for v, n in counts.items()
                   if 0 < n < len(self.seeds)]
        still = "; ".join(part for part in (
            f"not yet run: {', '.join(missing)}" if missing else "",
            f"still short of seeds: {', '.join(partial)}" if partial else "") if part)
        return (f"{len(done)} of the {len(planned)} planned runs are recorded at the {profile} "
                f"profile; {still}.")

    @property
    def single_comparison(self) -> bool:
        """One variant against the baseline: its table row says all a forest plot would."""
        return len(self.variants) <= 2

    def factor(self, variant: str) -> str:
        return self.factors.get(variant, variant)


# Every key a sweep file may hold, and what its value must be (a check, and the words for it).
def _seeds(v):
    return isinstance(v, list) and bool(v) and all(isinstance(s, int) and s >= 0 for s in v)


def _fraction(v):
    return isinstance(v, (int, float)) and 0 < v < 1


KEYS = {
    "base": (lambda v: isinstance(v, str), "a config name"),
    "baseline": (lambda v: isinstance(v, str), "a variant's name"),
    "seeds": (_seeds, "a list of seeds, e.g. [0, 1, 2]"),
    "second_stage_seeds": (_seeds, "a list of seeds"),
    "final": (lambda v: isinstance(v, bool), "true or false"),
    "failure_below": (_fraction, "a fraction between 0 and 1"),
    "spread_alpha": (_fraction, "a fraction between 0 and 1"),
    "planned_sd_diff": (lambda v: isinstance(v, (int, float)) and v > 0, "points, above 0"),
    "cap_hours": (lambda v: isinstance(v, (int, float)) and v > 0, "hours, above 0"),
    "optional_groups": (lambda v: isinstance(v, list) and all(isinstance(g, str) for g in v),
                        'a list of family names, e.g. ["further"]'),
    "analysis": (lambda v: v in ("two-way", "paired"), '"two-way" or "paired"'),
    "variants": (lambda v: isinstance(v, dict) and bool(v), "a table of variants"),
    "groups": (lambda v: isinstance(v, dict), "a table of families"),
    "factors": (lambda v: isinstance(v, dict), "a table"),
    "profiles": (lambda v: isinstance(v, dict), "a table of profile tables"),
    "counterparts": (lambda v: isinstance(v, dict), "a table per other sweep"),
    "transfer": (lambda v: isinstance(v, dict), "a table of matched changes"),
}


def _check_file(path: Path, table: dict) -> None:
    """Refuse what a sweep file would otherwise silently get wrong: an unknown key (a typo
    such as `seed` or `failure_bellow` would drop a declared rule) or a value of the wrong
    kind."""
    if "variant_seeds" in table:
        raise ConfigError(f"{path}: [variant_seeds] gives some variants more seeds than others; "
                          "every variant must run the sweep's seeds (declared before it runs), so "
                          "remove the table and, if more seeds are needed, add them to `seeds`")
    for key, value in table.items():
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}; valid keys: {', '.join(KEYS)}")
        ok, wanted = KEYS[key]
        if not ok(value):
            raise ConfigError(f"{path}: {key} = {value!r} should be {wanted}")
    if "base" not in table or "variants" not in table:
        raise ConfigError(f"{path}: a sweep names its `base` config and its [variants]")
    if unknown := [g for g in table.get("optional_groups", ()) if g not in table.get("groups", {})]:
        raise ConfigError(f"{path}: optional_groups names {unknown}, which are not among its "
                          f"[groups] {list(table.get('groups', {}))}")
    for name, change in table["variants"].items():
        if not isinstance(change, dict):
            raise ConfigError(f"{path}: variant {name!r} should be a table of settings, "
                              f"e.g. {{ lr = 0.1 }}, not {change!r}")


def load_sweep(path: Path) -> Sweep:
    """The sweep a file describes; its name is the file's. A file that is not valid TOML,
    or holds a key or value a sweep cannot have, is refused with the file's name."""
    try:
        table = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    _check_file(Path(path), table)
    declared = {"seeds": tuple(table["seeds"])} if "seeds" in table else {}   # else Sweep's default
    try:
        return _sweep_from(path, table, declared)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _sweep_from(path, table: dict, declared: dict) -> Sweep:
    return Sweep(name=Path(path).stem, source=str(path), base=table["base"],
                 variants=dict(table["variants"]),
                 factors=dict(table.get("factors", {})), **declared,
                 profiles=dict(table.get("profiles", {})), baseline=table.get("baseline"),
                 final=bool(table.get("final", False)), failure_below=table.get("failure_below"),
                 spread_alpha=float(table.get("spread_alpha", 0.01)),
                 planned_sd_diff=table.get("planned_sd_diff"), cap_hours=table.get("cap_hours"),
                 optional_groups=tuple(table.get("optional_groups", Sweep.optional_groups)),
                 analysis=table.get("analysis", "two-way"),
                 second_stage_seeds=tuple(table.get("second_stage_seeds", ())),
                 transfer={k: dict(v) for k, v in table.get("transfer", {}).items()},
                 groups={g: tuple(vs) for g, vs in table.get("groups", {}).items()},
                 counterparts={k: dict(v) for k, v in table.get("counterparts", {}).items()})


def sweep_records(records: list[dict], sweep: Sweep) -> list[dict]:
    """The records among `records` that one of `sweep`'s runs (of its variants) wrote."""
    return [r for r in records if r.get("tags", {}).get("sweep") == sweep.name
            and r["tags"].get("variant") in sweep.variants]


def load_sweeps(folder: Path = SWEEPS_DIR) -> tuple[dict[str, Sweep], dict[str, ConfigError]]:
    """Every sweep in `folder` by name, and apart, the error of each file that cannot be
    read: one broken file is refused when it is asked for, and the others still work."""
    sweeps, broken = {}, {}
    for path in sorted(Path(folder).glob("*.toml")):
        try:
            sweeps[path.stem] = load_sweep(path)
        except ConfigError as e:
            broken[path.stem] = e
    return sweeps, broken


SWEEPS, BROKEN = load_sweeps()


def find_sweep(name: str) -> Sweep:
    """The sweep of configs/sweeps/NAME.toml, or a ConfigError: what is wrong with its file,
    or which sweeps there are."""
    if name in BROKEN:
        raise BROKEN[name]
    if name not in SWEEPS:
        raise ConfigError(f"unknown sweep {name!r}; valid: {', '.join(SWEEPS)}")
    return SWEEPS[name]
AUGMENTATION = find_sweep("augmentation")          # the 4,000-image demonstrations of budget
HYPERPARAMETERS = find_sweep("hyperparameters")
RECIPE_STUDY = find_sweep("recipe_study")          # notebooks 02-04: the questions at 8 epochs
CORE_STUDY = find_sweep("core_study")              # the same questions at 2 epochs (the appendix)
FAST_ABLATION = find_sweep("fast_ablation")
BLOCK_ABLATION = find_sweep("block_ablation")
FAST_BUDGET = find_sweep("fast_budget")
COURSEWORK_STUDY = find_sweep("coursework_study")  # ImprovedNet at 50 epochs (notebook 04, the report)
