"""The written report: the hand-written prose of template.md with every number,
table and figure filled in from results/ by the sections (no training), rendered as
report/report.md, a self-contained report/report.html and report/report.pdf."""
from __future__ import annotations

import re
from pathlib import Path

from . import sections
from .document import Document
from ..config import ConfigError
from ..paths import FIGURES_DIR, REPORT_DIR, RESULTS_DIR
from .sections import Filled, data_phrase
from ..study.sweeps import AUGMENTATION, BLOCK_ABLATION, CORE_STUDY, FAST_ABLATION, HYPERPARAMETERS
from ..study.tables import load_airbench_reference, load_records, runs_frame

TEMPLATE = Path(__file__).with_name("template.md")


def build_report(results_dir=RESULTS_DIR, figures_dir=FIGURES_DIR, report_dir=REPORT_DIR,
                 profile: str = "cpu") -> Path:
    """Rebuild figures/ and report/report.{md,html} from the `profile` records under results/
    (and the `full` records, for the GPU paragraphs)."""
    results_dir, figures_dir, report_dir = Path(results_dir), Path(figures_dir), Path(report_dir)
    records = load_records(results_dir, profile=profile)
    if not records:
        raise ConfigError(f"no complete {profile!r} records under {results_dir}: run the "
                                f"notebooks or `python -m cifar_lib train` first")
    figures_dir.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    runs = runs_frame(records)
    by_config = {name: [r for r in records if r["config_name"] == name] for name in runs["config"].unique()}
    filled = Filled(figures_dir, shown=set(re.findall(r"\[\[figure (\w+)\]\]", TEMPLATE.read_text())))
    filled.values.update(profile=profile, runs=str(len(records)), data_phrase=data_phrase(runs),
                         devices=", ".join(sorted(set(runs["device"]))))
    sections.methods(filled, runs, records)
    sections.basic(filled, by_config.get("seed_basic", []))
    sections.sweep(filled, records, AUGMENTATION, "Augmentation", "augmentation")
    sections.sweep(filled, records, CORE_STUDY.group("augmentation"), "Augmentation, whole training split",
           "augmentation_full")
    sections.sweep(filled, records, HYPERPARAMETERS, "Hyperparameters", "hyperparameters")
    # the same tables (and families) as notebook 3's
    sections.sweep(filled, records, CORE_STUDY.group("regularisation"),
           "Regularisation and normalisation of `fast`, whole training split", "regularisation_full")
    sections.sweep(filled, records, CORE_STUDY.group("optimisation"),
           "Learning rates and batch size of `fast`, whole training split", "optimisation_full")
    from ..study.tuning import read_search
    search = read_search(CORE_STUDY, profile, results_dir)    # the stored Optuna search, read once
    sections.optuna_search(filled, records, search)
    sections.sweep(filled, records, BLOCK_ABLATION, "Block ablation", "block_ablation")
    sections.sweep(filled, records, FAST_ABLATION, "Fast-recipe ablation", "fast_ablation")
    sections.improved(filled, by_config)
    sections.deep(filled, by_config)
    airbench = load_airbench_reference(results_dir)
    sections.fast(filled, by_config, airbench, results_dir)
    sections.fast_budget(filled, records, airbench)
    full_records = load_records(results_dir, profile="full") if profile != "full" else []
    sections.gpu(filled, full_records, airbench)
    if full_records:        # the coursework's regularisers at the recipe's own epochs, where run
        sections.sweep(filled, full_records, CORE_STUDY.group("regularisation"),
                       "Regularisation and normalisation of `fast` at the recipe's 8 epochs",
                       "regularisation_recipe")
    sections.tuned_at_coursework_budget(filled, full_records + records)
    sections.cheap_budget_agreement(filled, records, full_records)
    sections.engine(filled, results_dir)
    sections.cost(filled, runs, records, search)
    sections.coursework_answers(filled)
    sections.coursework_answers(filled, ("regularisation_recipe",), "coursework_answers_recipe")
    doc = render(TEMPLATE.read_text(), filled)
    doc.parts.insert(1, ("text", f"Generated from the records under `results/`: {len(records)} "
                                 f"`{profile}`-profile runs" + (f" and, where a section says so, "
                                 f"{len(full_records)} `full`-profile runs" if full_records else "")
                                 + "; every number is read from a record."))
    (report_dir / "report.md").write_text(doc.markdown(report_dir))
    (report_dir / "report.html").write_text(doc.html())
    doc.pdf(report_dir / "report.pdf")
    return report_dir / "report.md"


def render(template: str, filled: Filled) -> Document:
    """The template's blocks in order: headings, paragraphs with placeholders filled,
    tables and figures; an [[if KEY]] paragraph only when KEY's value exists, an
    [[unless KEY]] one only when it does not."""
    doc = Document()
    template = re.sub(r"<!--.*?-->", "", template, flags=re.S)
    values = {**filled.values, **_numbers(template, filled)}
    for block in (b.strip() for b in template.split("\n\n")):
        if not block:
            continue
        if block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            doc.heading(level, block[level:].strip())
            continue
        artefact = re.fullmatch(r"\[\[(table|figure) (\w+)\]\]", block)
        if artefact:
            kind, name = artefact.groups()
            found = (filled.tables if kind == "table" else filled.figures).get(name)
            if found:
                label = values[f"{'fig' if kind == 'figure' else 'tab'}_{name}"]
                doc.artefact(kind, found[0], f"{label}. {found[1]}")
            continue
        condition = re.match(r"\[\[(if|unless) (\w+)\]\]\s*", block)
        if condition:
            word, key = condition.groups()
            if (key in values) != (word == "if"):
                continue
            block = block[condition.end():]
        if block.startswith("- "):           # a list: one item a part
            for item in re.split(r"\n(?=- )", block):
                doc.text(item.format_map(values))
        else:
            doc.text(block.format_map(values))
    return doc


def _numbers(template: str, filled: Filled) -> dict[str, str]:
    """{fig_NAME: "Figure N", tab_NAME: "Table N"} in the order the template shows them,
    for the artefacts the records made; the text refers to them by these names."""
    numbers, count = {}, {"figure": 0, "table": 0}
    for kind, name in re.findall(r"\[\[(table|figure) (\w+)\]\]", template):
        if name in (filled.tables if kind == "table" else filled.figures):
            count[kind] += 1
            numbers[f"{'fig' if kind == 'figure' else 'tab'}_{name}"] = f"{kind.title()} {count[kind]}"
    return numbers
