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
    from seqablate.evaluation.predict import PredictRefused, _refuse_unseen, never_absent

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

    (cmd,) = [c.text for c in readme_commands() if "--objective " in c.text]
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


@pytest.mark.parametrize(("objectives", "step", "selected", "bests"), [
    # Selected on full (step 4, 0.70), where the worst condition is 0.05; the worst condition's own
    # best (0.30, step 6) is another checkpoint's.
    ([FULL, "worst"], 4, [0.70, 0.05], [0.70, 0.30]),
    # Selected on worst (step 6, 0.30), where full is 0.40; full's own best is step 4's 0.70.
    (["worst", FULL], 6, [0.30, 0.40], [0.30, 0.70]),
])
def test_keep_best_records_every_objective_at_the_selected_step(objectives: list, step: int, selected: list,
                                                                 bests: list) -> None:
    from seqablate.trainables.loop import _bests

    cfg = parse(TrialConfig, {"train": {"val_conditions": [FULL, CENSOR], "objectives": objectives}})
    assert cfg.train.objective == objectives[0]
    progress, net = Progress(), _Net()
    by_hand = {FULL: lambda f, c: f, "worst": lambda f, c: min(f, c) if not math.isnan(c) else math.nan}
    for s, full, censored in VALIDATIONS:
        values = [by_hand[o](full, censored) for o in objectives]
        keep_best(progress, net.at(s), {mn.val_key(FULL): full, mn.val_key(CENSOR): censored,
                                        mn.VAL_OBJECTIVE: values[0], mn.objective_key(1): values[0],
                                        mn.objective_key(2): values[1]}, s, cfg)
    st = progress.state
    assert st.best_step == step and float(progress.best_state["weight"]) == step
    assert st.selected == pytest.approx(selected) and st.bests == pytest.approx(bests)
    reported = _bests(st, 2)
    assert reported == pytest.approx({
        mn.VAL_BEST_OBJECTIVE: selected[0], mn.VAL_BEST: selected[0],
        "val.selected_objective.1": selected[0], "val.selected_objective.2": selected[1],
        "val.best_objective.1": bests[0], "val.best_objective.2": bests[1],
    })
    # Before any validation every searched metric is there, as 0 (Tune refuses a result without one).
    from seqablate.evaluation.checkpoint import TrainState

    assert _bests(TrainState(), 2)["val.selected_objective.2"] == 0.0
    assert set(_bests(TrainState(), 0)) == {mn.VAL_BEST_OBJECTIVE, mn.VAL_BEST}


def test_fit_trial_reports_every_objective_and_tests_the_validation_conditions(cohorts: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    from seqablate.evaluation.checkpoint import read_state
    from seqablate.trainables.loop import fit_trial

    raw = tiny_trial(cohorts["stanford"], steps=4, saliency_every=0, objectives=["full", "worst"],
                     val_conditions=[FULL, "censor_flair"])
    raw["model"]["backbone"] = "tiny"
    cfg = parse(TrialConfig, raw)
    res = fit_trial(cfg, storage=tmp_path / "ckpt", cpus=1, use_gpu=False)
    reports = [h for h in res.history if mn.VAL_OBJECTIVE in h]
    assert [h["step"] for h in reports] == [2, 4]
    for h in reports:
        full, flair = h[mn.val_key(FULL)], h[mn.val_key("censor_flair")]
        assert h[mn.objective_key(1)] == h[mn.VAL_OBJECTIVE] == full
        assert h[mn.objective_key(2)] == pytest.approx(min(full, flair))  # worst, by hand
    # The selected step is the last best of objective 1 (ties: the later); the report carries
    # every objective there, and each objective's own best.
    at = reports[0]
    for h in reports[1:]:
        if h[mn.VAL_OBJECTIVE] >= at[mn.VAL_OBJECTIVE]:
            at = h
    best_step = at["step"]
    final = res.history[-1]
    assert final["val.selected_objective.1"] == pytest.approx(at[mn.objective_key(1)])
    assert final["val.selected_objective.2"] == pytest.approx(at[mn.objective_key(2)])
    assert final["val.best_objective.2"] == pytest.approx(max(h[mn.objective_key(2)] for h in reports))
    state = read_state(res.checkpoint)
    assert state.best_step == best_step and state.selected == pytest.approx(
        [at[mn.objective_key(1)], at[mn.objective_key(2)]])
    # The validation condition censor_flair is tested although eval.each_sequence is off.
    assert {"test.full.mAP", "test.censor_t1_gre_post.mAP", "test.censor_flair.mAP"} <= set(res.metrics)


def test_evaluation_tests_the_validation_conditions_once() -> None:
    from seqablate.evaluation.evaluate import evaluation_conditions

    cfg = parse(TrialConfig, {"eval": {"each_sequence": False},
                              "train": {"val_conditions": [FULL, "censor_bravo", "subset_t1_gre_post-flair"]}})
    assert evaluation_conditions(cfg) == [
        (FULL, ()), (CENSOR, ("t1_gre_post",)),  # censor_t1_gre_post: the evaluation's own, once
        ("subset_t1_gre_post-flair", ("t1_fse_pre", "t1_fse_post"))]
    # Under all subsets the same sequences are tested under the subset's name already.
    subs = parse(TrialConfig, {"eval": {"each_sequence": False, "all_subsets": True, "censor": []},
                               "train": {"val_conditions": [FULL, "censor_flair"]}})
    names = [n for n, _ in evaluation_conditions(subs)]
    assert "censor_flair" not in names and "subset_t1_gre_post-t1_fse_pre-t1_fse_post" in names


@pytest.mark.slow
def test_readme_multi_objective_study(cohorts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The README's multi-objective search and its report, as written (smoke sizes, this
    machine's cohort), through the CLI, Ray Tune's OptunaSearch on two objectives and a real
    MLflow store: every trial reports both objectives at its selected checkpoint, the finished
    runs carry the pareto tag of the front computed independently here, and the report draws
    the front and tables it with test numbers."""
    import shlex

    import ray

    from seqablate import tracking
    from seqablate.analysis.runs import runs_from_frame
    from seqablate.cli import main
    from tests.test_readme import _prepare, readme_commands

    study_cmd, report_cmd = [c.text for c in readme_commands() if "runs/pareto" in c.text]
    study_cmd = _prepare(study_cmd, {"tmp": str(tmp_path)}).replace("cohorts/stanford", str(cohorts["stanford"]))
    assert "--smoke" in study_cmd and "--objectives full worst" in study_cmd and "--trials" not in study_cmd
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        code = main(shlex.split(study_cmd)[1:])
    finally:
        ray.shutdown()
    out = capsys.readouterr()
    assert code == 0, out.out[-3000:] + out.err[-3000:]
    assert "Pareto front on the validation objectives (1: full; 2: worst" in out.out

    runs = runs_from_frame(tracking.list_trials(str(tmp_path / "runs/pareto")))
    assert len(runs) == 4 and all(r.status == "FINISHED" for r in runs)
    uri = tracking.default_tracking_uri(str(tmp_path / "runs/pareto"), None)
    c = tracking.client(uri)
    points = []
    for r in runs:
        assert r.params["train.objectives"] == "full; worst" and r.params["train.objective"] == "full"
        assert isinstance(r.dropout_p, dict)  # hpo-per-sequence: one p per sequence
        # The selected checkpoint's values: objective 1's best, and objective 2 at that step.
        best_step = int(r.metrics[mn.VAL_BEST_STEP])
        hist = {k: {m.step: m.value for m in c.get_metric_history(r.run_id, k)}
                for k in (mn.objective_key(1), mn.objective_key(2))}
        assert r.metrics["val.selected_objective.1"] == pytest.approx(max(hist[mn.objective_key(1)].values()))
        assert r.metrics["val.selected_objective.2"] == pytest.approx(hist[mn.objective_key(2)][best_step])
        assert r.metrics["val.best_objective.2"] == pytest.approx(max(hist[mn.objective_key(2)].values()))
        # worst over the full protocol and each sequence censored alone, by hand.
        conds = r.params["train.val_conditions"].split(",")
        assert conds == [FULL] + [f"censor_{s}" for s in r.sequences]
        assert r.metrics[mn.objective_key(2)] == pytest.approx(min(r.metrics[mn.val_key(x)] for x in conds))
        assert all(f"test.{x}.mAP" in r.metrics for x in conds)  # each validation condition tested
        points.append((r.metrics["val.selected_objective.1"], r.metrics["val.selected_objective.2"]))
    # The front, independently: a run is on it unless another is >= on both and > on one.
    expected = [not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points) for p in points]
    assert [r.tags.get("pareto") for r in runs] == ["true" if e else "false" for e in expected]

    report_cmd = _prepare(report_cmd, {"tmp": str(tmp_path)})
    assert main(shlex.split(report_cmd)[1:]) == 0
    capsys.readouterr()
    report = (tmp_path / "runs/pareto/report/report.md").read_text()
    assert "## Multi-objective search: the Pareto front" in report
    assert f"Pareto front of {sum(expected)} of 4 configurations" in report
    assert "| configuration | seeds | Pareto | val 1: full | val 2: worst | test 1: full | test 2: worst |" in report
    assert (tmp_path / "runs/pareto/report" / "pareto_front.png").stat().st_size > 5000
    parent = tracking.resolve_study(str(tmp_path / "runs/pareto")).parent_run_id
    logged = tracking.list_artifacts(parent, "report", tracking_uri=uri)
    assert any(a.endswith("pareto_front.png") for a in logged), logged


def test_with_select_last_the_selected_values_are_the_latest_validations() -> None:
    from seqablate.trainables.loop import _bests

    cfg = parse(TrialConfig, {"train": {"val_conditions": [FULL, CENSOR], "objectives": [FULL, "worst"],
                                        "select": "last"}})
    progress, net = Progress(), _Net()
    for s, full, censored in VALIDATIONS[:3]:  # the last one of these: step 6 (0.40, worst 0.30)
        keep_best(progress, net.at(s), {mn.VAL_OBJECTIVE: full, mn.objective_key(1): full,
                                        mn.objective_key(2): min(full, censored)}, s, cfg)
    assert progress.state.selected == pytest.approx([0.40, 0.30])  # the evaluated (latest) weights'
    assert progress.state.best_step == 4  # Tune's metric stays the best of objective 1
    assert _bests(progress.state, 2)["val.selected_objective.1"] == pytest.approx(0.40)
