"""Appendix D: the engine's throughput against the coursework's pipeline, and what the
recipe study cost on each kind of machine that ran it."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ...study.sweeps import Sweep
from ...study.tables import device_label, prose_cpu_name

from .common import Filled


def engine(filled: Filled, results_dir: Path, models: set[str], study_machines: set[str] = frozenset()):
    """The newest throughput benchmark of each machine that names its processor: images/s
    of the coursework's pipeline and the engine for the report's `models`, and their ratio
    measured in the same run; `engine_missing` names the study's machines without one."""
    newest = {}
    for f in sorted((results_dir / "benchmarks").glob("throughput-*.json")):    # oldest first
        b = json.loads(f.read_text())
        if b["device"]["type"] == "cpu" and not prose_cpu_name(b["device"]):
            continue        # a machine that recorded no processor model compares with nothing
        newest[device_label(b["device"]) if "type" in b["device"] else b["device"]["name"]] = b
    if missing := sorted(study_machines - set(newest)):
        filled.values["engine_missing"] = " and ".join(f"the {m}" for m in missing)
    if not newest:
        return
    rows = [{"device": device, "model": r["model"], "variant": r["variant"].strip(),
             "precision": r["precision"], "images/s": round(r["median_img_s"]), "speedup": r["speedup"]}
            for device, b in newest.items() for r in b["rows"] if r["model"] in models]
    filled.values["engine"] = "yes"
    # where the data was missing the benchmark timed random images of CIFAR-10's shape
    if random := [d for d, b in newest.items() if b.get("data", "").startswith("random")]:
        filled.values["engine_random"] = " and ".join(f"the {d}" for d in random)
    filled.table("engine", pd.DataFrame(rows),
                 "Training throughput on each machine (its latest benchmark): median images/s over "
                 "interleaved repeats; speedups are ratios to the coursework's pipeline in the same run.")


def study_cost(filled: Filled, runs: pd.DataFrame, studies: dict[str, Sweep]):
    """Each study's wall time on each kind of machine (one row each), and all its required
    runs projected there: their recorded hours plus the runs still to go at the median run.
    `studies`: placeholder prefix -> study; `{prefix}_runs`, `_device`, `_hours`, ... say
    the machine that ran most of it."""
    tables, projecting = [], False
    for prefix, study in studies.items():
        mine = runs[runs["sweep"] == study.name]
        if mine.empty:
            continue
        required_runs = study.required_runs()
        required = len(required_runs)
        # the optional families' runs count in the hours spent, not in the required ones
        is_required = mine["variant"].isin({v for v, _ in required_runs})
        mine = mine.assign(required_runs=is_required, required_minutes=mine["wall_minutes"].where(is_required, 0))
        table = mine.groupby(["device", "precision"]).agg(
            runs=("id", "size"), hours=("wall_minutes", lambda m: m.sum() / 60),
            minutes_per_run=("wall_minutes", "median"),
            images_per_second=("images_trained", "sum"), train_minutes=("train_minutes", "sum"),
            required_runs=("required_runs", "sum"), required_minutes=("required_minutes", "sum"))
        table["images_per_second"] = (table["images_per_second"] / (60 * table["train_minutes"])).round().astype(int)
        table = table.drop(columns="train_minutes").sort_values("runs", ascending=False)
        (device, precision), most = table.index[0], table.iloc[0]
        filled.values.update({prefix: "yes", f"{prefix}_runs": str(int(most["runs"])), f"{prefix}_device": device,
                              f"{prefix}_precision": precision, f"{prefix}_hours": f"{most['hours']:.1f}",
                              f"{prefix}_minutes": f"{most['minutes_per_run']:.1f}", f"{prefix}_planned": str(required)})
        if (mine["threads"] == 1).all() and mine["device_type"].eq("cpu").all():
            filled.values[f"{prefix}_one_thread"] = "yes"
        left = (required - table["required_runs"]).clip(lower=0)   # runs still to go on each machine
        # the required runs recorded, plus those still to go at the median run
        table["required"] = required
        table["all required, hours"] = (table["required_minutes"] + left * table["minutes_per_run"]) / 60
        table = table.drop(columns=["required_runs", "required_minutes"])
        projecting |= bool(left.any())
        if left.iloc[0]:
            filled.values[f"{prefix}_projected"] = f"{table['all required, hours'].iloc[0]:.1f}"
        if study.cap_hours and table["all required, hours"].iloc[0] > study.cap_hours:
            filled.values[f"{prefix}_cap"] = f"{study.cap_hours:g}"
            if most["hours"] >= study.cap_hours and left.iloc[0]:    # spent, with runs still to go
                filled.values[f"{prefix}_cap_reached"] = "yes"
        tables.append(table.reset_index().assign(study=study.name.replace("_", " "))[["study", *table.index.names, *table.columns]])
    if not tables:
        return
    table = pd.concat(tables, ignore_index=True)
    caption = "Each study's cost on each kind of machine: runs, wall hours, images trained a second of training"
    if projecting:
        caption += ("; its required runs (all but the optional): those recorded, plus those left at the median run")
    else:
        table = table.drop(columns=["required", "all required, hours"])
    # hours and minutes printed with the one decimal they are rounded to (9.85 is "9.8",
    # never "9.90" from a number rounded once and printed with two)
    for column in ("hours", "minutes_per_run", "all required, hours"):
        if column in table:
            table[column] = table[column].map(lambda v: f"{v:.1f}")
    # a word joiner after the slash: "/s" never wraps onto a line of its own
    filled.table("study_cost", table.rename(columns={
        "minutes_per_run": "median minutes a run", "images_per_second": "images/\u2060s"}), caption + ".")
