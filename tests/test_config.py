import pytest

from cifar_lib.config import ConfigError, available_configs, load_config


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
])
def test_bad_settings_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("seed_improved", "smoke", **overrides)


def test_unknown_profile_and_config_are_named():
    with pytest.raises(ConfigError, match="unknown profile 'gpu'"):
        load_config("seed_improved", "gpu")
    with pytest.raises(ConfigError, match="no config 'nope'.*known configs: .*seed_improved"):
        load_config("nope", "cpu")


def test_config_file_with_unknown_key(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('model = "basic"\nlearnign_rate = 0.1\n')
    with pytest.raises(ConfigError, match="learnign_rate"):
        load_config(str(path), "cpu")
