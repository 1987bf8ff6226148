"""Sweep files are checked as configs are (D6): a key or value a sweep cannot have, a
variant's bad setting or a file that is not TOML is named, file and variant, before any
data is loaded, and one broken file leaves the others working."""
import pytest

from cifar_lib import cli
from cifar_lib.config import ConfigError
from cifar_lib.study import sweeps

GOOD = 'base = "seed_improved"\nseeds = [0, 1]\n[variants]\nbase = {}\n"no aug" = { augment = [] }\n'


def _write(folder, name, text):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml").write_text(text)
    return folder / f"{name}.toml"


@pytest.mark.parametrize("line, message", [
    ("seed = [5]", "unknown key 'seed'; valid keys: base, baseline, seeds"),
    ("failure_bellow = 0.2", "unknown key 'failure_bellow'"),
    ("failure_below = 20", "failure_below = 20 should be a fraction between 0 and 1"),
    ('seeds = "0,1"', "seeds = '0,1' should be a list of seeds"),
    ('analysis = "pairs"', 'analysis = \'pairs\' should be "two-way" or "paired"'),
])
def test_a_key_a_sweep_cannot_have_is_refused_with_its_file(tmp_path, line, message):
    text = GOOD.replace("seeds = [0, 1]\n", "") if line.startswith("seeds") else GOOD
    path = _write(tmp_path, "mine", line + "\n" + text)
    with pytest.raises(ConfigError, match="mine.toml: " + message.replace("[", r"\[").replace("(", r"\(")):
        sweeps.load_sweep(path)


def test_families_declared_optional_leave_the_required_runs_and_an_unknown_one_is_refused(tmp_path):
    grouped = GOOD + '"dropout" = { model_args = { dropout = 0.2 } }\n[groups]\nasked = ["no aug"]\nextra = ["dropout"]\n'
    plain = sweeps.load_sweep(_write(tmp_path, "plain", grouped))
    assert len(plain.required_runs()) == plain.planned_runs == 6          # nothing declared optional
    capped = sweeps.load_sweep(_write(tmp_path, "capped", 'optional_groups = ["extra"]\n' + grouped))
    assert sorted(capped.required_runs()) == [("base", 0), ("base", 1), ("no aug", 0), ("no aug", 1)]
    with pytest.raises(ConfigError, match=r"typo.toml: optional_groups names \['extras'\]"):
        sweeps.load_sweep(_write(tmp_path, "typo", 'optional_groups = ["extras"]\n' + grouped))
    # the recipe study's further family ran last, if the cap allowed: 68 of its 76 runs are required
    recipe = sweeps.SWEEPS["recipe_study"]
    assert (recipe.planned_runs, len(recipe.required_runs())) == (76, 68)


def test_a_variants_bad_setting_names_the_file_and_the_variant(tmp_path):
    sweep = sweeps.load_sweep(_write(tmp_path, "mine", GOOD + '"typo" = { lrr = 0.1 }\n'))
    with pytest.raises(ConfigError) as e:
        sweep.check("cpu")
    assert "mine.toml, variant 'typo': unknown setting(s) lrr" in str(e.value)
    assert "command line" not in str(e.value)


def test_a_broken_file_is_named_and_the_other_sweeps_still_load(tmp_path):
    _write(tmp_path, "good", GOOD)
    _write(tmp_path, "broken", GOOD + "[variants\n")
    found, broken = sweeps.load_sweeps(tmp_path)
    assert list(found) == ["good"] and list(broken) == ["broken"]
    assert "broken.toml: not valid TOML" in str(broken["broken"])


def test_the_sweep_command_names_a_bad_variant_before_the_data_loads(tmp_path, monkeypatch, capsys):
    bad = sweeps.load_sweep(_write(tmp_path, "mine", GOOD + '"typo" = { dropuot = 0.1 }\n'))
    monkeypatch.setitem(sweeps.SWEEPS, "mine", bad)
    monkeypatch.setattr(cli, "_data", lambda args: pytest.fail("the data was loaded"))
    assert cli.main(["sweep", "mine", "--profile", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "mine.toml, variant 'typo': unknown setting(s) dropuot" in err and "Traceback" not in err
