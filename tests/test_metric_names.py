"""Metric names round trip: what evaluation and saliency write goes through a real MLflow store
and the analysis reads each name back as the split, condition, cohort and policy it was written
with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seqablate import metric_names as mn
from seqablate import tracking
from seqablate.analysis.runs import logged_conditions, runs_from_frame
from seqablate.config import TrialConfig
from seqablate.evaluation.evaluate import evaluation_conditions, score_condition
from seqablate.saliency import SaliencyAccumulator, SaliencyStep
from seqablate.sequences import PAPER_SEQUENCES


def _one_patient() -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[float, float, float]], list[str]]:
    """Two single-voxel truth lesions; a prediction on the first (p .9) and a FP (p .6)."""
    truth = np.zeros((4, 16, 16), np.uint8)
    truth[1, 2, 2] = truth[1, 10, 10] = 1
    prob = np.zeros((4, 16, 16))
    prob[1, 2, 2], prob[3, 14, 14] = 0.9, 0.6
    return [prob], [truth], [(1.0, 1.0, 1.0)], ["p1"]


def test_condition_names_are_mlflow_safe_and_read_back_as_their_sequences():
    cfg = TrialConfig(eval={"each_sequence": True, "all_subsets": True})
    seqs = tuple(cfg.data.sequences)
    conds = evaluation_conditions(cfg)
    assert len(conds) == 1 + 4 + (2**4 - 2)  # full, each censored, every proper subset
    for name, censored in conds:
        assert "+" not in name
        kept = tuple(s for s in seqs if s not in censored)
        assert mn.condition_subset(name, seqs) == kept, name
    assert mn.subset_condition(["t1_gre_post", "flair"]) == "subset_t1_gre_post-flair"
    assert mn.condition_subset("subset_t1_gre_post-flair", PAPER_SEQUENCES) == ("t1_gre_post", "flair")
    with pytest.raises(ValueError, match="at least one"):
        mn.subset_condition([])


def test_written_names_survive_mlflow_and_parse_back(tmp_path: Path):
    cfg = TrialConfig(eval={"each_sequence": True, "all_subsets": True, "bootstrap": 20})
    seqs = tuple(cfg.data.sequences)
    volumes = _one_patient()
    written: dict[str, dict] = {}  # metric name -> what it was written as
    metrics: dict[str, float] = {}
    for policy in (None, "stored"):
        for cond, _ in evaluation_conditions(cfg):
            res = score_condition(mn.prefix("test", cond, policy=policy), *volumes, cfg)
            for k in res.metrics:
                written[k] = {"split": "test", "condition": cond, "cohort": None, "policy": policy}
            metrics.update(res.metrics)
        res = score_condition(mn.prefix("external", cohort="oslo", policy=policy), *volumes, cfg)
        for k in res.metrics:
            written[k] = {"split": "external", "condition": "full", "cohort": "oslo", "policy": policy}
        metrics.update(res.metrics)
    # The hand-computed values of one condition: 1 of 2 lesions found, ranking TP then FP.
    assert metrics["test.full.max_sensitivity"] == 0.5 and metrics["test.full.n_pred"] == 2
    assert metrics["test.full.mAP"] == pytest.approx(0.5)  # P=1 at R=1/2, then no new recall
    acc = SaliencyAccumulator(list(seqs), slices=cfg.data.slices)
    acc.update(SaliencyStep(np.arange(1.0, 5.0), np.ones(cfg.data.slices), 0.1), step=1)
    saliency = acc.to_metrics()

    with tracking.study_run("names", storage=str(tmp_path / "study")) as study:
        with tracking.trial_run(study.ref, cfg, run_name="t") as log:
            log.log_metrics({**metrics, **saliency}, step=1)
    (run,) = runs_from_frame(tracking.list_trials(str(tmp_path / "study")))

    assert set(metrics) | set(saliency) <= set(run.metrics)
    for key, value in metrics.items():
        assert run.metrics[key] == pytest.approx(value), key
        parsed = mn.parse_metric(key)
        want = written[key]
        assert (parsed.split, parsed.condition, parsed.cohort, parsed.policy) == (
            want["split"], want["condition"], want["cohort"], want["policy"]), key
        assert parsed.key == key
        assert parsed.metric + (parsed.bound or "") in {*mn.EVAL_METRICS, "mAP_lo", "mAP_hi"}, key
    for key in saliency:
        assert mn.parse_metric(key) is None and key.startswith(mn.SALIENCY + "."), key
    assert run.metrics[mn.saliency_key("sequence", "flair", cumulative=True)] == 4.0
    logged = logged_conditions([run])
    assert logged[0] == "full" and sorted(logged) == sorted(c for c, _ in evaluation_conditions(cfg))


def test_validation_names_parse_back():
    for cond in ("full", "censor_t1_gre_post", "subset_t1_fse_pre-flair"):
        for metric in mn.VAL_METRICS:
            key = mn.val_key(cond, metric)
            assert key == f"val.{cond}.{metric}"
            parsed = mn.parse_val_metric(key)
            assert (parsed.condition, parsed.metric) == (cond, metric) and parsed.key == key
            assert mn.parse_metric(key) is None  # not an evaluation name
    for other in (mn.VAL_OBJECTIVE, mn.VAL_BEST_OBJECTIVE, mn.VAL_MAP, mn.VAL_BEST, mn.VAL_BEST_STEP, "test.full.mAP"):
        assert mn.parse_val_metric(other) is None, other
    with pytest.raises(ValueError, match="not a validation condition"):
        mn.val_key("censor t1_gre_post")
