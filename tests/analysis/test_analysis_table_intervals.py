"""Tables' CIs are seed-aware: the recipe interval with >= 3 seeds, the networks' one (†) below.

Every patient of a seed is identical (4 truth lesions, k_s found at score 0.9), so resampling
patients never moves a seed's mAP (patient SE 0) and the recipe interval is the classic
t interval over seeds, computed here by hand: seeds' mAP 0.50 / 0.75 / 0.75 -> mean 0.6667,
sample variance ((-1/6)^2 + 2 (1/12)^2) / 2 = 0.020833, SE = sqrt(0.020833 / 3) = 0.083333,
t(0.975, df 2) = 4.302653 -> 0.6667 +- 0.35855 = (30.8, 102.5) in points.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest


def _tables(found: int, n_patients: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    pat, les = [], []
    for i in range(n_patients):
        pat.append({"condition": "test.full", "patient": f"p{i}", "n_truth": 4, "n_pred": found, "n_tp": found,
                    "voxel_dice": 0.5})
        for j in range(found):
            les.append({"condition": "test.full", "patient": f"p{i}", "lesion": j + 1, "score": 0.9,
                        "centre_x_mm": 0.0, "centre_y_mm": 0.0, "centre_z_mm": 0.0, "volume_mm3": 1.0,
                        "distance_mm": 0.0, "matched_lesion": j + 1, "dice": 0.5, "is_tp": True})
    return pd.DataFrame(pat), pd.DataFrame(les)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seqablate import tracking
    from seqablate.config import TrialConfig, with_overrides

    root = tmp_path_factory.mktemp("table-ci")
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with tracking.study_run("ci", storage=str(root)) as st:
            for integration, founds in (("input", (2, 3, 3)), ("end", (2, 4))):
                for seed, k in enumerate(founds):
                    ov = {"model.integration": integration, "train.seed": seed, "model.norm": "group"}
                    with tracking.trial_run(st.ref, with_overrides(TrialConfig(), ov), overrides=ov) as log:
                        pat, les = _tables(k)
                        log.log_table(pat, "eval/patients.csv")
                        log.log_table(les, "eval/lesions.csv")
                        log.log_metrics({"test.full.mAP": k / 4, "test.full.mAP_lo": k / 4 - 0.1,
                                         "test.full.mAP_hi": k / 4 + 0.1}, step=1)
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return root


def test_table_cells_carry_the_recipe_interval(study: Path) -> None:
    from seqablate.analysis.detections import StudyDetections
    from seqablate.analysis.study import load_study
    from seqablate.analysis.tables import build_tables

    data = load_study(str(study))
    with StudyDetections(data) as det:
        tables = {t.id: t for t in build_tables(data.runs, intervals=det.mean_interval)}
    t = tables["I"]
    inp = t.cell("Input", "mAP")
    assert inp.main == "66.7" and inp.detail == " ± 14.4 (30.8, 102.5)"
    # 2 seeds: no recipe interval; the networks' (patients-only) CI, marked; every patient of
    # a seed identical, so it is the point: mean of 0.50 and 1.00
    end = t.cell("End", "mAP")
    assert end.main == "75.0" and end.detail.endswith("(75.0, 75.0)†")
    assert any("training recipe" in n and "†" in n for n in t.notes)
