"""The written report: the hand-written prose of template.md with every number,
table and figure filled in from results/ by the sections (no training), rendered as
report/report.md, a self-contained report/report.html and report/report.pdf."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from . import sections
from .document import Document
from ..config import ConfigError
from ..paths import FIGURES_DIR, REPORT_DIR, RESULTS_DIR
from .sections import Filled, data_phrase, slug
from ..study.sweeps import CORE_STUDY, COURSEWORK_STUDY, RECIPE_STUDY, SWEEPS, Sweep
from ..study.tables import load_airbench_reference, load_records, runs_frame

TEMPLATE = Path(__file__).with_name("template.md")
MIN_PRINTED_POINTS = 7        # no label of a printed figure smaller (A4, the text width)

# The recipe study's families in the order Section 3 shows them, with their titles; each
# family's placeholders are named after its group (sections.slug).
FAMILIES = {"augmentation": "Augmentation", "regularisation": "Dropout and batch norm",
            "learning rate": "Learning rate and batch size", "block": "How the block mixes its branches",
            "search": "Optuna's 2-epoch winner at 8 epochs", "further": "Further changes"}


def build_report(results_dir=RESULTS_DIR, figures_dir=FIGURES_DIR, report_dir=REPORT_DIR,
                 profile: str = "cpu", study: Sweep = RECIPE_STUDY, short_study: Sweep = CORE_STUDY,
                 coursework_study: Sweep = COURSEWORK_STUDY) -> Path:
    """Rebuild figures/ and report/report.{md,html,pdf} from the `profile` records under
    results/ (and the `full` records, for the GPU paragraphs): `study` answers the questions,
    `short_study` asks them at a shorter budget (Appendix A) and holds the Optuna search,
    `coursework_study` asks them of ImprovedNet at 50 epochs, beside `study`'s answers."""
    results_dir, figures_dir, report_dir = Path(results_dir), Path(figures_dir), Path(report_dir)
    # the studies' runs, diverged ones too (a run that failed to train is a result); the rest
    # of the report reads the complete ones
    studied = load_records(results_dir, profile=profile, diverged=True)
    records = [r for r in studied if r["status"] == "complete"]
    if not records:
        raise ConfigError(f"no complete {profile!r} records under {results_dir}: the report "
                          f"reads the study's records, which `python -m cifar_lib sweep "
                          f"recipe_study --profile {profile}` writes there (`train` writes to "
                          f"runs/, which the report never reads)")
    figures_dir.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    full_records = load_records(results_dir, profile="full") if profile != "full" else []
    runs = runs_frame(records)
    by_config = {name: [r for r in records if r["config_name"] == name] for name in runs["config"].unique()}
    filled = Filled(figures_dir, shown=set(re.findall(r"\[\[figure (\w+)\]\]", TEMPLATE.read_text())))
    filled.values.update(data_phrase=data_phrase(runs))
    # Methods, then the recipe study's families (Section 3), then the models, then the appendices
    sections.methods(filled, runs, studied, study, finals=records + full_records)
    filled.values["core_epochs"] = str(short_study.config(short_study.baseline, profile).epochs)
    for group, title in FAMILIES.items():
        if group in study.groups:
            sections.sweep(filled, studied, study.group(group), title, slug(group))
    if "augmentation" in study.groups:      # the same runs, paired otherwise (not declared in advance)
        family = study.group("augmentation")
        # does an augmentation help at all: each against none
        sections.rebased(filled, studied, family.subset(list(family.variants), baseline="no augmentation"), "none")
        # does rotation help on top of crops and random flips (the coursework's question)
        sections.rebased(filled, studied, family.subset(["crop + random flips", "crop + random flips + rotation"]), "added")
    if "search" in study.groups and "batch 1000" in study.variants:
        # the search's winner against batch 1000 alone, the choice its best trials agreed on
        sections.rebased(filled, studied, study.subset(["batch 1000", *study.groups["search"]]), "beyond_batch")
    # the coursework's own model at its own budget, and whether FastNet's answers carry to it
    answered = sections.coursework(filled, studied, coursework_study)
    sections.transfer(filled, studied, coursework_study, answered)
    # with ImprovedNet's answers first, the sections on FastNet say whose answers they give
    improved_first = "coursework" in filled.tables
    filled.values.update(fastnet_question=" FastNet" * improved_first, fastnet_topic=" in FastNet" * improved_first)
    # the settings chosen by measuring: the pilots of the arms without batch norm, the rate curve
    sections.pilot(filled, studied, SWEEPS.get("coursework_pilot"), "coursework_pilot")
    sections.pilot(filled, studied, SWEEPS.get("fastnet_bn_pilot"), "fast_bn_pilot")
    sections.pilot(filled, studied, SWEEPS.get("fastnet_bn_pilot2"), "fast_bn_pilot2")
    sections.without_batch_norm(filled, studied, SWEEPS.get("fastnet_without_bn"), SWEEPS.get("fastnet_bn_pilot2"))
    sections.learning_rate_curve(filled, studied, SWEEPS.get("fastnet_lr_curve"))
    sections.pooled_spread(filled, study)
    sections.tally(filled, study)
    sections.failures(filled, studied, study)
    airbench = load_airbench_reference(results_dir)      # the yardstick, read once
    sections.gpu(filled, full_records, airbench)
    sections.tuned_at_coursework_budget(filled, full_records + records)
    sections.fast(filled, by_config, airbench, results_dir)
    sections.finals(filled, records + full_records)
    sections.budget_transfer(filled, studied, study, short_study)
    from ..study.search import read_search
    sections.optuna_search(filled, records, short_study, read_search(short_study, profile, results_dir))
    sections.engine(filled, results_dir, models=set(runs.loc[runs["config"].isin(sections.RECIPES), "model"]),
                    study_machines=set(runs_frame(studied).query("sweep == @study.name")["device"]))
    # the coursework study's cost once its answers are shown
    costed = {"cost": study, **({"coursework_cost": coursework_study} if improved_first else {})}
    sections.study_cost(filled, runs_frame(studied), costed)
    if small := {name: round(pt, 1) for name, pt in filled.printed_font.items() if pt < MIN_PRINTED_POINTS}:
        warnings.warn(f"figures whose smallest text prints under {MIN_PRINTED_POINTS} pt on A4 (points "
                      f"as printed): {small}; draw them narrower (7.5 in fills the text width) or "
                      f"with larger text", stacklevel=2)
    for stale in set(figures_dir.glob("*.png")) - {path for path, _ in filled.figures.values()}:
        stale.unlink()          # figures/ holds what this report shows, nothing left from older ones
    doc = render(TEMPLATE.read_text(), filled)
    (report_dir / "report.md").write_text(doc.markdown(report_dir))
    (report_dir / "report.html").write_text(doc.html())
    doc.pdf(report_dir / "report.pdf")
    return report_dir / "report.md"


def render(template: str, filled: Filled) -> Document:
    """The template's blocks in order: headings (numbered where written "{#name}"), paragraphs
    with placeholders filled, tables and figures; an [[if KEY ...]] paragraph or heading only
    when every KEY's value exists, an
    [[unless KEY]] one only when it does not; inside a paragraph, [[if KEY ...: a sentence]]
    keeps the sentence on the same rule."""
    doc = Document()
    template = re.sub(r"<!--.*?-->", "", template, flags=re.S)
    values = {**filled.values, **_numbers(template, filled)}
    blocks = [b.strip() for b in template.split("\n\n") if b.strip()]
    values.update(_section_numbers(blocks, values))
    for block in blocks:
        artefact = re.fullmatch(r"\[\[(table|figure) (\w+)\]\]", block)
        if artefact:
            kind, name = artefact.groups()
            found = (filled.tables if kind == "table" else filled.figures).get(name)
            if found:
                label = values[f"{'fig' if kind == 'figure' else 'tab'}_{name}"]
                doc.artefact(kind, found[0], f"{label}. {found[1]}")
            continue
        block = _shown(block, values)
        if block is None:
            continue
        if block.startswith("#"):           # a heading, which a condition may hold back too
            level = len(block) - len(block.lstrip("#"))
            title = re.sub(r"\{#(\w+)\}", lambda m: values[f"sec_{m.group(1)}"], block[level:].strip())
            doc.heading(level, title.format_map(values))
            continue
        block = re.sub(r"\[\[(if|unless) ([\w\s]+?):\s+(.*?)\]\]",      # a sentence inside a paragraph
                       lambda m: m.group(3) if _holds(m.group(1), m.group(2), values) else "", block, flags=re.S)
        block = re.sub(r"\s+(?=[.,;])", "", block)   # a sentence left out leaves no space before the stop
        if not block.strip():
            continue
        if block.startswith("- "):           # a list: one item a line that starts with "- "
            # an item whose every word sat in a condition that failed is left out
            doc.items([item[2:].format_map(values) for item in re.split(r"\n(?=- )", block) if item[2:].strip()])
        else:
            doc.text(block.format_map(values))
    return doc


def _section_numbers(blocks: list[str], values: dict) -> dict[str, str]:
    """A heading written "## {#name} Title" is numbered in the order the shown headings come
    ("3", then "3.1", "3.2" under it), so a section held back by its condition leaves no gap;
    the text refers to it as {sec_name}."""
    numbers, counts = {}, [0, 0]
    for block in blocks:
        numbered = re.match(r"(#{2,3}) \{#(\w+)\}", _shown(block, values) or "")
        if not numbered:
            continue
        level = len(numbered.group(1)) - 2            # 0: "##", 1: "###"
        counts[level] += 1
        counts[level + 1:] = [0] * (1 - level)
        numbers[f"sec_{numbered.group(2)}"] = ".".join(map(str, counts[:level + 1]))
    return numbers


def _shown(block: str, values: dict) -> str | None:
    """The block without its leading [[if ...]] or [[unless ...]], or None where that
    condition holds it back."""
    condition = re.match(r"\[\[(if|unless) ([\w ]+)\]\]\s*", block)
    if not condition:
        return block
    return block[condition.end():] if _holds(*condition.groups(), values) else None


def _holds(word: str, keys: str, values: dict) -> bool:
    """[[if A B]]: every key has a value; [[unless A B]]: not every one has."""
    return all(key in values for key in keys.split()) == (word == "if")


def _numbers(template: str, filled: Filled) -> dict[str, str]:
    """{fig_NAME: "Figure N", tab_NAME: "Table N"} in the order the template shows them,
    for the artefacts the records made; the text refers to them by these names."""
    numbers, count = {}, {"figure": 0, "table": 0}
    for kind, name in re.findall(r"\[\[(table|figure) (\w+)\]\]", template):
        if name in (filled.tables if kind == "table" else filled.figures):
            count[kind] += 1
            numbers[f"{'fig' if kind == 'figure' else 'tab'}_{name}"] = f"{kind.title()} {count[kind]}"
    return numbers
