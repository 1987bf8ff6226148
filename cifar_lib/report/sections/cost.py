"""What the studies cost, machine by machine, and the engine's benchmarks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ...study.sweeps import BLOCK_ABLATION, CORE_STUDY, FAST_ABLATION
from ...study.tables import (prose_cpu_name, device_label, study_cost)

from .common import Filled

STUDY_GOAL_HOURS = 3      # what the core study aims at on one 2-core bf16 CPU


def cost(filled: Filled, runs: pd.DataFrame, records: list[dict], search):
    """What the profile's records cost, machine by machine, and the core study's wall time on
    the machine that ran it against the hours it aims at (and on a CPU without bf16); and
    where the extended study ran, with `search` (the stored Optuna search, or None)."""
    table = study_cost(runs)
    per_device = runs.groupby(["device", "precision"]).agg(
        runs=("id", "size"), hours=("wall_minutes", lambda m: m.sum() / 60)).sort_values("hours")
    (device, precision), most = per_device.index[-1], per_device.iloc[-1]
    filled.values["cost_by_device"] = (
        f"{len(runs)} runs took {per_device['hours'].sum():.1f} hours of wall time on "
        + (f"the {device} ({precision})" if len(per_device) == 1 else
           f"{len(per_device)} machines, the most ({most.hours:.1f} hours) on the {device} ({precision})"))
    # the planned variants only: a confirmation of Optuna's best trial runs in the same sweep
    core = runs[(runs["sweep"] == CORE_STUDY.name) & runs["variant"].isin(list(CORE_STUDY.variants))]
    if len(core):
        _core_cost(filled, core, records)
    _extended_cost(filled, runs, search)
    filled.table("study_cost", table.reset_index().rename(columns={
        "device": "device", "wall_hours": "wall hours", "minutes_per_run": "minutes per run"}),
        "What each study's records cost, machine by machine: runs, wall time and the mean "
        "minutes of one run (the final recipes' runs included; profile "
        + ", ".join(sorted(set(runs["profile"]))) + ").")


def _core_cost(filled: Filled, core: pd.DataFrame, records: list[dict]):
    """The core study's planned runs, projected on each machine from the runs it recorded,
    against the hours the study aims at; and what sets the time there: the plan's images
    over the rate they trained at, and the share of the wall time that was training (the
    rest: evaluation, start-up)."""
    planned = CORE_STUDY.planned_runs
    rows = []
    for (device, precision), group in core.groupby(["device", "precision"]):
        hours = group["wall_minutes"].sum() / 60
        rows.append({"device": device, "precision": precision, "runs": len(group),
                     "hours": hours, f"all {planned}, hours": hours * planned / len(group),
                     "images/s": group["images_seen"].sum() / (60 * group["train_minutes"].sum()),
                     "training %": 100 * group["train_minutes"].sum() / group["wall_minutes"].sum()})
    table = pd.DataFrame(rows).sort_values(f"all {planned}, hours")
    table[f"x {STUDY_GOAL_HOURS} h"] = table[f"all {planned}, hours"] / STUDY_GOAL_HOURS
    shown = table.round({"hours": 1, f"all {planned}, hours": 1, f"x {STUDY_GOAL_HOURS} h": 1})
    shown[["images/s", "training %"]] = shown[["images/s", "training %"]].round().astype(int)
    filled.table("core_cost", shown,
                 f"The core study's cost on each machine that ran part of it: the runs it recorded "
                 f"and their wall time, all {planned} planned runs projected from them, that as a "
                 f"multiple of the {STUDY_GOAL_HOURS} hours the study aims at, the images a second "
                 f"it trained at and the share of the wall time that was training.")
    best = table.iloc[0]
    images = int(core["images_seen"].median())
    full = best[f"all {planned}, hours"]
    filled.values["cost_core"] = (
        f"The core study's {planned} planned runs of {images:,} training images each take about "
        f"{full:.1f} hours on the fastest machine that ran part of it, the {best.device} "
        f"({best.precision}), projected from its {best.runs} runs: "
        + (f"within the {STUDY_GOAL_HOURS} hours it aims at." if full <= STUDY_GOAL_HOURS else
           f"{full / STUDY_GOAL_HOURS:.1f} times the {STUDY_GOAL_HOURS} hours it aims at. Training is "
           f"{best['training %']:.0f}% of that time, at {best['images/s']:.0f} images/s"
           + _rate_needed(best['images/s'], full, best['training %'] / 100) + ".")
        + _fp32_multiple(records, (best.device, best.precision)))


def _extended_cost(filled: Filled, runs: pd.DataFrame, search):
    """Where the extended study (the Optuna search and its confirmation, the block ablation,
    the recipe's ingredients) ran at this profile and its wall time on each machine (the
    search's pruned trials included), and the hours of it that ran on a CPU in bf16."""
    parts = [("the Optuna search", device_label(r["device"]), r["precision"], r["device"]["type"],
              (r.get("wall_seconds") or 0) / 3600) for r in (search.records if search else [])]
    for name, rows in (
            ("the confirmation of Optuna's best trial",
             (runs["sweep"] == CORE_STUDY.name) & ~runs["variant"].isin(list(CORE_STUDY.variants))),
            ("the block ablation", runs["sweep"] == BLOCK_ABLATION.name),
            ("the recipe's ingredients", runs["sweep"] == FAST_ABLATION.name)):
        parts += [(name, *run, minutes / 60) for *run, minutes in runs.loc[rows, [
            "device", "precision", "device_type", "wall_minutes"]].itertuples(index=False)]
        if not rows.any():
            parts.append((name, None, None, None, 0.0))
    frame = pd.DataFrame(parts, columns=["part", "device", "precision", "type", "hours"])

    def duration(h: float) -> str:
        return f"{h:.1f} hours" if h >= 1 else f"{60 * h:.0f} minutes"

    said = []
    for part, group in frame.groupby("part", sort=False):
        where = group.dropna(subset=["device"]).groupby(["device", "precision"], sort=False)["hours"].sum()
        said.append(f"{part}, " + " and ".join(f"{duration(h)} on the {device} ({precision})"
                                               for (device, precision), h in where.items())
                    if len(where) else f"{part}: not run at this profile")
    on_cpu = frame[(frame["type"] == "cpu") & (frame["precision"] == "bf16")]
    filled.values["cost_extended"] = (
        "As recorded at this profile, the parts took: " + "; ".join(said) + ". "
        + (f"On CPUs in bf16 that is {duration(on_cpu['hours'].sum())} for "
           f"{' and '.join(dict.fromkeys(on_cpu['part']))}, against the {STUDY_GOAL_HOURS} hours "
           f"more the extended study aims at" if len(on_cpu) else "None of it ran on a CPU in bf16")
        + ("; what ran only on a GPU or not at all has no CPU cost measured."
           if (frame.groupby("part")["type"].apply(lambda t: not (t == "cpu").any())).any() else "."))


def _rate_needed(rate: float, hours: float, training_share: float) -> str:
    """The training speed at which a study of `hours` (`training_share` of it training at
    `rate` images/s) fits the hours it aims at, the rest of each run (scoring, start-up)
    taking what it takes now."""
    training, rest = hours * training_share, hours * (1 - training_share)
    if rest >= STUDY_GOAL_HOURS:
        return f"; the rest of each run alone takes more than {STUDY_GOAL_HOURS} hours"
    return (f"; {STUDY_GOAL_HOURS} hours would need about "
            f"{rate * training / (STUDY_GOAL_HOURS - rest):,.0f} images/s of training")


def _fp32_multiple(records: list[dict], here: tuple[str, str]) -> str:
    """How much longer the core study's FastNet runs would take on a CPU that trains in fp32
    than on `here` (device label, precision): the ratio of the median epoch's images/s,
    FastNet on FastNet, as recorded on each machine."""
    rates: dict[tuple[str, str], list[float]] = {}
    named = set()                # machines whose CPU model was recorded: the rest are unnamed
    for r in records:
        if r["config"]["model"] == "fast" and r["device"].get("type") == "cpu":
            key = (device_label(r["device"]), r["precision"])
            rates.setdefault(key, []).extend(h["images_per_second"] for h in r["history"])
            if prose_cpu_name(r["device"]):
                named.add(key)
    slower = [k for k in rates if k[1] == "fp32" and k in named]
    if here not in rates or not slower:
        return ""
    fast_rate = float(np.median(rates[here]))
    return " " + "; ".join(
        f"FastNet trains at a median of {np.median(rates[k]):.0f} images/s an epoch on the {k[0]} "
        f"({k[1]}) against {fast_rate:.0f} on the {here[0]} ({here[1]}), so there the core study "
        f"would take about {fast_rate / np.median(rates[k]):.1f} times as long" for k in slower) + "."


def engine(filled: Filled, results_dir: Path):
    files = sorted((results_dir / "benchmarks").glob("throughput-*.json"))
    if not files:
        return
    rows = []
    for f in files:
        b = json.loads(f.read_text())
        for r in b["rows"]:
            rows.append({"record": f.name, "device": device_label(b["device"]) if "type" in b["device"] else b["device"]["name"],
                         "batch": b["settings"]["batch_size"], "model": r["model"],
                         "variant": r["variant"], "precision": r["precision"],
                         "images/s (median)": round(r["median_img_s"]), "speedup": r["speedup"]})
    filled.values["engine"] = "yes"
    filled.table("engine", pd.DataFrame(rows), "Training throughput: images per second "
                 "(medians of interleaved repeats) per benchmark record; speedups are ratios "
                 "within one record.")
