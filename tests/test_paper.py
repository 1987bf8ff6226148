"""The written report as a paper: built from a small set of real records, its shape
(sections, pages, words, captions), every figure embedded, every number read from a record;
and each section's parts (a family's answers, the budget appendix, the cost) on the
committed records."""
import dataclasses
import re
from pathlib import Path

import pytest

from cifar_lib.config import load_config
from cifar_lib.study.reuse import run_or_load
from cifar_lib.predictions import run_predictions
from cifar_lib.report.build import build_report
from cifar_lib.report.document import paper_shape
from cifar_lib.study.analysis import confusion_matrix, reliability
from cifar_lib.study.runner import run_sweep
from cifar_lib.study.stats import fixed
from cifar_lib.study.sweeps import CORE_STUDY, RECIPE_STUDY
from cifar_lib.study.tables import load_records, runs_frame
from conftest import tiny_dataset

REPO = Path(__file__).resolve().parent.parent
# 6 epochs: enough for this small a network to pass the study's failure rule (50%) at one
# thread or two (at 4, one seed without augmentation reached 44% at one thread)
SMALL = {"val_size": 100, "epochs": 6, "eval_subset": 50, "batch_size": 100}
WIDTHS = {"widths": [8, 8, 16]}
MAX_PAGES, MAX_WORDS, MAX_CAPTION_WORDS, MAX_ABSTRACT_WORDS = 15, 5000, 40, 220


def tiny(sweep, variants, seeds=(0, 1, 2)):
    """Some of `sweep`'s own variants (its name and tags, so the report finds them), each at
    a size that trains in a second."""
    def small(settings):
        return {**settings, **SMALL, "model_args": {**WIDTHS, **settings.get("model_args", {})}}
    names = [sweep.baseline, *variants]
    return dataclasses.replace(sweep.subset(names), seeds=seeds,
                               variants={v: small(sweep.variants[v]) for v in names})


def check_paper(md: str, pdf: Path):
    """What every build must hold, whatever the records: a paper's sections, the length limits,
    short captions, no flag printed as True/False, no placeholder left."""
    headings = re.findall(r"^#+ (.+)$", md, flags=re.M)
    for section in ("Abstract", "1 Introduction", "2 Methods", "3 Results", "4 Discussion",
                    "5 Limitations", "6 Conclusion", "References"):
        assert section in headings
    abstract = md.split("## Abstract", 1)[1].split("\n## ", 1)[0]
    assert len([w for w in abstract.split() if re.search(r"\w", w)]) <= MAX_ABSTRACT_WORDS
    shape = paper_shape(md, pdf)
    assert shape["pages"] <= MAX_PAGES and shape["words"] <= MAX_WORDS, shape
    captions = re.findall(r"^\*((?:Figure|Table) \d+\. .+)\*$", md, flags=re.M)
    assert captions and all(len(c.split()) < MAX_CAPTION_WORDS for c in captions), \
        [c for c in captions if len(c.split()) >= MAX_CAPTION_WORDS]
    assert not re.search(r"\| (True|False) \|", md)
    assert not re.search(r"\{\w+\}|\[\[", md), "a placeholder or a condition was left in the text"
    # every reference is cited in the text, as "Surname year" or "Surname et al. year"
    body, references = md.split("\n## References", 1)
    for item in re.findall(r"^- (.+?)(?=\n- |\n\n|\Z)", references.split("\n## ", 1)[0], flags=re.M | re.S):
        if item.startswith("The coursework"):
            continue
        authors = item.split(". *", 1)[0]
        surname = re.search(r"([A-Z][\w-]+)(?:,| et al|$)", authors).group(1)
        year = re.findall(r"\b(19|20)(\d\d)\b", item)[-1]
        cite = f"{surname}{' et al.' if ',' in authors or 'et al' in authors else ''} {''.join(year)}"
        assert cite in body, f"{cite} is in the references but never cited"
    # every figure and table is referred to in the text, not only in its caption
    for label in re.findall(r"^\*((?:Figure|Table) \d+)\. ", md, flags=re.M):
        assert [line for line in md.splitlines() if re.search(rf"{label}\b", line)
                and not line.startswith(("*Figure", "*Table", "!["))], f"{label} is never referred to"


@pytest.mark.slow
def test_the_report_is_built_from_a_small_set_of_records_with_every_figure_embedded(tmp_path):
    results, data = tmp_path / "results", tiny_dataset()
    kw = dict(results_dir=results, checkpoint_dir=tmp_path / "checkpoints")
    run_sweep(tiny(RECIPE_STUDY, ["no augmentation", "crop only", "dropout 0.1"]), "cpu", data, **kw)
    run_sweep(tiny(CORE_STUDY, ["no augmentation", "crop only"]), "cpu", data, **kw)
    fast, _ = run_or_load(load_config("fast", "cpu", final=True, model_args=WIDTHS, **SMALL),
                          profile="cpu", data=data, progress=False, **kw)
    md_path = build_report(results, tmp_path / "figures", tmp_path / "report")
    md, pdf = md_path.read_text(), tmp_path / "report" / "report.pdf"
    check_paper(md, pdf)
    # every figure written is shown: once in the markdown, inline in the HTML, once in the PDF
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    figures = re.findall(r"\]\(\.\./figures/([\w.]+)\)", md)
    assert {"augmentation_sweep.png", "budget_transfer.png", "intermediate_block.png"} <= set(figures)
    assert sorted(figures) == sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures) and "../figures" not in html
    document = pdfium.PdfDocument(pdf)
    images = sum(len(list(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]))) for page in document)
    document.close()
    assert images == len(figures)
    # the answers come from the tables: the study's progress, each family's effects
    text = " ".join(md.split())
    assert "12 of the 76 planned runs are recorded" in text
    assert re.search(r"Training without any augmentation changes accuracy by [+−]\d+\.\d\d points "
                     r"\([+−]\d+\.\d\d to [+−]\d+\.\d\d", text)
    assert "Appendix A" in text and "Of these, two have an interval at both budgets" in text
    # every percentage is a record's number, a mean or std over a variant's seeds, or computed
    # from the saved test predictions (per-class accuracy, calibration error)
    records = load_records(results)
    allowed = {f"{100 * r['final'][k]:.2f}" for r in records for k in r["final"] if "acc" in k}
    runs = runs_frame(records).dropna(subset=["variant"])
    for stat in ("mean", "std"):
        allowed |= {f"{v:.2f}" for v in runs.groupby(["sweep", "variant"])["val_acc"].agg(stat)}
    allowed |= {f"{v:.2f}" for v in runs.groupby(["sweep", "variant"])["train_acc"].mean()}   # how closely runs fit
    preds = run_predictions(fast, results)
    counts = confusion_matrix(preds["labels"], preds["probs_tta"].argmax(1))
    allowed |= {f"{100 * a:.2f}" for a in counts.diagonal() / counts.sum(1)}
    allowed |= {f"{100 * reliability(preds[k], preds['labels'])[1]:.2f}" for k in ("probs", "probs_tta")}
    # calibration's direction: mean top-class probability and accuracy, without TTA
    allowed |= {fixed(100 * preds["probs"].max(1).mean()),
                fixed(100 * (preds["probs"].argmax(1) == preds["labels"]).mean())}
    allowed |= {fixed(float(x)) for x in allowed}      # as printed: half-even
    found = set(re.findall(r"(\d+\.\d\d)%", md))
    assert found and found <= allowed, found - allowed
    # rebuilt from unchanged records, nothing changes: not the text, not the PDF's bytes
    pdf_bytes = pdf.read_bytes()
    build_report(results, tmp_path / "figures", tmp_path / "report")
    assert md_path.read_text() == md and pdf.read_bytes() == pdf_bytes


def test_the_committed_report_is_a_paper_of_at_most_15_pages_and_5000_words():
    check_paper((REPO / "report" / "report.md").read_text(), REPO / "report" / "report.pdf")


def test_every_figure_of_the_report_prints_legibly_at_a4_width(tmp_path):
    import matplotlib.pyplot as plt
    import warnings

    from cifar_lib.report.document import smallest_printed_font

    # 9-pt labels print at about 9.5 pt from a 7.5-inch figure (PNGs at 130 dpi are laid out
    # at 96, then shrunk to the text width), under 6 pt from a 14-inch one
    def labelled(width):
        fig, ax = plt.subplots(figsize=(width, 3))
        ax.set_xlabel("x", fontsize=9)
        return fig
    assert 8.5 < smallest_printed_font(labelled(7.5)) < 10.5 and smallest_printed_font(labelled(14)) < 6
    # the committed records' report: no figure's text under 7 pt
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="figures whose smallest text")
        build_report(REPO / "results", tmp_path / "figures", tmp_path / "report")


def test_the_length_of_a_paper_is_counted_as_a_reviewer_counts_it(tmp_path):
    from cifar_lib.report.document import Document

    doc = Document()
    doc.heading(2, "Abstract")
    doc.text("One two three, see Appendix A.")                  # a mention is no heading
    doc.heading(2, "References")
    doc.items(["A. Author. *A title*, 2024."])
    for _ in range(60):
        doc.text("filler " * 40)
    doc.heading(2, "Appendix A: more")
    doc.text("after")
    md = doc.markdown(tmp_path)
    doc.pdf(tmp_path / "a.pdf")
    shape = paper_shape(md, tmp_path / "a.pdf")
    assert shape["words"] == 6
    import pypdfium2 as pdfium

    pages = len(pdfium.PdfDocument(tmp_path / "a.pdf"))
    assert pages >= 3 and shape["pages"] in (pages - 1, pages)      # the appendix starts late


def test_a_family_with_only_its_base_measured_shows_no_table(tmp_path):
    from cifar_lib.report.sections import Filled, sweep

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == RECIPE_STUDY.name]
    augmentation = RECIPE_STUDY.group("augmentation")
    only_base = Filled(tmp_path)
    sweep(only_base, [r for r in records if r["tags"]["variant"] == "fast"], augmentation, "t", "aug")
    assert "aug_base" not in only_base.values and not only_base.tables and not only_base.figures
    measured = Filled(tmp_path)
    sweep(measured, records, augmentation, "t", "aug")
    shown, caption = measured.tables["aug"]
    assert "no augmentation" in set(shown["variant"]) and "aug_sweep" in measured.figures
    assert "random flips only" not in set(shown["variant"]) or shown.set_index("variant").loc[
        "random flips only", "pairs"] > 0                    # a variant without runs has no row
    assert "over 6 comparisons" in caption and len(caption.split()) < MAX_CAPTION_WORDS
    # a family of one variant (from the 2-epoch study's runs) is one comparison
    core = [r for r in load_records(REPO / "results", profile="cpu")
            if r.get("tags", {}).get("sweep") == CORE_STUDY.name]
    alone = Filled(tmp_path)
    sweep(alone, core, CORE_STUDY.subset(["fast", "dropout 0.1"]), "t", "one")
    assert "over 1 comparison (" in alone.tables["one"][1]


def test_every_variant_of_a_family_is_cited_by_name_with_its_interval(tmp_path):
    from cifar_lib.report.sections import Filled, sweep
    from cifar_lib.report.sections.studies import effect_phrase, slug

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == "core_study"]
    filled = Filled(tmp_path)
    sweep(filled, records, CORE_STUDY.group("regularisation"), "t", "reg")
    table = filled.paired["reg"]
    assert slug("crop + random flips + rotation") == "crop_random_flips_rotation"
    sign = lambda x: fixed(x, plus=True).replace("-", "−")
    for variant, row in table.drop(CORE_STUDY.baseline).iterrows():
        said = filled.values[f"reg__{slug(variant)}"]
        assert said == effect_phrase(row)
        flags = {k.rsplit("__", 1)[1] for k in filled.values if k.startswith(f"reg__{slug(variant)}__")} - {"at_most"}
        if row["failed"]:                                   # a failure, never an effect
            assert said == f"failed to train in {int(row['failed'])} of {int(row['runs'])} runs"
            assert flags == {"failed"}
        else:
            assert said.startswith(f"{sign(row['diff'])} points ({sign(row['low'])} to {sign(row['high'])}")
            assert ("not resolved" in said) != bool(row["resolved"])
            # the prose's flag says what the interval says
            assert flags == ({"up" if row["diff"] > 0 else "down"} if row["resolved"] else {"unresolved"})
            # an unresolved change says the most it can cost: its interval's far end
            at_most = filled.values.get(f"reg__{slug(variant)}__at_most")
            assert at_most == (None if row["resolved"] else f"{max(0.0, -row['low']):.2f}")
    assert any(row["failed"] for _, row in table.iterrows())     # no batch norm collapses at 2 epochs
    # the table's row says the failure too, rather than leaving a blank effect
    shown, _ = filled.tables["reg"]
    for variant, row in table[table["failed"] > 0].iterrows():
        name = f"{variant} ({int(row['failed'])} of {int(row['runs'])} runs failed)"
        assert name in set(shown["variant"]) and variant not in set(shown["variant"])
        if row["pairs"] == 0:
            assert shown.loc[shown["variant"] == name, "effect"].item() == "failed"
    # how each variant starts: its first epoch's validation accuracy over the seeds, and a
    # flag only where its best seed trails the base's worst
    from cifar_lib.study.tables import runs_frame
    runs = runs_frame(records)
    paired_ids = set(runs.loc[runs["machine"].isin(table.attrs["machines"]), "id"])
    first = {r["tags"]["variant"]: [] for r in records}
    for r in records:
        if r["id"] in paired_ids:     # the runs the table pairs, on the family's machine
            first[r["tags"]["variant"]].append(100 * r["history"][0]["val_acc"])
    for variant, accs in first.items():
        key = f"reg_first__{'base' if variant == CORE_STUDY.baseline else slug(variant)}"
        if variant not in table.index or len(accs) == 0:
            continue
        assert filled.values[key].startswith(f"{min(accs):.0f}")
        assert filled.values[key].endswith(f"{max(accs):.0f}%")
        behind = variant != CORE_STUDY.baseline and max(accs) < min(first[CORE_STUDY.baseline])
        assert (f"{key}__behind" in filled.values) == behind
    assert "reg_first__no_batch_norm__behind" in filled.values       # at chance from the start
    # every unresolved change says the most it can cost (at 2 epochs most augmentations are)
    aug = Filled(tmp_path)
    sweep(aug, records, CORE_STUDY.group("augmentation"), "t", "aug")
    paired = aug.paired["aug"]
    unresolved = paired[(paired["pairs"] > 0) & ~paired["resolved"].astype(bool)]
    assert len(unresolved)
    for variant, row in unresolved.iterrows():
        assert aug.values[f"aug__{slug(variant)}__at_most"] == f"{max(0.0, -row['low']):.2f}"


def test_each_augmentation_against_none_is_the_same_runs_paired_with_no_augmentation(tmp_path):
    from cifar_lib.report.sections import Filled, effect_phrase, rebased
    from cifar_lib.study.tables import compare_sweep

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == RECIPE_STUDY.name]
    family = RECIPE_STUDY.group("augmentation")
    against_none = family.subset(list(family.variants), baseline="no augmentation")
    filled = Filled(tmp_path)
    rebased(filled, records, against_none, "none")
    table = compare_sweep(against_none, runs_frame(records))
    assert table.attrs["comparisons"] == len(family.variants) - 1          # the base is one of them
    assert filled.values["none_comparisons"] == "six" and not filled.tables
    assert filled.values["none__rotation_only"] == effect_phrase(table.loc["rotation only"])
    assert filled.values["none__fast"] == effect_phrase(table.loc["fast"])
    # the base against none is none against the base, turned round
    against_base = compare_sweep(family, runs_frame(records))
    assert table.loc["fast", "diff"] == pytest.approx(-against_base.loc["no augmentation", "diff"])


def test_the_power_the_study_has_is_computed_from_the_spread_it_measured(tmp_path):
    from cifar_lib.report.sections import Filled, pooled_spread, sweep
    from cifar_lib.study.stats import detectable_difference

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == RECIPE_STUDY.name]
    filled = Filled(tmp_path)
    pooled_spread(filled, RECIPE_STUDY)
    assert "detectable_measured" not in filled.values          # no family measured: nothing said
    sweep(filled, records, RECIPE_STUDY.group("augmentation"), "t", "aug")
    pooled_spread(filled, RECIPE_STUDY)
    [sd] = filled.paired["aug"].attrs["pooled_sd_diff"].values()
    assert filled.values["spread_long"] == f"{sd:.2f}"
    assert filled.values["detectable_measured"] == f"{detectable_difference(sd, 6, len(RECIPE_STUDY.seeds)):.2f}"


def test_the_conclusion_counts_the_verdicts_the_family_tables_give(tmp_path):
    from cifar_lib.report.sections import Filled, sweep, tally

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == "core_study"]
    filled = Filled(tmp_path)
    sweep(filled, records, CORE_STUDY.group("regularisation"), "t", "reg")
    tally(filled, CORE_STUDY)
    flags = [k.rsplit("__", 1)[1] for k in filled.values
             if k.startswith("reg__") and k.count("__") == 2 and not k.endswith("__at_most")]
    words = {0: "none", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    assert filled.values["tally_variants"] == words[len(flags)]
    for verdict, key in (("up", "tally_up"), ("down", "tally_down"), ("failed", "tally_failed"),
                         ("unresolved", "tally_unresolved")):
        assert filled.values[key] == words[flags.count(verdict)]
    assert "tally_none_helped" not in filled.values     # three of the core study's groups unmeasured


def test_one_seed_pair_gives_a_difference_but_no_interval(tmp_path):
    from cifar_lib.report.sections import Filled, sweep

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == "core_study" and r["seed"] == 0
               and r["tags"]["variant"] in ("fast", "dropout 0.1")]
    dropout = next(r for r in records if r["tags"]["variant"] == "dropout 0.1")
    records = [r for r in records if r["device"]["name"] == dropout["device"]["name"]]
    filled = Filled(tmp_path)
    sweep(filled, records, CORE_STUDY.group("regularisation"), "t", "one")
    row = filled.paired["one"].loc["dropout 0.1"]
    assert row["pairs"] == 1 and not row["resolved"]
    assert filled.values["one__dropout_0_1"].endswith("(1 seed pair, no interval yet)")


def test_the_appendix_sets_each_change_at_two_budgets_over_the_declared_changes(tmp_path):
    from cifar_lib.report.sections import Filled, budget_transfer
    from cifar_lib.study.stats import budget_interaction
    from cifar_lib.study.tables import compare_sweep

    records = load_records(REPO / "results", profile="cpu")
    filled = Filled(tmp_path)
    budget_transfer(filled, records, RECIPE_STUDY, CORE_STUDY)
    shown, caption = filled.tables["budget_transfer"]
    declared = RECIPE_STUDY.counterparts["core_study"]      # the Optuna trial's made outside the file
    assert filled.values["transfer_family"] == str(len(declared)) and f"over {len(declared)} changes" in caption
    # the search's winner, retrained at 2 epochs under the core study's name, has its row
    winner = shown.set_index("variant").loc["Optuna trial 39"]
    runs = runs_frame([r for r in records if r.get("tags", {}).get("sweep") == "core_study"
                       and r["tags"]["variant"] in ("fast", "Optuna trial 39")])
    trial = runs[runs["variant"] == "Optuna trial 39"]
    base = runs[(runs["variant"] == "fast") & runs["machine"].isin(trial["machine"])].set_index("seed")
    assert winner["2 epochs"] == pytest.approx((trial.set_index("seed")["val_acc"] - base["val_acc"]).mean())
    # no augmentation: the same interaction the stats module gives for that family alone
    group = RECIPE_STUDY.group("augmentation")
    names = {v: w for v, w in declared.items() if v in group.variants}
    short = compare_sweep(CORE_STUDY.subset(["fast", *names.values()]),
                          runs_frame([r for r in records if r.get("tags", {}).get("sweep") == "core_study"]))
    long = compare_sweep(group, runs_frame([r for r in records if r.get("tags", {}).get("sweep") == "recipe_study"]))
    expected = budget_interaction(short, long, names, family=len(declared)).loc["no augmentation"]
    row = shown.set_index("variant").loc["no augmentation"]
    assert row["change"] == pytest.approx(expected["change"]) and row["low"] == pytest.approx(expected["change_low"])
    assert filled.values["transfer__no_augmentation"] == (
        f"{fixed(expected['short'], plus=True)} points at 2 epochs and "
        f"{fixed(expected['long'], plus=True)} at 8".replace("-", "−"))


def test_the_notebooks_budget_figure_gives_the_appendixs_intervals(tmp_path):
    from cifar_lib.report.sections import Filled, budget_transfer
    from cifar_lib.study.notebook import show_budget_transfer

    filled = Filled(tmp_path)
    budget_transfer(filled, load_records(REPO / "results", profile="cpu"), RECIPE_STUDY, CORE_STUDY)
    appendix = filled.tables["budget_transfer"][0].set_index("variant")
    shown = show_budget_transfer("augmentation", "cpu", REPO / "results")
    assert set(shown.index) == set(RECIPE_STUDY.groups["augmentation"]) & set(appendix.index)
    for variant, row in shown.iterrows():
        assert (row["change_low"], row["change_high"], row["resolved"]) == pytest.approx(
            (appendix.loc[variant, "low"], appendix.loc[variant, "high"], appendix.loc[variant, "resolved"]))


def test_the_cost_is_given_per_kind_of_machine_with_the_plan_projected_while_runs_are_left(tmp_path):
    from cifar_lib.report.sections import Filled, study_cost

    runs = runs_frame(load_records(REPO / "results", profile="cpu"))
    mine = runs[runs["sweep"] == RECIPE_STUDY.name]
    top = mine.groupby(["device", "precision"]).size().idxmax()
    here = mine[(mine["device"] == top[0]) & (mine["precision"] == top[1])]
    # the study with three of its required runs not yet recorded: the plan is projected
    required = here["variant"].isin({v for v, _ in RECIPE_STUDY.required_runs()})
    partial = runs.drop(here[required].index[-3:])
    filled = Filled(tmp_path)
    study_cost(filled, partial, {"cost": RECIPE_STUDY})
    table, caption = filled.tables["study_cost"]
    assert table["runs"].sum() == len(mine) - 3
    assert table.groupby(["device", "precision"]).ngroups == len(table)      # no machines pooled
    done = here.drop(here[required].index[-3:])
    assert filled.values["cost_hours"] == f"{done['wall_minutes'].sum() / 60:.1f}"
    # the required runs recorded (the optional family's hours left out), plus those still
    # to go at the median run
    done_required = done[done["variant"].isin({v for v, _ in RECIPE_STUDY.required_runs()})]
    left = len(RECIPE_STUDY.required_runs()) - len(done_required)
    projected = (done_required["wall_minutes"].sum() + left * done["wall_minutes"].median()) / 60
    assert left == 3 and filled.values["cost_projected"] == f"{projected:.1f}"
    assert "its required runs" in caption and table["required"].iloc[0] == len(RECIPE_STUDY.required_runs()) < RECIPE_STUDY.planned_runs
    # the committed study: every planned run recorded on that machine, nothing projected
    assert len(here) == RECIPE_STUDY.planned_runs
    filled = Filled(tmp_path)
    study_cost(filled, runs, {"cost": RECIPE_STUDY})
    table, caption = filled.tables["study_cost"]
    assert "cost_projected" not in filled.values and "planned runs" not in caption
    assert filled.values["cost_hours"] == f"{here['wall_minutes'].sum() / 60:.1f}"
    # printed with the one decimal it is rounded to (was 9.90 for a median of 9.85)
    assert table["median minutes a run"].iloc[0] == f"{here['wall_minutes'].median():.1f}"


def _search_study(results_dir: Path, epochs: int = 2):
    """An Optuna study of the core study's base as `tune --sweep core_study` stores it, its
    trials told by hand: 37 complete (their accuracy rising with the lr factor, so lr is what
    matters), 2 stopped after the first epoch and 1 marked pruned after its last."""
    import optuna

    from cifar_lib.study.tuning import default_storage

    study = optuna.create_study(study_name="core_study-cpu", direction="maximize",
                                storage=default_storage(results_dir, "cpu"),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for number in range(40):
        trial = study.ask()
        lr = trial.suggest_float("lr", 0.25, 4.0, log=True)
        trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
        trial.suggest_float("label_smoothing", 0.0, 0.3)
        trial.suggest_float("dropout", 0.0, 0.3)
        trial.suggest_categorical("batch_size", [1000, 2000, 4000])
        value = 0.70 + 0.02 * lr
        trial.report(value - 0.05, 0)
        if number in (3, 5):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        trial.report(value, epochs - 1)
        if number == 7:             # ran every epoch, then fell below the median at the last
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, value)
    return study


def test_the_optuna_search_is_described_from_the_stored_study(tmp_path):
    from cifar_lib.report.sections import Filled, optuna_search
    from cifar_lib.study.search import read_search

    filled = Filled(tmp_path)
    optuna_search(filled, [{"profile": "cpu", "tags": {}}], CORE_STUDY, read_search(CORE_STUDY, "cpu", tmp_path))
    assert "optuna_trials" not in filled.values            # no study stored: nothing to say
    study = _search_study(tmp_path)
    optuna_search(filled, [{"profile": "cpu", "tags": {}}], CORE_STUDY, read_search(CORE_STUDY, "cpu", tmp_path))
    best, values = study.best_trial, filled.values
    assert (values["optuna_trials"], values["optuna_complete"]) == ("40", "37")
    assert values["optuna_full"] == "38"     # was "ran to the end": 37, missing trial 7
    assert values["optuna_best"] == f"{100 * best.value:.2f}%"
    # the search scales Muon's filter rate alone, and says so
    assert values["optuna_best_settings"].startswith(f"filter lr ×{best.params['lr']:.2g}, weight decay ")
    assert values["optuna_top"].startswith("filter lr (")       # the only setting the value follows
    assert values["optuna_top_trials"] == "four"    # the best tenth of 37 complete, cut as PED-ANOVA cuts it
    assert "batch 1000, 2000 or 4000" in values["optuna_space"]
    assert (tmp_path / "optuna_search.png").is_file()
    assert len(filled.figures["optuna_search"][1].split()) < MAX_CAPTION_WORDS


def test_the_search_winner_is_cited_with_its_retraining_at_the_declared_seeds(tmp_path):
    from cifar_lib.study.reuse import machine_key
    from cifar_lib.report.sections import Filled, optuna_search
    from cifar_lib.study.search import read_search

    records = load_records(REPO / "results", profile="cpu")
    search = read_search(CORE_STUDY, "cpu", REPO / "results")
    filled = Filled(tmp_path)
    optuna_search(filled, records, CORE_STUDY, search)
    # the winner's runs against fast's of the same seed on the same machine, computed here
    name = f"Optuna trial {search.study.best_trial.number}"
    core = [r for r in records if r.get("tags", {}).get("sweep") == CORE_STUDY.name]
    winner = {(r["seed"], machine_key(r)): r["final"]["val_acc"] for r in core if r["tags"]["variant"] == name}
    base = {(r["seed"], machine_key(r)): r["final"]["val_acc"] for r in core if r["tags"]["variant"] == "fast"}
    diffs = [100 * (acc - base[key]) for key, acc in winner.items() if key in base]
    assert len(diffs) == len(CORE_STUDY.seeds)
    said = filled.values["optuna_confirmed"]
    assert said.startswith(f"{sum(diffs) / len(diffs):+.2f} points (".replace("-", "−"))
    # decomposed: 34 of 40 trials chose batch 1000, as the winner did; paired with the variant
    # that makes that change alone, the winner's other settings add what is computed here
    assert filled.values["optuna_agreed"] == "batch 1000" and filled.values["optuna_alone"] == "batch 1000"
    batch = {(r["seed"], machine_key(r)): r["final"]["val_acc"] for r in core if r["tags"]["variant"] == "batch 1000"}
    beyond = [100 * (acc - batch[key]) for key, acc in winner.items() if key in batch]
    assert len(beyond) == len(CORE_STUDY.seeds)
    assert filled.values["optuna_beyond_alone"].startswith(
        f"{fixed(sum(beyond) / len(beyond), plus=True)} points (".replace("-", "−"))
    assert filled.values["optuna_agreed_trials"] == f"{(search.trials['batch_size'] == 1000).sum()} of 40"
