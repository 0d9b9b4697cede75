"""fit_trial end to end on a tiny phantom: loss goes down, checkpoints, resume, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqablate.config import TrialConfig, parse
from seqablate.evaluation.checkpoint import load_best_model, read_state
from seqablate.trainables.loop import FaultPlan, InjectedFailure, fit_trial

from .conftest import tiny_trial


def test_fit_checkpoints_and_evaluates(cohorts: dict[str, Path], tmp_path: Path) -> None:
    raw = tiny_trial(cohorts["stanford"], steps=8, lr=3e-3)
    raw["eval"]["external"] = {"oslo": str(cohorts["oslo"])}
    cfg = parse(TrialConfig, raw)
    res = fit_trial(cfg, storage=tmp_path / "run", cpus=1, use_gpu=False)
    reports = [h for h in res.history if "evaluated" not in h]
    assert [h["step"] for h in reports] == [2, 4, 6, 8]
    # The mean training loss falls (BCE from ~0.7 at random init towards the lesion prior).
    assert reports[-1]["train.loss"] < reports[0]["train.loss"]
    assert all("val.mAP" in h and "saliency.cumulative.sequence.flair" in h for h in reports)
    # Cumulative saliency only grows.
    cum = [h["saliency.cumulative.sequence.t1_gre_post"] for h in reports]
    assert cum == sorted(cum) and cum[0] > 0
    ckpt = res.checkpoint
    files = {p.name for p in ckpt.iterdir()}
    assert {"model.pt", "optimizer.pt", "state.json", "config.yaml", "norm_stats.pt"} <= files
    assert read_state(ckpt).step == 8 and res.state.best_step in (2, 4, 6, 8)
    # Best weights are stored once: a separate file only when they are not the current ones.
    assert ("best_model.pt" in files) == (res.state.best_step != 8)
    assert [p.name for p in (tmp_path / "run").iterdir()] == [ckpt.name]  # only the latest is kept
    # Test metrics for each condition (full, t1_gre_post censored) and the external cohort.
    # Each condition's numbers agree with its own counts: max sensitivity = TP / truth lesions,
    # and AP (precision <= 1 over recall up to max sensitivity) and mean FROC sensitivity
    # (sensitivities up to max sensitivity) cannot exceed it.
    m = res.metrics
    for cond in ("test.full", "test.censor_t1_gre_post", "external.oslo"):
        assert m[f"{cond}.n_truth"] > 0 and m[f"{cond}.n_patients"] > 0, cond
        assert m[f"{cond}.max_sensitivity"] == pytest.approx(m[f"{cond}.n_tp"] / m[f"{cond}.n_truth"]), cond
        assert 0.0 <= m[f"{cond}.mAP"] <= m[f"{cond}.max_sensitivity"] + 1e-12, cond
        assert 0.0 <= m[f"{cond}.froc_mean"] <= m[f"{cond}.max_sensitivity"] + 1e-12, cond
    assert m["test.full.mAP_lo"] <= m["test.full.mAP"] <= m["test.full.mAP_hi"] + 1e-9
    assert res.metrics["external.oslo.n_skipped"] == 0
    # The best weights load back into a model of the logged config.
    model, cfg2 = load_best_model(ckpt)
    assert cfg2.model == cfg.model and not model.training
    best = torch.load(ckpt / ("best_model.pt" if "best_model.pt" in files else "model.pt"), weights_only=True)
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


def test_resume_continues_at_saved_step(cohorts: dict[str, Path], tmp_path: Path) -> None:
    cfg = parse(TrialConfig, tiny_trial(cohorts["stanford"], steps=6, saliency_every=0))
    store = tmp_path / "run"
    with pytest.raises(InjectedFailure):
        fit_trial(cfg, storage=store, cpus=1, use_gpu=False, evaluate=False, faults=FaultPlan(fail_at_step=5))
    ckpts = sorted(store.glob("checkpoint_*"))
    assert ckpts and read_state(ckpts[-1]).step == 4  # the failure at step 5 came after step 4's
    saved = json.loads((ckpts[-1] / "state.json").read_text())
    res = fit_trial(cfg, storage=store, cpus=1, use_gpu=False, evaluate=False)
    # Only steps after the checkpoint ran: one report, at step 6 (not 2, 4, 6 again).
    assert [h["step"] for h in res.history] == [6]
    assert res.state.step == 6
    # The best validation score found before the crash survives the restart.
    assert res.state.best_metric >= saved["best_metric"]
    # Nothing half-written is left in the run folder.
    assert not list(store.glob(".tmp-*"))
