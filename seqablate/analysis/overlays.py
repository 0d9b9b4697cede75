"""Figure-1-style overlays: the best models' predictions and the truth on one test slice.

For each best model (by test mAP, without and with dropout) the ``model/`` artifact is
loaded (:func:`seqablate.evaluation.model_ref.load_model`); its cohort (``data.cohort`` of
the logged config) is read through the data layer's cache, the trial's own split picks the
test patients, and the test patient with the largest lesion volume is predicted in 3D through
the one inference path (:class:`seqablate.models.inference.Predictor`, with the model's own
normalisation statistics policy) with all sequences and with ``t1_gre_post`` censored. The axial slice with the most lesion is drawn, truth and prediction
outlined in two colours. Anything unavailable (no model artifact, cohort moved) becomes a note
in the report instead of an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqablate.analysis.document import Figure
from seqablate.analysis.runs import Run
from seqablate.analysis.study import StudyRuns

#: Background sequence preference (a post-contrast image shows enhancing lesions best).
BACKGROUND_PREFERENCE = ("t1_gre_post", "t1_fse_post", "t1_post", "t1_subtraction")


def _load(data: StudyRuns, run: Run) -> tuple[Any, Any]:
    from seqablate.evaluation.model_ref import load_model

    return load_model(run.run_id, tracking_uri=data.tracking_uri)


def _test_patient(cfg: Any) -> Any:
    """The trial's test patient with the largest lesion volume (cached, original split)."""
    from seqablate.evaluation.cohort import load_cached, plan_split, select

    patients = load_cached(cfg.data, progress=False)
    split = plan_split(cfg, patients)
    pool = select(patients, split.test or split.val)
    if not pool:
        raise ValueError(f"{cfg.data.cohort}: the trial's split has no test patient")
    return max(pool, key=lambda p: int(np.asarray(p.mask).sum()))


def _background(patient: Any) -> np.ndarray:
    """float32[X, Y, Z]: the preferred present sequence on the original grid."""
    from seqablate.data.cache import to_original_grid

    seqs = list(patient.sequences)
    present = [s for s, ok in zip(seqs, np.asarray(patient.present).tolist(), strict=True) if ok]
    name = next((s for s in BACKGROUND_PREFERENCE if s in present), present[0])
    return to_original_grid(np.asarray(patient.image[seqs.index(name)], dtype=np.float32), patient)


def overlay_figures(
    data: StudyRuns, best: Sequence[tuple[str, Run]], figdir: Path, censored: str | None = None,
) -> tuple[list[Figure], list[str]]:
    """One overlay figure for the best models (one panel per model x condition: all sequences,
    and ``censored`` censored; default: the study's), plus notes."""
    from tqdm.auto import tqdm

    from seqablate.analysis.plots import plot_overlay
    from seqablate.analysis.runs import study_censored
    from seqablate.evaluation.cohort import original_mask
    from seqablate.models.inference import Predictor

    censored = censored or study_censored(data.runs)
    notes: list[str] = []
    panels: dict[str, np.ndarray] = {}
    patient = truth = background = None
    cohort = None
    for label, run in tqdm(best, desc="overlays", leave=False):
        try:
            model, cfg = _load(data, run)
            if patient is None:
                patient = _test_patient(cfg)
                truth = original_mask(patient)
                background = _background(patient)
                cohort = cfg.data.cohort
            elif cfg.data.cohort != cohort:
                notes.append(f"{run.name}: trained on another cohort ({cfg.data.cohort}); not overlaid")
                continue
            conditions: list[tuple[str, tuple[str, ...]]] = [("all sequences", ())]
            if censored in cfg.data.sequences and len(cfg.data.sequences) > 1:
                conditions.append((f"{censored} censored", (censored,)))
            predictor = Predictor(model, batch_size=cfg.eval.batch_size, amp=cfg.train.amp)
            for cname, censor in conditions:
                prob = predictor.predict_volume(patient, censor)
                panels[f"{label}: {cname}"] = prob >= cfg.eval.threshold
        except Exception as err:  # noqa: BLE001 - a report without overlays beats no report
            notes.append(f"{run.name}: overlay not drawn ({type(err).__name__}: {err})")
    if not panels or truth is None:
        return [], notes
    z = int(np.argmax(truth.sum(axis=(0, 1))))  # axial slice with the most lesion
    path = plot_overlay(
        background[:, :, z], truth[:, :, z].astype(bool), {k: v[:, :, z] for k, v in panels.items()},
        figdir / "overlays.png", title=f"patient {patient.patient_id}, axial slice {z}",
    )
    caption = (
        f"Test patient {patient.patient_id} (largest lesion volume of the split), axial slice {z}: "
        "truth outlined green, prediction (probability >= threshold) red."
    )
    return [Figure(path, caption)], notes
