"""The written report: every table and figure rebuilt from results/ (no training), as
report/report.md and a self-contained report/report.html."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import plots
from .analysis import confusion_matrix, reliability, run_predictions
from .data import CLASSES
from .paths import FIGURES_DIR, REPORT_DIR, RESULTS_DIR
from .sweeps import AUGMENTATION, HYPERPARAMETERS
from .tables import history_frame, load_records, mean_std, runs_frame, summarize



class Document:
    """Headings, paragraphs, tables and figures, rendered to Markdown and to HTML."""

    def __init__(self, figures_dir: Path):
        self.parts: list[tuple] = []
        self.figures_dir = figures_dir

    def heading(self, level: int, text: str):
        self.parts.append(("heading", level, text))

    def text(self, text: str):
        self.parts.append(("text", " ".join(text.split())))

    def table(self, frame: pd.DataFrame, caption: str):
        self.parts.append(("table", frame, caption))

    def figure(self, name: str, fig, caption: str):
        path = self.figures_dir / f"{name}.png"
        # No timestamps in the file, so an unchanged figure gives unchanged bytes.
        fig.savefig(path, dpi=130, bbox_inches="tight", metadata={"Software": None})
        self.parts.append(("figure", path, caption))

    def markdown(self, report_dir: Path) -> str:
        out = []
        for kind, *rest in self.parts:
            if kind == "heading":
                out.append("#" * rest[0] + " " + rest[1])
            elif kind == "text":
                out.append(rest[0])
            elif kind == "table":
                frame, caption = rest
                cells = [list(map(str, frame.columns))] + [[_cell(v) for v in row]
                                                           for row in frame.itertuples(index=False)]
                lines = ["| " + " | ".join(r) + " |" for r in cells]
                lines.insert(1, "|" + "---|" * len(frame.columns))
                out.append(f"*{caption}*\n\n" + "\n".join(lines))
            else:
                path, caption = rest
                rel = Path("..") / path.relative_to(report_dir.parent) if path.is_relative_to(
                    report_dir.parent) else path
                out.append(f"![{caption}]({rel.as_posix()})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        body = []
        for kind, *rest in self.parts:
            if kind == "heading":
                body.append(f"<h{rest[0]}>{html.escape(rest[1])}</h{rest[0]}>")
            elif kind == "text":
                body.append(f"<p>{_inline(rest[0])}</p>")
            elif kind == "table":
                frame, caption = rest
                head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
                rows = "".join("<tr>" + "".join(f"<td>{_inline(_cell(v))}</td>" for v in row)
                               + "</tr>" for row in frame.itertuples(index=False))
                body.append(f"<table><caption>{_inline(caption)}</caption><tr>{head}</tr>{rows}</table>")
            else:
                path, caption = rest
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                            f"<figcaption>{_inline(caption)}</figcaption></figure>")
        style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
                 "padding:.25em .6em;text-align:right}caption{font-style:italic;margin-bottom:.3em}"
                 "img{max-width:100%}figcaption{font-style:italic}code{background:#f3f3f3}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>CIFAR-10 report</title>"
                f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.2f}"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def _inline(text: str) -> str:
    """Markdown's `code` and **bold** in HTML, everything else escaped."""
    import re

    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _seeds(counts: pd.Series) -> str:
    low, high = counts.min(), counts.max()
    return str(low) if low == high else f"{low}–{high}"


def data_phrase(runs: pd.DataFrame) -> str:
    kinds = set(runs["official_data"])
    if kinds == {True}:
        return "the official CIFAR-10 release"
    if kinds == {False}:
        return "a local JPEG-rebuilt copy of CIFAR-10, NOT the official release"
    return "a mix of the official release and a local copy (see the data column)"


def _scope(records: list[dict]) -> str:
    """What every table caption states: profile, runs and seeds, and which data."""
    runs = runs_frame(records)
    profiles = ", ".join(sorted(set(runs["profile"])))
    return (f"profile {profiles}, {len(runs)} run(s), seeds {sorted(set(runs['seed']))}, "
            f"{data_phrase(runs)}")


def _tta_kind(config: dict) -> str:
    if not config["tta"]:
        return "none"
    return f"flips + {config['tta_shift']} px shifts" if config.get("tta_shift") else "flips"


def _final_table(runs: pd.DataFrame) -> pd.DataFrame:
    cols = {"config": "config", "seed": "seed", "epochs": "epochs", "val_acc": "val %",
            "test_acc": "test %", "test_acc_tta": "test % (TTA)", "wall_minutes": "minutes"}
    return runs[[c for c in cols if c in runs]].rename(columns=cols)


def build_report(results_dir=RESULTS_DIR, figures_dir=FIGURES_DIR, report_dir=REPORT_DIR,
                 profile: str = "cpu") -> Path:
    """Rebuild figures/ and report/report.{md,html} from the `profile` records under results/."""
    results_dir, figures_dir, report_dir = Path(results_dir), Path(figures_dir), Path(report_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    records = load_records(results_dir, profile=profile)
    if not records:
        raise FileNotFoundError(f"no complete {profile!r} records under {results_dir}: run the "
                                f"notebooks or `python -m cifar_lib train` first")
    runs = runs_frame(records)
    by_config = {name: [r for r in records if r["config_name"] == name] for name in runs["config"].unique()}
    doc = Document(figures_dir)

    doc.heading(1, "Intermediate-block CNNs on CIFAR-10")
    doc.text(f"Generated by `python -m cifar_lib report` from the `{profile}` records under "
             f"`results/` ({len(records)} runs); every number below is read from those records. "
             f"Data: {data_phrase(runs)}. Devices: {', '.join(sorted(set(runs['device'])))}.")

    _architecture(doc, runs)
    _workflow(doc, records)
    doc.heading(2, "Results")
    _basic(doc, by_config.get("seed_basic", []))
    _sweep(doc, records, AUGMENTATION, "Augmentation", "augmentation")
    _sweep(doc, records, HYPERPARAMETERS, "Hyperparameters", "hyperparameters")
    _improved(doc, by_config)
    _best(doc, by_config, results_dir)
    _engine(doc, results_dir)
    _limitations(doc, runs)

    (report_dir / "report.md").write_text(doc.markdown(report_dir))
    (report_dir / "report.html").write_text(doc.html())
    return report_dir / "report.md"


def _architecture(doc: Document, runs: pd.DataFrame):
    doc.heading(2, "Architecture")
    doc.text("Every network is a sequence of intermediate blocks and an output block. An "
             "intermediate block runs its input through L independent 3x3 convolutions and "
             "sums them with weights a = gate(FC(per-channel mean of the input)); the output "
             "block averages each channel over the image and maps the channel vector to 10 logits.")
    doc.figure("intermediate_block", plots.intermediate_block_diagram(3),
               "One intermediate block (L = 3).")
    named = runs[runs["sweep"].isna()]    # sweeps vary models (e.g. without batch norm)
    models = ((named if len(named) else runs).drop_duplicates("model")[["model", "parameters"]]
              .sort_values("parameters").reset_index(drop=True))
    doc.table(models, "Models trained in these records and their parameter counts.")


def _workflow(doc: Document, records: list[dict]):
    r = records[0]
    doc.heading(2, "Workflow")
    val = r["config"]["val_size"]
    doc.text(f"The 50,000 training images are split once into {50000 - val:,} for training and "
             f"{val:,} for validation (stratified, fixed "
             "seed). Every choice (augmentation, hyperparameters, the best model) is made on the "
             "validation split; sweeps never read the test set, and final runs read it once, "
             "after training. Budgets come from profiles: `smoke` (seconds, CI only, never "
             "reported), `cpu` (minutes on a 2-core CPU), `full` (a GPU).")


def _basic(doc: Document, records: list[dict]):
    if not records:
        return
    runs = runs_frame(records)
    doc.heading(3, "The basic model")
    doc.text(f"BasicNet (two blocks, 3 convolutions each, no batch norm) with the seed's "
             f"recipe reaches {mean_std(runs['test_acc'])} test accuracy after "
             f"{runs['epochs'].iloc[0]} epochs ({data_phrase(runs)}).")
    doc.figure("basic_curves", plots.learning_curves(history_frame(records)),
               f"BasicNet learning curves ({len(records)} seed(s), profile {records[0]['profile']}).")


def _sweep(doc: Document, records: list[dict], sweep, title: str, name: str):
    mine = [r for r in records if r.get("tags", {}).get("sweep") == sweep.name]
    if not mine:
        return
    runs = runs_frame(mine)
    order = list(sweep.variants)
    table = summarize(runs, order=order).reset_index()
    base = mine[0]
    top = table.loc[table["mean"].idxmax()]
    # which other variants the seeds cannot tell apart from the best one
    close = [v for v, m in zip(table["variant"], table["mean"])
             if v != top["variant"] and top["mean"] - m <= top["std"]]
    doc.heading(3, title)
    doc.text(f"Each variant changes one thing in the `{sweep.base}` config and is trained with "
             f"{_seeds(table['seeds'])} seeds on {base['data']['train_images']:,} "
             f"training images for {base['config']['epochs']} epochs; accuracy is measured on "
             f"{base['data']['val_images']:,} validation images. Best mean: **{top['variant']}** "
             f"({top['mean']:.2f} ± {top['std']:.2f}%); "
             + (f"{', '.join(close)} are within one of its standard deviations, differences "
                "these seeds do not resolve." if close else
                "every other variant is more than one of its standard deviations below it."))
    doc.table(table.rename(columns={"mean": "val % mean", "std": "val % std"}),
              f"{title}: validation accuracy, mean and std over seeds ({_scope(mine)}).")
    doc.figure(f"{name}_sweep", plots.sweep_plot(runs, order=order, title=title),
               f"{title}: validation accuracy per seed and mean ± std.")


def _improved(doc: Document, by_config: dict):
    names = [n for n in ("seed_improved", "improved_tuned") if by_config.get(n)]
    if not names:
        return
    records = [r for n in names for r in by_config[n]]
    runs = runs_frame(records)
    doc.heading(3, "The improved model: seed recipe and tuned recipe")
    doc.text("ImprovedNet (3 blocks 64→128→256 with batch norm, dropout 0.1 and max-pooling) "
             "trained with the seed's recipe and with the recipe the sweeps and the best-model "
             "work point to. " + " ".join(
                 f"`{n}`: {mean_std(runs.loc[runs['config'] == n, 'test_acc'])} test accuracy "
                 f"in {runs.loc[runs['config'] == n, 'wall_minutes'].mean():.1f} minutes."
                 for n in names))
    doc.table(_final_table(runs), f"ImprovedNet final runs ({_scope(records)}).")
    doc.figure("improved_curves", plots.learning_curves(history_frame(records)),
               "ImprovedNet: seed recipe against tuned recipe, training (dashed) and validation (solid).")


def _best(doc: Document, by_config: dict, results_dir: Path):
    best = by_config.get("best", [])
    tested = [r for r in best if r["test_read"]]
    if not tested:
        return
    runs = runs_frame(tested)
    doc.heading(3, "The best model")
    doc.text(f"The `best` config (DeepNet: five residual intermediate blocks of two gated "
             f"branches, {tested[0]['model']['parameters']:,} parameters) reaches "
             f"{mean_std(runs['test_acc_tta'])} test accuracy with test-time augmentation and "
             f"{mean_std(runs['test_acc'])} without, in {runs['wall_minutes'].mean():.1f} minutes "
             f"of wall time for the whole run on {runs['device'].iloc[0]} ({data_phrase(runs)}).")
    doc.table(_final_table(runs), f"Best model: {_scope(tested)}; the test set is read once per run.")
    # seed 0 of each attempt: further seeds of the final recipe are repeats, not attempts
    attempts = [r for n in ("deep_sgd", "best") for r in by_config.get(n, []) if r["seed"] == 0]
    if attempts:
        table = runs_frame(attempts)[["config", "seed", "epochs", "val_acc", "val_acc_tta",
                                      "test_acc_tta", "wall_minutes"]]
        table.insert(3, "TTA", [_tta_kind(r["config"]) for r in attempts])
        doc.table(table.rename(columns={"val_acc": "val %", "val_acc_tta": "val % (TTA)",
                                        "test_acc_tta": "test % (TTA)", "wall_minutes": "minutes"}),
                  f"What was tried for the best model, in order, seed 0 of each ({_scope(attempts)}; tuning "
                  f"runs leave the test column empty).")
    compare = [*by_config.get("seed_improved", []), *tested]
    doc.figure("time_to_accuracy", plots.time_to_accuracy(history_frame(compare)),
               "Validation accuracy against training time: the seed recipe and the best model.")

    record = min(tested, key=lambda r: (r["seed"], r["started_at"]))   # seed 0, as notebook 05
    preds = run_predictions(record, results_dir)
    probs = preds.get("probs_tta", preds["probs"])
    labels = preds["labels"]
    counts = confusion_matrix(labels, probs.argmax(1))
    per_class = pd.DataFrame({"class": CLASSES,
                              "accuracy %": 100 * np.diag(counts) / counts.sum(1)})
    rows, ece = reliability(probs, labels)
    plain_rows, plain_ece = reliability(preds["probs"], labels)
    doc.text(f"For run `{record['id']}` (seed {record['seed']}): the hardest class is {per_class.loc[per_class['accuracy %'].idxmin(), 'class']} "
             f"({per_class['accuracy %'].min():.2f}%), the easiest {per_class.loc[per_class['accuracy %'].idxmax(), 'class']} "
             f"({per_class['accuracy %'].max():.2f}%). Expected calibration error: {100 * plain_ece:.2f}% "
             f"without TTA, {100 * ece:.2f}% with it (15 equal-width bins).")
    doc.table(per_class, f"Best model: per-class test accuracy with TTA ({_scope([record])}).")
    doc.figure("confusion", plots.confusion_heatmap(counts), "Best model: confusion matrix (test set, TTA).")
    doc.figure("reliability", plots.reliability_diagram(plain_rows, plain_ece, "no TTA"),
               "Best model: reliability diagram (test set, no TTA).")
    if "branch_weights" in preds:
        w = preds["branch_weights"]
        spread = w.std(0).mean()
        doc.text(f"The branch weights are live: over test images their standard deviation "
                 f"averages {spread:.3f} per (block, branch), and they differ by class.")
        doc.figure("branch_weights_by_class", plots.branch_weights_by_class(w, labels),
                   "Best model: mean branch weight per block and true class.")
        doc.figure("branch_weight_spread", plots.branch_weight_spread(w),
                   "Best model: distribution of branch weights over test images.")


def _engine(doc: Document, results_dir: Path):
    files = sorted((results_dir / "benchmarks").glob("throughput-*.json"))
    if not files:
        return
    rows = []
    for f in files:
        b = json.loads(f.read_text())
        for r in b["rows"]:
            rows.append({"record": f.name, "device": b["device"]["name"],
                         "batch": b["settings"]["batch_size"], "model": r["model"],
                         "variant": r["variant"], "precision": r["precision"],
                         "images/s (median)": r["median_img_s"], "speedup": r["speedup"]})
    table = pd.DataFrame(rows)
    doc.heading(3, "Training speed")
    doc.text("`benchmarks/throughput.py` times training steps of the seed's pipeline (torchvision "
             "DataLoader, fp32) and of the engine (device-resident data, channels-last, bf16 or "
             "fp16 autocast, cheap dropout masks), interleaved in one run; speedups are ratios "
             "within a record.")
    doc.table(table, "Training throughput per benchmark record (images per second, medians).")


def _limitations(doc: Document, runs: pd.DataFrame):
    doc.heading(2, "Limitations")
    notes = ["The best model stays below the fastest published CIFAR-10 recipes (airbench) run "
             "under the same conditions on this CPU: the block family's doubled convolutions "
             "(L = 2 per block) and a recipe without airbench's whitening, lookahead and "
             "larger-batch tricks are the open leads.",
             "Sweeps use a small budget (a training subset and few epochs) so that three seeds "
             "of every variant fit in a notebook on a CPU; rankings at full budget can differ."]
    if not runs["official_data"].all():
        notes.append("Runs on the local JPEG-rebuilt copy are not comparable to published "
                     "CIFAR-10 numbers: JPEG costs every model some accuracy.")
    finals = runs[runs["config"] == "best"]
    if len(finals) and finals["seed"].nunique() < 3:
        notes.append(f"The best model has {finals['seed'].nunique()} seed(s) so far: a final run "
                     f"takes {finals['wall_minutes'].mean():.0f} minutes on this CPU, so its "
                     "seed-to-seed spread is not measured yet.")
    if (runs["device"].str.startswith("cpu")).all():
        notes.append("No GPU run is recorded here, so the `full` profiles are untested.")
    for n in notes:
        doc.text("- " + n)
