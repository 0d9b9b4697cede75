from __future__ import annotations

from pathlib import Path

import pytest

from seqablate.config import (
    ConfigError,
    DataConfig,
    TrialConfig,
    flatten,
    load_yaml,
    parse,
    to_yaml,
    with_overrides,
)


def test_defaults_resolve_model_inputs_from_data() -> None:
    cfg = TrialConfig()
    assert cfg.model.sequences == ["t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"]
    assert cfg.model.slices == 5


def test_unknown_field_named_with_suggestion(tmp_path: Path) -> None:
    p = tmp_path / "run.yaml"
    p.write_text("model:\n  fusoin: mean\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(p)
    msg = str(info.value)
    assert str(p) in msg
    assert "model.fusoin: unknown field (did you mean 'fusion'?)" in msg


def test_top_level_unknown_field() -> None:
    with pytest.raises(ConfigError, match=r"trian: unknown field \(did you mean 'train'\?\)"):
        parse(TrialConfig, {"trian": {}})


def test_bad_values_name_field_and_value() -> None:
    with pytest.raises(ConfigError, match=r"data.slices: .*odd.*\(got 4\)"):
        parse(TrialConfig, {"data": {"slices": 4}})
    with pytest.raises(ConfigError, match=r"model.integration: .*'input', 'mid' or 'end'"):
        parse(TrialConfig, {"model": {"integration": "late"}})
    with pytest.raises(ConfigError, match=r"data.sequences.*'fliar'"):
        parse(TrialConfig, {"data": {"sequences": ["fliar"]}})
    with pytest.raises(ConfigError, match="model.sequences"):
        parse(TrialConfig, {"model": {"sequences": ["flair"]}})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)


def test_yaml_round_trip_and_flatten(tmp_path: Path) -> None:
    cfg = parse(TrialConfig, {"data": {"sequences": ["bravo", "flair"], "slices": 3}})
    p = tmp_path / "r.yaml"
    p.write_text(to_yaml(cfg))
    again = load_yaml(p)
    assert again == cfg
    flat = flatten(cfg)
    assert flat["data.sequences"] == "t1_gre_post,flair"
    assert flat["model.slices"] == 3
    assert flat["data.cache_dir"] == "None"


def test_overrides() -> None:
    cfg = with_overrides(TrialConfig(), {"train.dropout_p": 0.25, "data.sequences": ["flair"]})
    assert cfg.train.dropout_p == 0.25
    assert cfg.model.sequences == ["flair"]  # re-derived from data
    with pytest.raises(ConfigError, match="unknown field"):
        with_overrides(TrialConfig(), {"train.dropuot_p": 0.1})
    assert DataConfig().image_size == 256
