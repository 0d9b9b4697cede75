"""HPO analysis: searched params, inferred distributions, Optuna importances, report section."""

from __future__ import annotations

import optuna
import pytest

from seqablate.analysis.hpo import _distribution, pick_objective, searched_params, summarize_hpo
from seqablate.analysis.report import build_document
from seqablate.analysis.runs import Run
from seqablate.analysis.study import StudyRuns


def _runs(n=12):
    """Objective = 0.3 + 0.4 * [integration == input]; lr and dropout are noise-free and
    irrelevant, so the integration level must carry almost all importance."""
    out = []
    for i in range(n):
        integ = ("input", "mid", "end")[i % 3]
        lr = (1e-4, 1e-3, 1e-2, 3e-3)[i % 4]
        p = (0.0, 0.25)[(i // 3) % 2]
        params = {"model.integration": integ, "train.lr": str(lr), "train.dropout_p": str(p),
                  "train.seed": str(i), "train.steps": "100", "data.cohort": f"/c{i}"}
        obj = 0.3 + (0.4 if integ == "input" else 0.0)
        out.append(Run(f"id{i}", f"t{i}", "FINISHED", params, {}, {"val.best_mAP": obj}))
    out.append(Run("bad", "failed", "FAILED", {"model.integration": "end", "train.lr": "1"}, {}, {}))
    return out


def test_searched_params_and_objective():
    runs = _runs()
    # seed varies but is not searched; steps is constant; data.cohort is bookkeeping
    assert searched_params(runs) == ["model.integration", "train.dropout_p", "train.lr"]
    assert pick_objective(runs) == "val.best_mAP"
    assert pick_objective(runs, "test.full.mAP") == "val.best_mAP"  # preferred not logged
    assert pick_objective([Run("x", "x", "FINISHED")]) is None


def test_distributions_inferred():
    d = _distribution([1e-4, 1e-2, 3e-3])
    assert isinstance(d, optuna.distributions.FloatDistribution) and d.log
    assert (d.low, d.high) == (1e-4, 1e-2)
    assert not _distribution([0.0, 0.25]).log  # includes 0: linear
    assert isinstance(_distribution([1, 4]), optuna.distributions.IntDistribution)
    c = _distribution(["mid", "input"])
    assert isinstance(c, optuna.distributions.CategoricalDistribution)
    assert c.choices == ("input", "mid")


def test_importances_and_best_trials():
    s = summarize_hpo(_runs(), top=4)
    assert s is not None and s.objective == "val.best_mAP"
    assert len(s.frame) == 12  # the FAILED run is left out
    top = max(s.importances, key=s.importances.get)
    assert top == "model.integration" and s.importances[top] > 0.8
    assert sum(s.importances.values()) == pytest.approx(1.0)
    assert set(s.best["model.integration"]) == {"input"}  # the 4 input-level trials are the best 4
    assert s.best["val.best_mAP"].iloc[0] == pytest.approx(0.7)


def test_hpo_section_in_report(tmp_path):
    data = StudyRuns("search", "sqlite:///unused.db", "0" * 32, _runs(), space={"kind": "search", "name": "hpo"})
    doc = build_document(data, tmp_path / "figs", progress=False, overlays=False)
    md = doc.markdown(tmp_path)
    assert "## Hyperparameter search" in md
    assert "Optuna fANOVA parameter importances" in md
    assert "| model.integration |" in md
    assert (tmp_path / "figs" / "hpo_objective.png").is_file()
    # Without test metrics the paper tables are unavailable, with reasons, never zeros.
    assert "Not available" in md and "| 0.0 |" not in md
