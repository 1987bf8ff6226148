"""The committed notebooks read cleanly (no progress-bar spam, rounded numbers, no local
paths), figure captions say what the figures draw, and the Colab setup is one source."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from cifar_lib import colab, plots
from cifar_lib.notebook import tidy_outputs

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
BAR = re.compile(r"\d+%\|")                                 # a tqdm bar
LONG_FLOAT = re.compile(r"(?<![\w.])\d+\.\d{5,}(?![\w.])")  # 62.599999
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
        text = "\n".join(_texts(cell))
        shown = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
        assert len(BAR.findall(shown)) <= 1 and "\r" not in text, f"cell {i}: progress-bar spam"
        assert not LONG_FLOAT.findall(text), f"cell {i}: unrounded numbers {LONG_FLOAT.findall(text)[:3]}"
        assert not LOCAL_PATH.findall(text), f"cell {i}: a local path in the output"


def test_tidying_keeps_the_last_state_of_each_bar(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": [], "metadata": {}, "execution_count": 1,
                     "outputs": [{"output_type": "stream", "name": "stderr", "text": [f"\rrun: {p}%|"]}
                                 for p in (0, 50, 100)]
                     + [{"output_type": "stream", "name": "stdout", "text": ["done\n"]}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    assert tidy_outputs(path) and not tidy_outputs(path)
    outputs = json.loads(path.read_text())["cells"][0]["outputs"]
    assert ["".join(o["text"]) for o in outputs] == ["run: 100%|\n", "done\n"]


def test_learning_curve_styles_match_their_captions():
    history = pd.DataFrame({"config": "c", "seed": 0, "epoch": [1, 2],
                            "train_loss": [2.0, 1.0], "val_loss": [2.1, 1.2],
                            "train_acc": [30.0, 50.0], "val_acc": [28.0, 45.0]})
    fig = plots.learning_curves(history)
    for ax in fig.axes:
        legend = {t.get_text(): h for t, h in zip(ax.get_legend().get_texts(),
                                                   ax.get_legend().legend_handles)}
        for split, (name, _) in plots.CURVE_STYLES.items():
            drawn = legend[split].get_linestyle()
            assert (drawn == "-") == (name == "solid"), (split, drawn, name)
    assert plots.CURVE_STYLES_TEXT == "training (solid), validation (dashed)"


def test_notebooks_and_readme_take_the_repository_from_one_place():
    setups = []
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        setups += ["".join(c["source"]) for c in cells if c["cell_type"] == "code"
                   and "".join(c["source"]).startswith(colab.SETUP_MARK)]
    assert setups == [colab.setup_cell_source()] * len(NOTEBOOKS)
    repo_path = colab.KIT_REPO.removeprefix("https://github.com/")
    for path in [*NOTEBOOKS, REPO / "README.md"]:
        links = re.findall(r"colab\.research\.google\.com/github/([^)]*)/blob/", path.read_text())
        assert links and set(links) == {repo_path}, path.name


def test_colab_setup_is_a_no_op_outside_colab_and_complete_inside(tmp_path, monkeypatch):
    assert colab.setup(results_on_drive=True) == {"colab": False}     # this machine
    monkeypatch.setattr(colab, "CHECKOUT", str(tmp_path))
    monkeypatch.setattr(colab, "DRIVE_RESULTS", str(tmp_path / "drive" / "results"))
    monkeypatch.delenv("CIFAR_RESULTS_DIR", raising=False)
    mounted = []
    done = colab.setup(results_on_drive=True, colab=True, mount=mounted.append,
                       download=lambda: tmp_path / "data")
    assert mounted == ["/content/drive"] and Path.cwd() == tmp_path
    assert done == {"colab": True, "workdir": str(tmp_path), "results": str(tmp_path / "drive" / "results"),
                    "data": str(tmp_path / "data")}
    import os
    assert os.environ["CIFAR_RESULTS_DIR"] == str(tmp_path / "drive" / "results")
