"""The trial's objective in training: checkpoint selection by it, validation under several
conditions logged to MLflow, per-sequence dropout in the loop, and predict's refusal of a
sequence the model never saw missing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from seqablate import metric_names as mn
from seqablate.config import TrialConfig, parse
from seqablate.trainables.loop import Progress, keep_best

from .conftest import tiny_trial

FULL, CENSOR = "full", "censor_t1_gre_post"


class _Net:
    """Stands in for the trainer: ``bare`` holds weights that say which step they are from."""

    def __init__(self) -> None:
        self.bare = torch.nn.Linear(1, 1)

    def at(self, step: int) -> _Net:
        with torch.no_grad():
            self.bare.weight.fill_(float(step))
        return self


# Per-condition validation mAPs where the full protocol and the worst condition disagree:
# full is best at step 4 (0.70), the worst condition at step 6 (min 0.30); step 8 has no
# censored score (NaN), so its objective can never be a best under 'worst'.
VALIDATIONS = [(2, 0.50, 0.10), (4, 0.70, 0.05), (6, 0.40, 0.30), (8, 0.65, math.nan)]


@pytest.mark.parametrize(("objective", "best_step", "best"), [
    ("worst", 6, 0.30),  # min(0.40, 0.30), by hand
    (FULL, 4, 0.70),
    ({FULL: 0.3, CENSOR: 0.7}, 6, 0.33),  # 0.3 * 0.40 + 0.7 * 0.30 beats 0.245 at step 4
])
def test_keep_best_selects_on_the_objective(objective: object, best_step: int, best: float) -> None:
    cfg = parse(TrialConfig, {"train": {"val_conditions": [FULL, CENSOR], "objective": objective}})
    progress, net = Progress(), _Net()
    by_hand = {
        "worst": lambda f, c: min(f, c) if not math.isnan(c) else math.nan,
        FULL: lambda f, c: f,
    }.get(objective if isinstance(objective, str) else "", lambda f, c: 0.3 * f + 0.7 * c)
    for step, full, censored in VALIDATIONS:
        score = by_hand(full, censored)
        keep_best(progress, net.at(step), {mn.val_key(FULL): full, mn.val_key(CENSOR): censored,
                                           mn.VAL_OBJECTIVE: score, mn.VAL_MAP: score}, step, cfg)
    assert progress.state.best_step == best_step
    assert progress.state.best_metric == pytest.approx(best)
    assert float(progress.best_state["weight"]) == best_step  # the weights of that step


def test_fit_trial_validates_every_condition_and_logs_the_objective(cohorts: dict[str, Path], tmp_path: Path) -> None:
    from seqablate import tracking
    from seqablate.analysis.runs import runs_from_frame
    from seqablate.trainables.loop import fit_trial

    raw = tiny_trial(cohorts["stanford"], steps=4, saliency_every=0, dropout_p={"t1_gre_post": 0.5},
                     objective="full=0.7,censor_t1_gre_post=0.3")
    raw["model"]["backbone"] = "tiny"
    raw["eval"].update(norm_stats="per_subset", norm_batches=2, norm_batch_size=4)
    cfg = parse(TrialConfig, raw)
    assert cfg.train.val_conditions == [FULL, CENSOR]
    with tracking.study_run("objective", storage=str(tmp_path / "study")) as study:
        with tracking.trial_run(study.ref, cfg, run_name="t") as log:
            res = fit_trial(cfg, storage=tmp_path / "ckpt", cpus=1, use_gpu=False, evaluate=False,
                            tracking={"tracking_uri": study.ref.tracking_uri, "run_id": log.run_id})
    reports = [h for h in res.history if mn.VAL_OBJECTIVE in h]
    assert [h["step"] for h in reports] == [2, 4]
    best = -1.0
    for h in reports:
        full, censored = h[mn.val_key(FULL)], h[mn.val_key(CENSOR)]
        assert 0.0 <= full <= 1.0 and 0.0 <= censored <= 1.0
        assert h[mn.VAL_OBJECTIVE] == pytest.approx(0.7 * full + 0.3 * censored)  # the profile, by hand
        assert h[mn.VAL_MAP] == h[mn.VAL_OBJECTIVE]  # the first name of the same number
        best = max(best, h[mn.VAL_OBJECTIVE])
        assert h[mn.VAL_BEST_OBJECTIVE] == h[mn.VAL_BEST] == pytest.approx(best)  # Tune's metric
        assert "val.max_sensitivity" not in h  # no single selection condition for a profile
    assert res.state.best_metric == pytest.approx(best)
    (run,) = runs_from_frame(tracking.list_trials(str(tmp_path / "study")))
    for key in (mn.val_key(FULL), mn.val_key(CENSOR), mn.VAL_OBJECTIVE, mn.VAL_BEST_OBJECTIVE, mn.VAL_BEST):
        assert run.metrics[key] == pytest.approx(reports[-1][key]), key
    history = tracking.client(study.ref.tracking_uri).get_metric_history(run.run_id, mn.VAL_OBJECTIVE)
    assert sorted((m.step, m.value) for m in history) == [(h["step"], pytest.approx(h[mn.VAL_OBJECTIVE]))
                                                          for h in reports]
    assert run.params["train.objective"] == "full=0.7,censor_t1_gre_post=0.3"
    assert run.params["train.val_conditions"] == "full,censor_t1_gre_post"
    assert run.params["train.dropout_p"] == run.tags["dropout"] == "t1_gre_post=0.5"
    assert run.dropout_p == {"t1_gre_post": 0.5} and run.has_dropout
    assert run.tags["objective.definition"].startswith("deployment profile: 0.7 x mAP(full) + 0.3 x mAP(")


def test_a_condition_no_validation_patient_can_be_scored_under_is_refused_before_training(
        cohorts: dict[str, Path], tmp_path: Path) -> None:
    from seqablate.trainables.loop import fit_trial

    # oslo has no t1_gre_post at all: keeping only it leaves every validation patient without input.
    raw = tiny_trial(cohorts["oslo"], steps=2, val_conditions=["full", "subset_t1_gre_post"])
    raw["data"]["test_fraction"] = 0.0
    with pytest.raises(ValueError, match=r"train.val_conditions: under 'subset_t1_gre_post' no validation patient"):
        fit_trial(parse(TrialConfig, raw), storage=tmp_path / "c", cpus=1, use_gpu=False, evaluate=False)
    assert not list((tmp_path / "c").glob("checkpoint_*"))


@pytest.mark.parametrize(("train", "missing", "unseen"), [
    ({"dropout_p": 0.0}, ("t1_gre_post", "flair"), ("t1_gre_post", "flair")),
    ({"dropout_p": 0.25}, ("t1_gre_post",), ()),
    ({"dropout_p": 0.25, "dropout_mode": "uniform"}, ("t1_gre_post", "flair"), ()),
    ({"dropout_p": {"t1_gre_post": 0.4}}, ("t1_gre_post",), ()),
    ({"dropout_p": {"t1_gre_post": 0.4}}, ("flair",), ("flair",)),
    ({"dropout_p": {"t1_gre_post": 0.4, "flair": 0.1}}, ("t1_gre_post", "flair"), ()),  # seen together, rarely
    ({"dropout_p": {"t1_gre_post": 0.4, "flair": 0.0}}, ("t1_gre_post", "flair"), ("flair",)),
])
def test_predict_refuses_only_sequences_never_absent_in_training(train: dict, missing: tuple, unseen: tuple) -> None:
    from seqablate.trainables.predict import PredictRefused, _refuse_unseen, never_absent

    cfg = parse(TrialConfig, {"train": train})
    assert never_absent(cfg, missing) == unseen
    known = tuple(cfg.data.sequences)
    if not unseen:
        _refuse_unseen(cfg, known, missing, "p0")
        return
    with pytest.raises(PredictRefused) as info:
        _refuse_unseen(cfg, known, missing, "p0")
    text = str(info.value)
    assert str(list(unseen)) in text and "--force" in text
    if isinstance(train["dropout_p"], dict):
        assert "t1_gre_post=0.4" in text and "never saw an input without" in text
    else:
        assert "trained without sequence dropout" in text


@pytest.mark.slow
def test_readme_robustness_study(cohorts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The README's deployment-profile study, as written (smoke sizes, this machine's cohort),
    through the CLI, Ray Tune and a real MLflow store: every trial validates under both
    conditions, logs the profile's value and selects by its best, which Tune ranked."""
    import shlex

    import ray

    from seqablate import tracking
    from seqablate.analysis.runs import runs_from_frame
    from seqablate.cli import main
    from tests.test_readme import _prepare, readme_commands

    (cmd,) = [c.text for c in readme_commands() if "--objective" in c.text]
    cmd = _prepare(cmd, {"tmp": str(tmp_path)}).replace("cohorts/stanford", str(cohorts["stanford"]))
    assert "--smoke" in cmd and "--objective full=0.7,censor_t1_gre_post=0.3" in cmd
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        code = main(shlex.split(cmd)[1:])
    finally:
        ray.shutdown()
    out = capsys.readouterr()
    assert code == 0, out.out[-3000:] + out.err[-3000:]
    runs = runs_from_frame(tracking.list_trials(str(tmp_path / "runs/robust")))
    assert sorted(r.name for r in runs) == ["input-p0.25-seed0", "input-seed0"]
    c = tracking.client(tracking.default_tracking_uri(str(tmp_path / "runs/robust"), None))
    for r in runs:
        assert r.status == "FINISHED" and r.params["train.objective"] == "full=0.7,censor_t1_gre_post=0.3"
        full, censored = r.metrics[mn.val_key(FULL)], r.metrics[mn.val_key(CENSOR)]
        assert r.metrics[mn.VAL_OBJECTIVE] == pytest.approx(0.7 * full + 0.3 * censored)
        assert r.tags["objective.definition"].startswith("deployment profile: 0.7 x mAP(full)")
        # Tune's metric is the best objective of the run's validations, and the selected step's.
        values = {m.step: m.value for m in c.get_metric_history(r.run_id, mn.VAL_OBJECTIVE)}
        assert r.metrics[mn.VAL_BEST_OBJECTIVE] == pytest.approx(max(values.values()))
        assert values[int(r.metrics[mn.VAL_BEST_STEP])] == pytest.approx(max(values.values()))
        assert "test.full.mAP" in r.metrics  # evaluated as every trial is
