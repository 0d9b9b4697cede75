"""Evaluation predicts one patient at a time under every condition and policy; its numbers are
the ones the per-condition path (each condition over the cohort, one network pass each) gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.trainables.conftest import tiny_trial


def test_evaluation_by_patient_gives_the_per_condition_numbers(cohorts: dict[str, Path], tmp_path: Path) -> None:
    from seqablate.config import TrialConfig
    from seqablate.data.cache import preprocess_cohort
    from seqablate.evaluation.cohort import original_mask
    from seqablate.evaluation.evaluate import evaluate_model, has_input, policies, score_condition
    from seqablate.evaluation.norm import estimate_norm_stats, norm_subsets
    from seqablate.models import build_model
    from seqablate.models.inference import Predictor

    raw = tiny_trial(cohorts["stanford"])
    raw["model"]["backbone"] = "tiny"
    raw["eval"].update({"each_sequence": True, "norm_stats": "per_subset", "norm_batches": 2, "norm_batch_size": 4,
                        "threshold": 0.3})
    cfg = TrialConfig.model_validate(raw)
    test = preprocess_cohort(cohorts["stanford"], cfg.data, progress=False, workers=1, cache_dir=tmp_path / "c")
    oslo = preprocess_cohort(cohorts["oslo"], cfg.data, progress=False, workers=1, cache_dir=tmp_path / "c")
    model = build_model(cfg.model, seed=0).eval()
    stats, _ = estimate_norm_stats(model, test, cfg, norm_subsets(cfg))
    got = evaluate_model(model, cfg, test, externals={"oslo": oslo}, norm_stats=stats, progress=False)

    # The reference: the per-condition path, whole network per condition, no shared stem.
    from seqablate.evaluation.evaluate import evaluation_conditions
    from seqablate.metric_names import prefix

    want: dict[str, float] = {}
    names = []
    scores: dict[str, np.ndarray] = {}
    for policy, deployed in policies(model, cfg, stats):
        pred = Predictor(deployed, share_stem=False)
        for cname, censored in evaluation_conditions(cfg):
            keep = [p for p in test if has_input(p, censored)]
            name = prefix("test", cname, policy=policy)
            r = score_condition(name, [pred.predict_volume(p, censored) for p in keep], [original_mask(p) for p in keep],
                                [tuple(p.spacing) for p in keep], [p.patient_id for p in keep], cfg)
            want.update(r.metrics)
            names.append(name)
            scores[name] = np.sort(r.lesions["score"].to_numpy())
        name = prefix("external", cohort="oslo", policy=policy)
        r = score_condition(name, [pred.predict_volume(p) for p in oslo], [original_mask(p) for p in oslo],
                            [tuple(p.spacing) for p in oslo], [p.patient_id for p in oslo], cfg)
        want.update(r.metrics)
        names.append(name)
    assert [r.name for r in got.results] == names
    assert len(names) == 2 * (1 + len(cfg.data.sequences) + 1)
    have = got.metrics
    assert want.get("test.full.n_pred", 0) > 0  # lesions were predicted, so the numbers can disagree
    for key, value in want.items():
        if key.endswith(".n_skipped"):
            continue
        assert have[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
    # every predicted lesion's score (its mean probability) agrees: the volumes are the same up
    # to float32 summation order (a voxel at the threshold may join or leave a component: ~1e-5)
    for r in got.results:
        if r.name in scores:
            assert len(scores[r.name]) > 0
            np.testing.assert_allclose(np.sort(r.lesions["score"].to_numpy()), scores[r.name], atol=1e-4, err_msg=r.name)
    # each oslo patient (none has t1_gre_post, some lack more) was scored with its own subset's
    # statistics under the model's policy, the training ones under the other
    from seqablate.models.norm_stats import subset_key

    seqs = tuple(cfg.data.sequences)
    own = {p.patient_id: subset_key(np.asarray(p.present).tolist(), seqs) for p in oslo}
    assert len(set(own.values())) > 1
    by_name = {r.name: r for r in got.results}
    for name, expect in (("external.oslo", own), ("external_stored.oslo", dict.fromkeys(own, "stored"))):
        r = by_name[name]
        assert dict(zip(r.patients["patient"].astype(str), r.patients["norm_stats"], strict=True)) == expect


def test_shapley_metrics_from_the_subset_conditions_under_each_policy() -> None:
    """Three sequences scored on all 7 subsets under the run's policy (named as the evaluation
    names them: full, censor_<seq>, subset_<...>), the other policy incomplete: values for the
    first only, equal to the hand-computed game of tests/metrics/test_metrics_shapley.py."""
    from seqablate import metric_names as mn
    from seqablate.evaluation.evaluate import shapley_metrics

    seqs = ("a", "b", "c")
    v = {"subset_a": 0.1, "subset_b": 0.2, "subset_c": 0.0, "censor_c": 0.5, "censor_b": 0.3, "censor_a": 0.2,
         "full": 0.6}
    metrics = {f"test.{c}.mAP": x for c, x in v.items()}
    metrics |= {"test.full.mAP_lo": 0.0, "test.full.tp_dice": 0.9, "external.oslo.mAP": 0.9}
    metrics |= {f"test_stored.{c}.mAP": x for c, x in v.items() if c != "subset_c"}
    got = shapley_metrics(metrics, seqs)
    assert got == pytest.approx({mn.shapley_key("a"): 1.6 / 6, mn.shapley_key("b"): 1.6 / 6,
                                 mn.shapley_key("c"): 0.4 / 6})
    assert shapley_metrics(metrics, ("a",)) == {}
