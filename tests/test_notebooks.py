"""The committed notebooks read cleanly (no progress-bar spam, rounded numbers, no local
paths), figure captions say what the figures draw, and the Colab setup is one source."""
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from cifar_lib.study import colab, plots
from cifar_lib.study.notebook import tidy_outputs

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
BAR = re.compile(r"\d+%\|")                                 # a tqdm bar
# 62.599999 or 0.123456, not a small number rounded to two figures (a p of 0.00031)
LONG_FLOAT = re.compile(r"(?<![\w.])\d+\.(?=\d{5})0*[1-9]\d{3,}(?![\w.])")
LOCAL_PATH = re.compile(r"(?<![\w.~])/(?:work|home|root|tmp|Users|mnt|content)/")


def _texts(cell):
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            yield "".join(out["text"])
        for kind in ("text/plain", "text/html", "text/markdown"):
            if kind in out.get("data", {}):
                yield "".join(out["data"][kind])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
@pytest.mark.slow
def test_committed_notebook_outputs_read_cleanly(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert sum(1 for c in code if c.get("outputs")) >= 3, "the notebook was committed unexecuted"
    for i, cell in enumerate(code):
        # JupyterLab boxes stderr in red: progress bars and notes go to stdout in a kernel
        assert not [o for o in cell.get("outputs", []) if o.get("name") == "stderr"], \
            f"cell {i}: output on stderr, shown as an error"
        text = "\n".join(_texts(cell))
        shown = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
        assert len(BAR.findall(shown)) <= 1 and "\r" not in text, f"cell {i}: progress-bar spam"
        assert not LONG_FLOAT.findall(text), f"cell {i}: unrounded numbers {LONG_FLOAT.findall(text)[:3]}"
        assert not LOCAL_PATH.findall(text), f"cell {i}: a local path in the output"


def test_tidying_keeps_the_last_state_of_each_bar(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": [], "execution_count": 1,
                     "metadata": {"execution": {"iopub.status.idle": "2026-12-05T04:50:37Z"}, "tags": ["t"]},
                     "outputs": [{"output_type": "stream", "name": "stderr", "text": [f"\rrun: {p}%|"]}
                                 for p in (0, 50, 100)]
                     + [{"output_type": "stream", "name": "stdout", "text": ["done\n"]}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    assert tidy_outputs(path) and not tidy_outputs(path)
    cell = json.loads(path.read_text())["cells"][0]
    assert ["".join(o["text"]) for o in cell["outputs"]] == ["run: 100%|\n", "done\n"]
    assert cell["metadata"] == {"tags": ["t"]}          # timestamps gone, the rest kept


def test_committed_notebooks_name_their_kernel_as_jupyterlab_does():
    """Opening a notebook in JupyterLab's kernel and letting it autosave changes nothing."""
    from ipykernel.kernelspec import get_kernel_dict

    for path in NOTEBOOKS:
        kernel = json.loads(path.read_text())["metadata"]["kernelspec"]
        assert kernel == {"display_name": get_kernel_dict()["display_name"], "language": "python",
                          "name": "python3"}, path.name


def test_learning_curve_styles_match_their_captions():
    history = pd.DataFrame({"config": "c", "seed": 0, "epoch": [1, 2],
                            "train_loss": [2.0, 1.0], "val_loss": [2.1, 1.2],
                            "train_acc": [30.0, 50.0], "val_acc": [28.0, 45.0]})
    fig = plots.learning_curves(history)
    # one legend for both panels, below them (it covers no curve), saying what each line is
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    legend = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    for split, (name, _) in plots.CURVE_STYLES.items():
        drawn = legend[split].get_linestyle()
        assert (drawn == "-") == (name == "solid"), (split, drawn, name)
    for ax in fig.axes:                                       # whole-number epochs
        assert all(float(t).is_integer() for t in ax.get_xticks())
    assert plots.CURVE_STYLES_TEXT == "training (solid), validation (dashed)"


def test_every_notebook_starts_with_the_generated_setup_cell_and_no_placeholder_link():
    setups = []
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        setup = [c for c in cells if c["cell_type"] == "code"
                 and "".join(c["source"]).startswith(colab.SETUP_MARK)]
        # folded: a titled form in Colab, a hidden input in JupyterLab
        assert all(c["metadata"].items() >= colab.SETUP_METADATA.items() for c in setup), path.name
        setups += ["".join(c["source"]) for c in setup]
    assert setups == [colab.setup_cell_source()] * len(NOTEBOOKS)
    for path in [*NOTEBOOKS, REPO / "README.md"]:
        text = path.read_text()
        assert "YOUR-GITHUB-USER" not in text, path.name
        # a badge only where KIT_REPO names a repository
        assert ("colab.research.google.com/github/" in text) == bool(colab.KIT_REPO), path.name


def _run_setup_cell(tmp_path, monkeypatch, repo=""):
    """The generated setup cell, executed as Colab would: a stub google.colab whose
    drive.mount records its calls, tmp_path standing in for /content, subprocess.run
    recording instead of installing. Returns (the namespace, mounts, commands)."""
    import subprocess
    import types

    mounts, commands = [], []
    google, colab_module = types.ModuleType("google"), types.ModuleType("google.colab")
    colab_module.drive = types.SimpleNamespace(mount=lambda where: mounts.append(where))
    google.colab = colab_module
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab_module)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    source = colab.setup_cell_source(repo).replace('"/content"', repr(str(tmp_path)))
    source = source.replace("setup(kit)", "found = kit")       # the kit's own setup: below
    namespace = {}
    exec(compile(source, "setup cell", "exec"), namespace)
    return namespace, mounts, commands


def _fake_kit(folder):
    (folder / "cifar_lib").mkdir(parents=True)
    (folder / "pyproject.toml").write_text("[project]\n")
    return folder


def test_colab_finds_the_kit_beside_the_notebook(tmp_path, monkeypatch):
    kit = _fake_kit(tmp_path / "somewhere" / "cifar-kit")
    (kit / "notebooks").mkdir()
    monkeypatch.chdir(kit / "notebooks")
    namespace, mounts, commands = _run_setup_cell(tmp_path, monkeypatch)
    assert namespace["found"] == str(kit) and mounts == []       # Drive not needed
    assert commands[-1][-2:] == ["-e", str(kit)]                 # installed from there


def test_colab_finds_the_kit_in_its_drive_folder(tmp_path, monkeypatch):
    kit = _fake_kit(tmp_path / "drive" / "MyDrive" / "cifar-kit")
    monkeypatch.chdir(tmp_path)
    namespace, mounts, commands = _run_setup_cell(tmp_path, monkeypatch)
    assert namespace["found"] == str(kit) and commands[-1][-2:] == ["-e", str(kit)]
    # Results stay with the kit on Drive; the data is fetched now.
    monkeypatch.delenv("CIFAR_RESULTS_DIR", raising=False)
    done = colab.setup(str(kit), content=str(tmp_path), download=lambda: tmp_path / "data")
    assert done == {"kit": str(kit), "results": str(kit / "results"), "data": str(tmp_path / "data")}


def test_colab_without_the_kit_says_what_to_do_and_clones_a_named_fork(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"Copy the cifar-kit folder to your Google Drive as "
                                         r"MyDrive/cifar-kit .* or set KIT_REPO"):
        _run_setup_cell(tmp_path, monkeypatch)
    namespace, _, commands = _run_setup_cell(tmp_path, monkeypatch, repo="https://example.org/me/kit.git")
    assert commands[0] == ["git", "clone", "-q", "https://example.org/me/kit.git",
                           str(tmp_path / "cifar-kit")]
    assert namespace["found"] == str(tmp_path / "cifar-kit")
    # A kit cloned to the VM keeps its results on Drive (mounted if it is not yet).
    monkeypatch.delenv("CIFAR_RESULTS_DIR", raising=False)
    _fake_kit(tmp_path / "cifar-kit")
    mounts = []
    import types
    monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(
        drive=types.SimpleNamespace(mount=lambda where: (mounts.append(where),
                                                         Path(where, "MyDrive").mkdir(parents=True)))))
    done = colab.setup(str(tmp_path / "cifar-kit"), content=str(tmp_path), download=lambda: "data")
    assert mounts == [str(tmp_path / "drive")]
    assert done["results"] == str(tmp_path / "drive" / "MyDrive" / "cifar-kit-results")
    import os
    assert os.environ["CIFAR_RESULTS_DIR"] == done["results"]


def test_colab_badges_follow_kit_repo(tmp_path):
    (tmp_path / "notebooks").mkdir()
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# 1. Title\n", "\n", "Text."]},
                    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": ["# Colab setup (old)\n"]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "notebooks" / "01_x.ipynb"
    path.write_text(json.dumps(nb))
    colab.sync(tmp_path, repo="https://github.com/me/kit")
    cells = json.loads(path.read_text())["cells"]
    assert "colab.research.google.com/github/me/kit/blob/main/notebooks/01_x.ipynb" in "".join(cells[0]["source"])
    assert "".join(cells[1]["source"]) == colab.setup_cell_source("https://github.com/me/kit")
    colab.sync(tmp_path, repo="")
    assert "".join(json.loads(path.read_text())["cells"][0]["source"]) == "# 1. Title\n\nText."


def test_the_readme_layout_names_every_module_and_only_those():
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    listed, packages = set(), {}                    # indent -> the package opened there
    for indent, name, suffix in re.findall(r"^( +)(\w+)(\.py |/)", layout, flags=re.M):
        depth = len(indent) // 2 - 1
        parents = [packages[d] for d in range(depth) if d in packages]
        if suffix == "/":
            packages = {d: p for d, p in packages.items() if d < depth} | {depth: name}
        else:
            listed.add("/".join([*parents, name]))
    modules = {str(p.relative_to(REPO / "cifar_lib").with_suffix(""))
               for p in (REPO / "cifar_lib").rglob("*.py") if not p.stem.startswith("__")}
    assert listed == modules
    assert len(text.splitlines()) <= 200


def test_a_one_epoch_learning_curve_is_drawn_with_markers_not_as_empty_axes():
    """At the smoke profile a run has one epoch: a line of one point draws nothing."""
    import pandas as pd

    one = pd.DataFrame({"config": ["a"], "seed": [0], "epoch": [1], "train_loss": [2.0],
                        "val_loss": [2.1], "train_acc": [30.0], "val_acc": [28.0]})
    fig = plots.learning_curves(one)
    drawn = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata())]
    assert drawn and all(line.get_marker() not in (None, "", "None") for line in drawn)


def test_the_readme_fits_its_limit_of_180_lines():
    assert len((REPO / "README.md").read_text().splitlines()) <= 180
