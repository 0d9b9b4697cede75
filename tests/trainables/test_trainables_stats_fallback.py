"""Which BatchNorm statistics scored each patient is recorded, and a fallback is flagged.

A model asked for per-subset statistics that were never estimated for a patient's subset
(no training patient had it) is scored with the training statistics; the patient table says
so per patient and :func:`fallbacks` lists them (``seqablate evaluate`` prints a warning).
"""

from __future__ import annotations

import pandas as pd


def test_a_subset_without_estimated_statistics_is_flagged_per_patient() -> None:
    from seqablate.config import TrialConfig
    from seqablate.evaluation.evaluate import ConditionResult, EvalReport, _record_stats, fallbacks
    from seqablate.models import build_model
    from seqablate.models.deployed import DeployedModel
    from seqablate.models.norm_stats import subset_key

    cfg = TrialConfig.model_validate({"model": {"backbone": "tiny", "integration": "input"}})
    seqs = tuple(cfg.data.sequences)
    net = build_model(cfg.model, seed=0)
    full = subset_key([True] * len(seqs), seqs)
    deployed = DeployedModel(net, norm_stats={full: {}}, policy="per_subset")
    missing_one = [True] * (len(seqs) - 1) + [False]
    assert deployed.stats_key([True] * len(seqs)) == full
    assert deployed.stats_key(missing_one) == "stored"  # never estimated: the training statistics
    r = ConditionResult("test.full", {}, pd.DataFrame(), pd.DataFrame({"patient": ["p0", "p1"]}), pd.DataFrame(),
                        pd.DataFrame())
    _record_stats(r, {"p0": full, "p1": "stored"}, deployed)
    assert r.patients["norm_stats"].tolist() == [full, "stored"]
    assert r.patients["norm_stats_fallback"].tolist() == [False, True]
    assert fallbacks(EvalReport([r])) == {"test.full": ["p1"]}
    # configured "stored": the training statistics are the choice, not a fallback
    stored = DeployedModel(net, norm_stats={full: {}}, policy="stored")
    r2 = ConditionResult("test.full", {}, pd.DataFrame(), pd.DataFrame({"patient": ["p1"]}), pd.DataFrame(),
                         pd.DataFrame())
    _record_stats(r2, {"p1": "stored"}, stored)
    assert r2.patients["norm_stats_fallback"].tolist() == [False] and fallbacks(EvalReport([r2])) == {}
