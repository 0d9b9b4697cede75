"""The hpo define-by-run space: conditional parameters, only valid models."""

from __future__ import annotations

import math

import optuna
import pytest

from seqablate.config import TrialConfig, with_overrides
from seqablate.search_spaces import get_space, model_problems, validate_space
from seqablate.search_spaces.hpo import LR_RANGE, TIE_LAMBDA_RANGE, make_hpo

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(fn, n: int, sampler: optuna.samplers.BaseSampler) -> list[tuple[dict, dict]]:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for i in range(n):
        trial = study.ask()
        overrides = fn(trial)
        out.append((overrides, dict(trial.params)))
        study.tell(trial, float(i % 7))
    return out


def test_random_samples_are_valid_and_conditional() -> None:
    samples = _sample(get_space("hpo").search_fn(), 300, optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for overrides, params in samples:
        cfg = with_overrides(TrialConfig(), overrides)
        assert model_problems(cfg) == [], overrides
        m = cfg.model
        seen.add((m.integration, m.fusion, m.sharing))
        # Sampled (searched) parameters exist only where they matter.
        assert ("model.integration_point" in params) == (m.integration == "mid")
        assert ("model.fusion" in params) == (m.integration == "mid")
        assert ("model.sharing" in params) == (m.integration != "input" and m.fusion != "subtract")
        assert ("train.tie_lambda" in params) == (m.sharing == "l2_tied")
        if m.sharing == "l2_tied":
            assert TIE_LAMBDA_RANGE[0] <= cfg.train.tie_lambda <= TIE_LAMBDA_RANGE[1]
        assert LR_RANGE[0] <= cfg.train.lr <= LR_RANGE[1]
        assert 0 <= cfg.train.dropout_p <= 0.5
        assert math.isclose(round(cfg.train.dropout_p / 0.05) * 0.05, cfg.train.dropout_p)
    # Every kind of architecture is reachable.
    assert ("mid", "subtract", "shared") in seen
    assert {i for i, _, _ in seen} == {"input", "mid", "end"}
    assert {s for i, _, s in seen if i != "input"} == {"independent", "shared", "l2_tied"}


def test_no_subtract_without_a_contrast_pair() -> None:
    fn = make_hpo(["t1_gre_post", "flair"])
    for overrides, _ in _sample(fn, 150, optuna.samplers.RandomSampler(seed=2)):
        assert overrides["model.fusion"] != "subtract"
    base = with_overrides(TrialConfig(), {"data.sequences": ["t1_gre_post", "flair"]})
    validate_space(get_space("hpo"), base, samples=40)  # the space adapts to the base


def test_tpe_handles_the_conditional_space() -> None:
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    for overrides, _ in _sample(get_space("hpo").search_fn(), 25, sampler):
        assert model_problems(with_overrides(TrialConfig(), overrides)) == []


def test_ray_optuna_search_passes_dotted_keys_through() -> None:
    # The Tune driver hands this function to Ray's OptunaSearch; its suggestions must be the
    # same flat dotted override dicts (Ray unflattens on '/', not '.').
    pytest.importorskip("ray.tune.search.optuna")
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(space=get_space("hpo").search_fn(), metric="val.mAP", mode="max", seed=3)
    for i in range(5):
        config = search.suggest(f"t{i}")
        assert "model.integration" in config and "train.lr" in config
        assert model_problems(with_overrides(TrialConfig(), config)) == []
        search.on_trial_complete(f"t{i}", {"val.mAP": 0.1 * i})


def test_per_sequence_space_samples_one_p_per_sequence() -> None:
    from seqablate.search_spaces.hpo import PER_SEQUENCE_P_RANGE

    seqs = TrialConfig().data.sequences
    samples = _sample(get_space("hpo-per-sequence").search_fn(), 120, optuna.samplers.RandomSampler(seed=4))
    spread = set()
    for overrides, params in samples:
        cfg = with_overrides(TrialConfig(), overrides)
        assert model_problems(cfg) == [], overrides
        p = cfg.train.dropout_p
        assert list(p) == list(seqs) and cfg.train.dropout_mode == "bernoulli"
        for s, v in p.items():
            assert PER_SEQUENCE_P_RANGE[0] <= v <= PER_SEQUENCE_P_RANGE[1]
            assert math.isclose(round(v / 0.05) * 0.05, v) and v == pytest.approx(params[f"dropout_p_{s}"])
        assert "train.dropout_p" not in params  # the helpers are sampled, the mapping is returned
        spread.add(len(set(p.values())))
    assert max(spread) > 1  # the sequences get different probabilities
    # Adapted to the base's sequences, every sample a valid trial there.
    base = with_overrides(TrialConfig(), {"data.sequences": ["t1_fse_post", "flair"]})
    points = validate_space(get_space("hpo-per-sequence"), base, samples=20)
    assert all(list(pt["train.dropout_p"]) == ["t1_fse_post", "flair"] for pt in points)
    assert all("." in k for pt in points for k in pt)  # no helper reaches the overrides


def test_ray_optuna_search_per_sequence_overrides() -> None:
    pytest.importorskip("ray.tune.search.optuna")
    from ray.tune.search.optuna import OptunaSearch

    from seqablate.naming import run_name
    from seqablate.trainables.trial_names import trial_overrides

    search = OptunaSearch(space=get_space("hpo-per-sequence").search_fn(), metric="val.best_objective", mode="max",
                          seed=5)
    for i in range(3):
        config = search.suggest(f"t{i}")
        overrides = trial_overrides(config)
        assert "dropout_p_flair" in config and "dropout_p_flair" not in overrides
        cfg = with_overrides(TrialConfig(), overrides)
        assert cfg.train.dropout_p["flair"] == pytest.approx(config["dropout_p_flair"])
        p = cfg.train.dropout_p
        if any(p.values()):
            assert "-p_" in run_name(overrides)
        search.on_trial_complete(f"t{i}", {"val.best_objective": 0.1 * i})


def test_multi_objective_search_state_survives_save_and_restore(tmp_path) -> None:
    """What `study resume` relies on: the study's OptunaSearch (two objectives, TPE) written
    by Tune's save_to_dir and read back by a fresh searcher's restore_from_dir holds every
    finished trial with both values and the trial still in flight, and goes on sampling."""
    pytest.importorskip("ray.tune.search.optuna")
    from ray.tune.search.optuna import OptunaSearch

    from seqablate.config import StudyConfig, parse
    from seqablate.metrics.pareto import pareto_front
    from seqablate.trainables.driver import OBJECTIVE, _tuner_args, search_metrics
    from seqablate.trainables.trial_names import trial_overrides

    cfg = parse(StudyConfig, {"space": "hpo-per-sequence", "num_samples": 6,
                              "base": {"train": {"objectives": ["full", "worst"],
                                                 "val_conditions": ["full", "censor_t1_gre_post"]}}})
    space = get_space("hpo-per-sequence")
    args = _tuner_args(cfg, space, str(tmp_path), "study", False)
    search = args["tune_config"].search_alg
    metrics, modes = search_metrics(cfg.base)
    assert isinstance(search, OptunaSearch) and search.metric == metrics and search.mode == ["max", "max"]
    assert metrics == ["val.selected_objective.1", "val.selected_objective.2"]
    assert isinstance(search._sampler, optuna.samplers.TPESampler)  # multi-objective TPE (docs/design.md)
    assert args["tune_config"].metric == OBJECTIVE and args["tune_config"].num_samples == 6  # Tune's: objective 1
    values = [(0.6, 0.1), (0.5, 0.4), (0.4, 0.3)]
    for i, (a, b) in enumerate(values):
        config = search.suggest(f"t{i}")
        assert "train.dropout_p" in trial_overrides(config)
        search.on_trial_complete(f"t{i}", {metrics[0]: a, metrics[1]: b, OBJECTIVE: a})
    flying = search.suggest("t3")
    search.save_to_dir(str(tmp_path), session_str="s1")

    fresh = _tuner_args(cfg, space, str(tmp_path), "study", False)["tune_config"].search_alg
    fresh.restore_from_dir(str(tmp_path))
    study = fresh._ot_study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [tuple(t.values) for t in done] == values
    # Optuna's own front of the restored study is ours on the same values.
    assert sorted(t.number for t in study.best_trials) == [i for i, on in enumerate(pareto_front(values, modes)) if on]
    # The trial in flight when the study was killed is still known, with its sample, and completes.
    assert fresh.suggest("t3") == flying
    fresh.on_trial_complete("t3", {metrics[0]: 0.55, metrics[1]: 0.2, OBJECTIVE: 0.55})
    fresh.suggest("t4")
    assert len(study.trials) == 5 and study.trials[3].values == [0.55, 0.2]
