"""Figures: overlay outline colours, input checks; the full overlay path (slow)."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from seqablate.analysis.plots import plot_overlay, plot_pr_curves


def _has_colour(img: np.ndarray, rgb: tuple[float, float, float], tol: float = 0.12) -> bool:
    return bool((np.abs(img[..., :3] - np.asarray(rgb)) < tol).all(axis=-1).any())


def test_overlay_draws_truth_green_and_prediction_red(tmp_path):
    bg = np.zeros((32, 32), dtype=np.float32)
    truth = np.zeros((32, 32), bool)
    truth[8:14, 8:14] = True
    pred = np.zeros((32, 32), bool)
    pred[18:26, 18:26] = True
    path = plot_overlay(bg, truth, {"model": pred}, tmp_path / "o.png", title="t")
    img = mpimg.imread(path)
    assert _has_colour(img, (0.0, 224 / 255, 0.0))  # truth outline
    assert _has_colour(img, (1.0, 32 / 255, 32 / 255))  # prediction outline
    # Without any prediction there is no red at all.
    path2 = plot_overlay(bg, truth, {"model": np.zeros_like(pred)}, tmp_path / "o2.png", title="t")
    assert not _has_colour(mpimg.imread(path2), (1.0, 32 / 255, 32 / 255))


def test_plot_input_errors(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        plot_overlay(np.zeros((4, 4)), np.zeros((4, 5), bool), {}, tmp_path / "x.png", title="t")
    with pytest.raises(ValueError, match="recall"):
        plot_pr_curves(pd.DataFrame({"condition": ["a"], "precision": [1.0]}), tmp_path / "p.png", title="t")
    assert not list(tmp_path.iterdir())  # nothing half-written


def _overlay_main(root):
    """Log an (untrained) compact model with its config to a study; draw the overlays."""
    from seqablate import tracking
    from seqablate.analysis.figures import best_runs
    from seqablate.analysis.overlays import overlay_figures
    from seqablate.analysis.study import load_study
    from seqablate.config import TrialConfig, with_overrides
    from seqablate.data.phantom import make_phantom_cohort
    from seqablate.models import build_model
    from seqablate.models.deployed import DeployedModel

    cohort = make_phantom_cohort(root / "cohort", patients=4, small=True, shape=(32, 32, 12))
    cfg = with_overrides(TrialConfig(), {
        "data.cohort": str(cohort), "data.image_size": 32, "model.backbone": "compact",
        "data.val_patients": 1, "data.slices": 3,
    })
    deployed = DeployedModel(build_model(cfg.model, seed=0), config=cfg.model_dump(mode="json"))
    with tracking.study_run("ov", storage=str(root / "study")) as st:
        with tracking.trial_run(st.ref, cfg, overrides={"model.integration": "input"}) as log:
            log.log_model(deployed)
            log.log_metrics({"test.full.mAP": 0.5})
    data = load_study(str(root / "study"))
    return overlay_figures(data, list(best_runs(data.runs).items()), root / "figs")


@pytest.mark.slow
def test_overlays_from_logged_model_and_cohort(tmp_path, monkeypatch):
    """The figure shows the chosen patient's truth at its most lesioned axial slice, read here
    from the cohort's own seg.nii.gz (not through the cache), and one boolean panel per model
    and condition: all sequences, and the study's censored sequence censored."""
    import re

    import nibabel as nib

    from seqablate.analysis import plots

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen: dict = {}
    real = plots.plot_overlay

    def spy(background, truth, predictions, path, *, title):
        seen.update(background=background, truth=truth, predictions=dict(predictions), title=title)
        return real(background, truth, predictions, path, title=title)

    monkeypatch.setattr(plots, "plot_overlay", spy)
    figs, notes = _overlay_main(tmp_path)
    assert notes == []
    assert len(figs) == 1 and figs[0].path.is_file()
    assert "largest lesion volume" in figs[0].caption
    pid, z = re.search(r"patient (\S+), axial slice (\d+)", seen["title"]).groups()
    seg = np.asarray(nib.load(tmp_path / "cohort" / pid / "seg.nii.gz").dataobj) > 0
    assert int(z) == int(np.argmax(seg.sum(axis=(0, 1))))
    assert np.array_equal(seen["truth"], seg[:, :, int(z)])
    assert seen["background"].shape == seg.shape[:2]
    labels = sorted(k.split(": ", 1)[1] for k in seen["predictions"])
    assert labels == ["all sequences", "t1_gre_post censored"]
    for mask in seen["predictions"].values():
        assert mask.dtype == bool and mask.shape == seg.shape[:2]
