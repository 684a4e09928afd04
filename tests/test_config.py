"""Configs: the embedded default, overrides, unknown keys, the resolved config beside outputs."""

from __future__ import annotations

import json

import pytest
import yaml

from vibe3r.config import Config, ConfigError, default_config_path, load_config, save_config


def test_default_yaml_is_the_code_default():
    cfg = load_config(default_config_path())
    assert cfg == Config()


def test_overrides_parse_yaml_values_and_nest():
    cfg = load_config(None, ["render.width=96", "render.degrade.noise_std=0", "world.texture_dirs=[a, b]", "dataset.max_gap=null"])
    assert cfg.render.width == 96
    assert cfg.render.degrade.noise_std == 0
    assert cfg.world.texture_dirs == ["a", "b"]
    assert cfg.dataset.max_gap is None


@pytest.mark.parametrize(
    "override, expect",
    [
        ("render.widht=3", "unknown config key 'render.widht'"),
        ("nosuch.key=1", "unknown config key 'nosuch'"),
        ("render.width=abc", "bad config value for 'render.width'"),
        ("dataset.covis_min=0.99", "covis_min (0.99) > covis_max"),
        ("render", "not of the form"),
        ("loop.capture_gaps=[20, 10]", "capture_gaps: need 1 <= min <= max, got 20, 10"),
        ("loop.val_gaps=[0, 10]", "val_gaps: need 1 <= min <= max, got 0, 10"),
        ("loop.eval_precision=fp8", "bad config value for 'loop.eval_precision'"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, expect):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expect in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_lists_valid_keys_of_its_section():
    with pytest.raises(ConfigError, match=r"valid keys here: .*noise_std"):
        load_config(None, ["render.degrade.noize=1"])


def test_every_shipped_config_loads():
    for path in sorted((default_config_path().parent).glob("*.yaml")):
        load_config(path)  # raises ConfigError on an unknown or invalid key


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["seed=7", "render.width=80"])
    path = save_config(cfg, tmp_path)
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["render"]["width"] == 80
    assert json.loads(again.model_dump_json())["seed"] == 7
