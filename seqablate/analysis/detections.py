"""Every trial's per-patient detections, read back from its logged evaluation tables.

The findings and the tables' intervals recompute pooled mAP on resampled patients, which
needs each run's ``eval/patients.csv`` and ``eval/lesions.csv`` (:mod:`seqablate.metric_names`)
rebuilt into :class:`~seqablate.metrics.detection.PatientDetection` lists.
:class:`StudyDetections` downloads each run's tables once (into a temporary folder it owns
and removes on :meth:`close`) and serves them by condition and statistics policy.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from seqablate import metric_names as mn
from seqablate.analysis.runs import ConfigGroup, Run
from seqablate.analysis.study import StudyRuns
from seqablate.vocabulary import STORED


def load_detections(data: StudyRuns, run: Run, tmp: Path) -> dict[str, list[Any]]:
    """condition prefix (e.g. ``test.full``, ``test_stored.full``, ``external.oslo``) -> the
    run's per-patient detections, from its ``eval/patients.csv`` and ``eval/lesions.csv``."""
    from seqablate import tracking
    from seqablate.metrics import detections_from_tables

    folder = tmp / run.run_id
    frames = {}
    for name in (mn.PATIENTS_CSV, mn.LESIONS_CSV):
        path = tracking.download_artifact(run.run_id, f"{mn.EVAL_DIR}/{name}", folder, tracking_uri=data.tracking_uri)
        frames[name] = pd.read_csv(path)
    patients, lesions = frames[mn.PATIENTS_CSV], frames[mn.LESIONS_CSV]
    out = {}
    for cond, p in patients.groupby("condition", sort=False):
        les = lesions[lesions["condition"] == cond] if len(lesions) else lesions
        out[str(cond)] = detections_from_tables(p, les)
    return out


def policy_prefix(run: Run, split: str, condition: str, policy: str | None, cohort: str | None = None) -> str:
    """The logged prefix of ``policy``'s metrics for this run: ``policy`` None or the run's own
    policy has none (a model without BatchNorm logs only that one)."""
    own = run.params.get("eval.norm_stats", STORED)
    return mn.prefix(split, condition, cohort=cohort, policy=None if policy in (None, own) else policy)


class StudyDetections:
    """Per-run detections, downloaded once per run; a context manager (or call :meth:`close`)."""

    def __init__(self, data: StudyRuns) -> None:
        self.data = data
        self.tmp = Path(tempfile.mkdtemp(prefix="seqablate-detections-"))
        self.cache: dict[str, dict[str, list[Any]]] = {}
        self.unreadable: list[str] = []  # runs whose evaluation tables could not be read
        self._means: dict[tuple[Any, ...], Any] = {}  # mean_interval's results (tables ask twice)

    def __enter__(self) -> StudyDetections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the downloaded tables."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def get(self, run: Run) -> dict[str, list[Any]]:
        if run.run_id not in self.cache:
            try:
                self.cache[run.run_id] = load_detections(self.data, run, self.tmp)
            except (ValueError, OSError, KeyError) as err:
                self.cache[run.run_id] = {}
                self.unreadable.append(f"{run.name} ({run.run_id[:8]}): {err}")
        return self.cache[run.run_id]

    def sets(self, group: ConfigGroup, split: str, condition: str, policy: str | None,
             cohort: str | None = None) -> list[list[Any]] | None:
        """Each usable run's detections under ``split``/``condition``/``policy`` (None: the
        run's own), in the group's run order; None when any run lacks them."""
        out = []
        for r in group.usable:
            key = policy_prefix(r, split, condition, policy, cohort)
            d = self.get(r).get(key)
            if d is None:
                return None
            out.append(d)
        return out or None



    def mean_interval(self, group: ConfigGroup, key_of: Any, *, n: int = 2000) -> Any:
        """The :class:`~seqablate.metrics.recipe.RecipeEstimate` of a configuration's mean mAP
        over its usable seeds, for the metric each run logged as ``key_of(run)`` (e.g.
        ``test_stored.full.mAP``; its prefix names the detections), on the patients every
        seed scored; None when a run lacks the detections."""

        keys = tuple(str(key_of(r)) for r in group.usable)
        memo = (group.key, keys, n)
        if memo not in self._means:
            self._means[memo] = self._mean_interval(group, keys, n)
        return self._means[memo]

    def _mean_interval(self, group: ConfigGroup, keys: tuple[str, ...], n: int) -> Any:
        from seqablate.metrics.recipe import Arm, RecipeData

        runs = []
        for r, key in zip(group.usable, keys, strict=True):
            if not key.endswith(".mAP"):
                return None
            d = self.get(r).get(key[: -len(".mAP")])
            if d is None:
                return None
            runs.append(d)
        if not runs:
            return None
        common = set.intersection(*({p.patient_id for p in x} for x in runs))
        if not common:
            return None
        arm = Arm([[p for p in x if p.patient_id in common] for x in runs], group.key)
        return RecipeData([arm], "mAP", n=n, seed=0).contrast([1.0])
