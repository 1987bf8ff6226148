from pathlib import Path

import pytest

from cifar_lib.config import ConfigError, available_configs, load_config
from cifar_lib.study.tables import load_records

REPO = Path(__file__).resolve().parent.parent


def test_profiles_override_the_base_config():
    full = load_config("seed_improved", "full")
    smoke = load_config("seed_improved", "smoke")
    assert full.epochs == 50 and full.optimizer == "rmsprop" and full.lr == 1e-3
    assert full.schedule == "plateau" and full.plateau_factor == 0.1 and full.plateau_patience == 5
    assert full.batch_size == 128 and full.augment == ["crop", "flip", "rotate"]
    assert smoke.epochs == 1 and smoke.train_subset > 0
    assert load_config("seed_improved", "smoke", epochs=3, lr=None).epochs == 3


def test_every_shipped_config_loads_in_every_profile():
    assert {"seed_basic", "seed_improved"} <= set(available_configs())
    for name in available_configs():
        for profile in ("smoke", "cpu", "full"):
            load_config(name, profile)


@pytest.mark.parametrize("overrides, message", [
    ({"lr": 0.0}, "lr must be positive"),
    ({"lr": -1.0}, "lr must be positive"),
    ({"batch_size": 0}, "batch_size must be positive"),
    ({"optimizer": "adam"}, "unknown optimizer 'adam'; valid: sgd, adamw, rmsprop"),
    ({"schedule": "step"}, "unknown schedule 'step'; valid: constant, plateau, onecycle, cosine"),
    ({"model": "resnet"}, "unknown model 'resnet'; valid: basic, deep, fast, improved"),
    ({"model_args": {"dropout": 1.0}}, r"dropout must lie in \[0, 1\)"),
    ({"augment": ["mixup"]}, r"unknown augmentation\(s\) \['mixup'\]"),
    ({"learning_rate": 0.1}, "unknown setting.*learning_rate.*valid settings"),
    ({"epochs": "ten"}, "epochs must be a whole number"),
    # FastNet's whitening filters come from the tensor pipeline's images (was: AttributeError
    # 'DataLoader' object has no attribute 'normalized', at build time)
    ({"model": "fast", "pipeline": "reference", "model_args": {}}, 'model .fast. needs pipeline = "tensor"'),
    # a removed option is refused by name (it rescaled the filters it let learn)
    ({"model": "fast", "model_args": {"learn_whitening": True}}, "unknown model_args learn_whitening"),
])
def test_bad_settings_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("seed_improved", "smoke", **overrides)


def test_unknown_profile_and_config_are_named():
    with pytest.raises(ConfigError, match="unknown profile 'gpu'"):
        load_config("seed_improved", "gpu")
    with pytest.raises(ConfigError, match="no config 'nope'.*known configs: .*seed_improved"):
        load_config("nope", "cpu")
    # A renamed config says what it is called now; its records were renamed with it.
    with pytest.raises(ConfigError, match=r"no config 'best': it is called 'deep' now \(fix: --config deep"):
        load_config("best", "cpu")
    assert load_config("deep", "cpu").name == "deep"
    renamed = [r for r in load_records(REPO / "results") if r["config_name"] == "deep"]
    assert renamed and all(r["id"].startswith("deep-") and r["config"]["name"] == "deep" for r in renamed)


def test_config_file_with_unknown_key(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('model = "basic"\nlearnign_rate = 0.1\n')
    with pytest.raises(ConfigError, match="learnign_rate"):
        load_config(str(path), "cpu")


def test_a_config_can_be_a_few_changes_to_another(tmp_path):
    mine = tmp_path / "fast_short.toml"
    mine.write_text('base = "fast"\nepochs = 4\nmodel_args = { widths = [32, 64, 64] }\n'
                    '[profiles.full]\nbatch_size = 1000\n')
    # its own settings win over the base's profile tables (fast sets 8 epochs at cpu and full),
    # the smoke profile stays seconds long, and the base's description is not this config's
    expected = {"smoke": {"model_args"}, "cpu": {"model_args", "epochs"},
                "full": {"model_args", "epochs", "batch_size"}}
    for profile, changes in expected.items():
        cfg, fast = load_config(str(mine), profile), load_config("fast", profile)
        changed = {k for k, v in cfg.to_dict().items() if fast.to_dict()[k] != v}
        assert changed == changes | {"name", "description"}
        assert cfg.name == "fast_short" and cfg.description == "" and cfg.optimizer == "muon"
        assert cfg.epochs == (1 if profile == "smoke" else 4)
    assert load_config(str(mine), "full").batch_size == 1000


def test_a_base_that_is_missing_or_circular_is_named(tmp_path):
    (tmp_path / "a.toml").write_text(f'base = "{tmp_path / "b.toml"}"\n')
    (tmp_path / "b.toml").write_text(f'base = "{tmp_path / "a.toml"}"\n')
    with pytest.raises(ConfigError, match=r"leads back to itself \(a -> b -> a\)"):
        load_config(str(tmp_path / "a.toml"), "cpu")
    (tmp_path / "c.toml").write_text('base = "fastest"\n')
    with pytest.raises(ConfigError, match="no config 'fastest'.*known configs: .*fast"):
        load_config(str(tmp_path / "c.toml"), "cpu")
