"""Per-sequence dropout settings and validation objectives in the config: parsing, canonical
form, the flattened one-param round trip, objective values computed by hand, bad inputs."""

from __future__ import annotations

import argparse
import math
import re

import pytest

from seqablate import objectives as ob
from seqablate.config import (
    ConfigError,
    TrialConfig,
    dropout_probabilities,
    flatten,
    parse,
    with_overrides,
)
from seqablate.naming import run_name, trial_key

FULL, CENSOR_BRAVO = "full", "censor_t1_gre_post"


def _train(**train: object) -> TrialConfig:
    return parse(TrialConfig, {"train": train})


def _from_flat(cfg: TrialConfig) -> TrialConfig:
    """A TrialConfig rebuilt from the flattened params alone (what MLflow holds)."""
    raw: dict[str, dict[str, object]] = {}
    for key, value in flatten(cfg).items():
        section, _, leaf = key.partition(".")
        if section == "name":
            raw["name"] = value  # type: ignore[assignment]
            continue
        if value == "None":
            value = None
        elif isinstance(value, str) and leaf in ("sequences", "val_conditions", "val_censor", "censor",
                                                 "lesion_labels", "default_spacing"):
            value = [v for v in value.split(",") if v]
        raw.setdefault(section, {})[leaf] = value
    raw["eval"].pop("external", None)
    raw["data"].pop("aliases", None)
    return parse(TrialConfig, raw)


def test_dropout_p_is_a_number_or_a_mapping_in_study_order():
    assert _train(dropout_p=0.25).train.dropout_p == 0.25
    cfg = _train(dropout_p={"flair": 0.1, "bravo": 0.4})  # alias, and out of study order
    assert cfg.train.dropout_p == {"t1_gre_post": 0.4, "flair": 0.1}
    assert list(cfg.train.dropout_p) == ["t1_gre_post", "flair"]
    assert dropout_probabilities(cfg.train.dropout_p, cfg.data.sequences) == (0.4, 0.0, 0.0, 0.1)
    # the one-string form reads back, and step noise of a sampler is rounded away
    assert _train(dropout_p="flair=0.1, t1_gre_post=0.30000000000000004").train.dropout_p == {
        "t1_gre_post": 0.3, "flair": 0.1}


@pytest.mark.parametrize("train", [
    {"dropout_p": 0.25},
    {"dropout_p": {"flair": 0.1, "t1_gre_post": 0.4}, "objective": "full=0.7,censor_t1_gre_post=0.3"},
    {"dropout_p": {"t1_fse_pre": 0.0}, "objective": "worst", "val_conditions": ["full", "censor_flair"]},
    {"val_censor": ["t1_gre_post"]},
    {"objectives": ["full", "full=0.7,censor_flair=0.3", "mean"]},
])
def test_flatten_round_trip_scalar_and_mapping(train):
    cfg = _train(**train)
    flat = flatten(cfg)
    p = cfg.train.dropout_p
    assert flat["train.dropout_p"] == (p if isinstance(p, float) else ",".join(f"{k}={v:g}" for k, v in p.items()))
    assert not any(k.startswith(("train.dropout_p.", "train.objective.")) for k in flat)  # one param each
    assert _from_flat(cfg) == cfg
    assert flatten(_from_flat(cfg)) == flat


def test_flattened_strings_of_a_study():
    cfg = _train(dropout_p={"flair": 0.1, "t1_gre_post": 0.4}, objective={"full": 0.7, CENSOR_BRAVO: 0.3})
    flat = flatten(cfg)
    assert flat["train.dropout_p"] == "t1_gre_post=0.4,flair=0.1"
    assert flat["train.objective"] == "full=0.7,censor_t1_gre_post=0.3"
    assert flat["train.val_conditions"] == "full,censor_t1_gre_post"  # added by the profile
    assert flatten({"base": cfg.model_dump(mode="json")})["base.train.dropout_p"] == "t1_gre_post=0.4,flair=0.1"
    assert _train(objective="worst", val_conditions=[FULL, CENSOR_BRAVO]).train.objective == "worst"
    assert flatten(TrialConfig())["train.objective"] == "None"


def test_conditions_are_canonical_and_objectives_add_theirs():
    cfg = _train(val_conditions=["full", "subset_t1_fse_pre-t1_fse_post-flair", "censor_flair-bravo"],
                 objective="censor_t1_fse_pre")
    assert cfg.train.val_conditions == ["full", CENSOR_BRAVO, "subset_t1_fse_pre-t1_fse_post",
                                        "censor_t1_fse_pre"]
    assert cfg.train.objective == "censor_t1_fse_pre"
    # idempotent: the resolved config parses to itself, also through overrides
    assert parse(TrialConfig, cfg.model_dump()) == cfg
    assert with_overrides(cfg, {"train.objective": "mean"}).train.val_conditions == cfg.train.val_conditions


def test_val_censor_is_the_first_spelling_of_one_censored_condition():
    cfg = _train(val_censor=["t1_gre_post"])
    assert cfg.train.val_conditions == [CENSOR_BRAVO] and cfg.train.objective is None
    assert ob.selection_condition(cfg.train.objective, cfg.train.val_conditions) == CENSOR_BRAVO
    assert _train(val_censor=["flair"], val_conditions=["censor_flair"]).train.val_conditions == ["censor_flair"]
    assert _train(val_censor=["t1_fse_pre", "flair"]).train.val_conditions == ["subset_t1_gre_post-t1_fse_post"]
    assert parse(TrialConfig, _train(val_censor=["flair"]).model_dump()).train.val_conditions == ["censor_flair"]


def test_objective_values_by_hand():
    maps = {FULL: 0.60, CENSOR_BRAVO: 0.20, "censor_flair": 0.55}
    conds = list(maps)
    assert ob.objective_value(None, conds, maps) == 0.60  # the first condition
    assert ob.objective_value("censor_flair", conds, maps) == 0.55
    assert ob.objective_value("worst", conds, maps) == 0.20
    assert ob.objective_value("mean", conds, maps) == pytest.approx((0.60 + 0.20 + 0.55) / 3)
    # "30 % of referrals come without BRAVO": 0.7 * 0.60 + 0.3 * 0.20
    assert ob.objective_value({FULL: 0.7, CENSOR_BRAVO: 0.3}, conds, maps) == pytest.approx(0.48)
    assert ob.objective_value({FULL: 1.0, CENSOR_BRAVO: 0.0}, conds, maps) == pytest.approx(0.60)
    # shares within 1e-6 of summing to 1 are accepted as written
    assert ob.parse_objective("full=0.7,censor_t1_gre_post=0.3000001") == {FULL: 0.7, CENSOR_BRAVO: 0.3000001}
    assert math.isnan(ob.objective_value("worst", conds, {**maps, "censor_flair": math.nan}))
    with pytest.raises(KeyError, match="censor_t1_fse_pre"):
        ob.objective_value("censor_t1_fse_pre", conds, maps)


def test_definitions_in_words():
    assert ob.definition(None, [FULL]) == "validation mAP under full (the first of train.val_conditions)"
    assert ob.definition("worst", [FULL, CENSOR_BRAVO]) == "worst (lowest) validation mAP over full, censor_t1_gre_post"
    text = ob.definition({FULL: 0.7, CENSOR_BRAVO: 0.3}, [FULL, CENSOR_BRAVO])
    assert text.startswith("deployment profile: 0.7 x mAP(full) + 0.3 x mAP(censor_t1_gre_post)")
    assert "not the mAP of one pooled cohort" in text
    assert ob.robustness_conditions(["t1_gre_post", "flair"]) == [FULL, CENSOR_BRAVO, "censor_flair"]


@pytest.mark.parametrize(("train", "field", "message"), [
    ({"dropout_p": {"t2": 0.1}}, "train.dropout_p", r"names \['t2'\], not among the study's sequences"),
    ({"dropout_p": {"fliar": 0.1}}, "train.dropout_p", r"unknown pulse sequence 'fliar' \(did you mean 'flair'\?\)"),
    ({"dropout_p": {"flair": 1.5}}, "train.dropout_p", r"the dropout p of 'flair' must be in \[0, 1\], got 1.5"),
    ({"dropout_p": 1.5}, "train.dropout_p", r"must be in \[0, 1\], got 1.5"),
    ({"dropout_p": True}, "train.dropout_p", "must be a number"),
    ({"dropout_p": {}}, "train.dropout_p", "empty mapping"),
    ({"dropout_p": "lots"}, "train.dropout_p", "'lots'"),
    ({"dropout_p": {"flair": 0.2}, "dropout_mode": "uniform"}, "train.dropout_p", "dropout_mode: uniform ignores"),
    ({"objective": {"full": 0.7, CENSOR_BRAVO: 0.2}}, "train.objective", r"shares sum to 0.9, not 1"),
    ({"objective": "full=0.7,censor_t1_gre_post=0.30001"}, "train.objective", "sum to 1.00001, not 1"),
    ({"objective": {"full": 1.2, CENSOR_BRAVO: -0.2}}, "train.objective", "must be a finite number >= 0"),
    ({"objective": "full=0.7,censor"}, "train.objective", "CONDITION=SHARE"),
    ({"objective": "worst"}, "train.val_conditions", r"'worst' over one validation condition \(full\)"),
    ({"objective": "mean", "val_conditions": [CENSOR_BRAVO]}, "train.val_conditions", "two or more"),
    ({"objective": "censor_t2"}, "train.objective", "'censor_t2' is not a validation condition"),
    ({"objective": {"full": 0.5, "sometimes": 0.5}}, "train.objective", "'sometimes' is not a validation condition"),
    ({"val_conditions": ["full", "censor_bravo", "censor_t1_gre_post"]}, "train.val_conditions", "repeats"),
    ({"val_conditions": ["subset_"]}, "train.val_conditions", "'subset_' is not a validation condition"),
    ({"val_conditions": []}, "train.val_conditions", "empty"),
    ({"val_censor": ["flair"], "val_conditions": [FULL, "censor_flair"]}, "train.val_censor", "set only train.val_conditions"),
    ({"val_censor": ["t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair"]}, "train.val_censor",
     "censors every sequence"),
    ({"objectives": ["full"]}, "train.objectives", r"one objective \(full\) is train.objective alone; give two or more"),
    ({"objectives": ["full", "censor_bravo", "censor_t1_gre_post"]}, "train.objectives",
     "'censor_t1_gre_post' repeats 'censor_t1_gre_post'"),
    ({"objectives": ["full", "censor_t2"]}, "train.objectives", r"train.objectives\[1\]: 'censor_t2' is not a validation"),
    ({"objectives": ["full", None]}, "train.objectives", r"train.objectives\[1\]: empty"),
    ({"objectives": ["full", "worst"]}, "train.objectives", r"\[1\]: 'worst' over one validation condition"),
    ({"objectives": {"full": 1.0}}, "train.objectives", "expected a list of objectives"),
    ({"objective": "worst", "objectives": ["full", "worst"], "val_conditions": [FULL, CENSOR_BRAVO]},
     "train.objectives", "'worst' is not the first of train.objectives"),
])
def test_bad_inputs_name_the_field(train, field, message):
    with pytest.raises(ConfigError) as info:
        _train(**train)
    text = str(info.value)
    assert field in text, text
    assert re.search(message, text), text


def test_several_objectives_add_their_conditions_whatever_their_order():
    first = _train(objectives=["censor_bravo", "worst"])
    assert first.train.objectives == [CENSOR_BRAVO, "worst"]
    assert first.train.objective == CENSOR_BRAVO  # the first: the one the checkpoint is selected by
    assert first.train.val_conditions == [FULL, CENSOR_BRAVO]  # 'worst' reduces over both
    later = _train(objectives=["worst", "censor_bravo"])
    assert later.train.val_conditions == [FULL, CENSOR_BRAVO] and later.train.objective == "worst"
    profile = _train(objectives=["full", {"full": 0.7, "censor_flair": 0.3}, "mean"])
    assert profile.train.val_conditions == [FULL, "censor_flair"]
    assert flatten(profile)["train.objectives"] == "full; full=0.7,censor_flair=0.3; mean"
    assert ob.parse_objectives("full; full=0.7,censor_flair=0.3; mean") == profile.train.objectives
    assert ob.objectives_text(profile.train.objectives) == "full; full=0.7,censor_flair=0.3; mean"
    # train.objective may be given too, as the first objective (in any spelling of it)
    assert _train(objective="censor_bravo", objectives=["censor_t1_gre_post", "worst"]).train.objective == CENSOR_BRAVO
    assert _train().train.objectives == [] and flatten(_train())["train.objectives"] == ""


def test_a_dropout_mapping_outside_a_smaller_study():
    cfg = parse(TrialConfig, {"data": {"sequences": ["t1_fse_pre", "flair"]}, "train": {"dropout_p": {"flair": 0.2}}})
    assert dropout_probabilities(cfg.train.dropout_p, cfg.data.sequences) == (0.0, 0.2)
    with pytest.raises(ConfigError, match=r"train.dropout_p names \['t1_gre_post'\].*\['t1_fse_pre', 'flair'\]"):
        with_overrides(cfg, {"train.dropout_p": {"t1_gre_post": 0.2}})


def test_run_names_and_keys_of_mappings():
    ov = {"model.integration": "input", "train.dropout_p": {"t1_gre_post": 0.4, "flair": 0.1}, "train.seed": 0}
    assert run_name(ov) == "input-p_t1_gre_post=0.4+flair=0.1-seed0"
    assert run_name({**ov, "train.dropout_p": "t1_gre_post=0.4,flair=0.1"}) == "input-p_t1_gre_post=0.4+flair=0.1-seed0"
    assert run_name({**ov, "train.dropout_p": {"t1_gre_post": 0.0}}) == "input-seed0"  # zeros: no dropout
    reordered = {**ov, "train.dropout_p": {"flair": 0.1, "t1_gre_post": 0.4}}
    assert trial_key(reordered) == trial_key(ov)


def _args(**kw: object) -> argparse.Namespace:
    base = {"space": "dropout-sweep", "cohort": ".", "name": None, "external": None, "smoke": True, "trials": None,
            "base": None, "num_samples": None, "seeds": None, "scheduler": None, "max_concurrent": None,
            "workers_per_trial": None, "gpus_per_worker": None, "cpus_per_worker": None, "storage": None,
            "tracking_uri": None, "objective": None, "objectives": None}
    return argparse.Namespace(**{**base, **kw})


def test_study_objective_flag(tmp_path):
    from seqablate.cli.train import study_config_from_args

    profile = study_config_from_args(_args(objective="full=0.7,censor_t1_gre_post=0.3")).base.train
    assert profile.objective == {FULL: 0.7, CENSOR_BRAVO: 0.3} and profile.val_conditions == [FULL, CENSOR_BRAVO]
    worst = study_config_from_args(_args(objective="worst")).base.train
    assert worst.objective == "worst"
    assert worst.val_conditions == [FULL] + [f"censor_{s}" for s in TrialConfig().data.sequences]
    base = tmp_path / "base.yaml"
    base.write_text("data: {sequences: [t1_gre_post, flair]}\ntrain: {val_conditions: [full, censor_flair]}\n")
    kept = study_config_from_args(_args(objective="mean", base=str(base))).base.train
    assert kept.val_conditions == [FULL, "censor_flair"]  # the base's own conditions
    assert study_config_from_args(_args()).base.train.objective is None
    for bad, says in (("full=0.7,censor_t1_gre_post=0.2", "not 1"), ("censor_t2", "censor_t2")):
        with pytest.raises(ConfigError, match=rf"(?s)--objective '{bad}': .*train.objective.*{says}"):
            study_config_from_args(_args(objective=bad))
    one = tmp_path / "one.yaml"
    one.write_text("train: {val_censor: [t1_gre_post]}\n")
    with pytest.raises(ConfigError, match=r"(?s)--objective 'worst': .*train.val_conditions"):
        study_config_from_args(_args(objective="worst", base=str(one)))


def test_study_objectives_flag():
    from seqablate.cli.train import study_config_from_args
    from seqablate.trainables.driver import search_metrics

    train = study_config_from_args(_args(objectives=["full", "worst"])).base.train
    assert train.objective == FULL and train.objectives == [FULL, "worst"]
    assert train.val_conditions == [FULL] + [f"censor_{s}" for s in TrialConfig().data.sequences]
    # Optuna's objectives: each objective at the selected checkpoint, all maximised.
    base = study_config_from_args(_args(objectives=["full", "worst"], space="hpo-per-sequence")).base
    assert search_metrics(base) == (["val.selected_objective.1", "val.selected_objective.2"], ["max", "max"])
    assert search_metrics(TrialConfig()) == (["val.best_objective"], ["max"])
    # A grid with several objectives runs as a grid: no searcher (the front is computed afterwards).
    from seqablate.trainables.driver import _tuner_args, study_space

    grid = study_config_from_args(_args(objectives=["full", "worst"]))
    args = _tuner_args(grid, study_space(grid), "/tmp", "grid", False)
    assert args["tune_config"].search_alg is None and "overrides" in args["param_space"]
    profile = study_config_from_args(_args(objectives=["censor_bravo", "full=0.5,censor_flair=0.5"])).base.train
    assert profile.val_conditions == [FULL, CENSOR_BRAVO, "censor_flair"]  # no aggregate: only what they name
    with pytest.raises(ValueError, match=r"--objective 'full' and --objectives full worst: give one of them"):
        study_config_from_args(_args(objective="full", objectives=["full", "worst"]))
    with pytest.raises(ValueError, match=r"--objectives worst: give two or more objectives"):
        study_config_from_args(_args(objectives=["worst"]))
    with pytest.raises(ConfigError, match=r"(?s)--objectives full worst: .*asha.*ASHA stops trials by one metric"):
        study_config_from_args(_args(objectives=["full", "worst"], scheduler="asha"))
    with pytest.raises(ConfigError, match=r"(?s)--objectives full censor_t2: .*train.objectives\[1\]: 'censor_t2'"):
        study_config_from_args(_args(objectives=["full", "censor_t2"]))
