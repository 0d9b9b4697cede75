"""A run's split read back: which patients trained, validated and tested a model or a study.

Every trial records ``split.json`` (:func:`seqablate.evaluation.cohort.split_record`) at its
run's root and inside ``model/``. ``evaluate`` reads it to leave a model's training and
validation patients out of its scores; ``cohort export-nnunet`` and ``evaluate --predictions``
read a study's, so an outside baseline trains and is scored on the same patients. Runs made
before splits were recorded get theirs recomputed from their config (the split is a
deterministic function of the config and the cohort), when their cohort is still there.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqablate import metric_names as mn
from seqablate.config import TrialConfig

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class RecordedSplit:
    """Patient ids of a run's split, the training cohort (absolute path, None when unknown),
    its sequences, and where the split was read from (for messages)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    cohort: str | None
    sequences: tuple[str, ...]
    source: str

    @classmethod
    def from_record(cls, rec: Any, source: str) -> RecordedSplit:
        """From a ``split.json`` mapping; ValueError naming ``source`` when keys are missing."""
        if not isinstance(rec, Mapping) or not all(isinstance(rec.get(k), list) for k in ("train", "val")):
            raise ValueError(f"{source}: not a seqablate split (expected lists 'train', 'val' and 'test' of patient ids)")
        return cls(tuple(map(str, rec["train"])), tuple(map(str, rec["val"])), tuple(map(str, rec.get("test") or ())),
                   rec.get("cohort"), tuple(rec.get("sequences") or ()), source)

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}

    def record(self) -> dict[str, Any]:
        """The ``split.json`` mapping (what :func:`seqablate.evaluation.cohort.split_record` writes)."""
        return {"cohort": self.cohort, "sequences": list(self.sequences), **self.as_dict()}

    @property
    def training(self) -> frozenset[str]:
        """Patients the model saw while training: train and validation (model selection)."""
        return frozenset(self.train) | frozenset(self.val)


def same_cohort(a: str | Path | None, b: str | Path | None) -> bool:
    """Whether two cohort paths are one cohort: equal once resolved and descended through
    wrapper folders (:func:`seqablate.data.layouts.cohort_root`). False when either is None."""
    from seqablate.data.layouts import cohort_root

    if not a or not b:
        return False

    def norm(p: str | Path) -> Path:
        path = Path(p).expanduser()
        return (cohort_root(path)[0] if path.is_dir() else path).resolve()

    return norm(a) == norm(b)


def read_split_file(path: str | Path) -> RecordedSplit:
    """A ``split.json`` file; ValueError naming the file when it is not one."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable split ({type(err).__name__}: {err})") from None
    return RecordedSplit.from_record(rec, str(path))


def local_split(folder: str | Path) -> RecordedSplit | None:
    """The split inside a model folder (``<folder>/split.json``), or None (a checkpoint
    folder, or a model logged before splits were recorded)."""
    p = Path(folder) / mn.SPLIT_JSON
    return read_split_file(p) if p.is_file() else None


def run_split(run_id: str, tracking_uri: str) -> RecordedSplit | None:
    """The ``split.json`` a trial run logged, or None when it logged none."""
    from seqablate import tracking

    if mn.SPLIT_JSON not in tracking.list_artifacts(run_id, tracking_uri=tracking_uri):
        return None
    with tempfile.TemporaryDirectory(prefix="seqablate-split-") as tmp:
        path = tracking.download_artifact(run_id, mn.SPLIT_JSON, tmp, tracking_uri=tracking_uri)
        split = read_split_file(path)
    return RecordedSplit(split.train, split.val, split.test, split.cohort, split.sequences, f"run {run_id}")


def recompute_split(cfg: TrialConfig, source: str) -> RecordedSplit:
    """The split of a run that recorded none, recomputed from its config over its cohort
    (the same deterministic :func:`~seqablate.evaluation.cohort.plan_split` training used).
    Raises ValueError when the config's cohort is not there any more."""
    from seqablate.evaluation.cohort import load_cached, plan_split, split_record

    if not cfg.data.cohort or not Path(cfg.data.cohort).is_dir():
        raise ValueError(f"{source} recorded no split (trained before seqablate recorded splits) and its cohort "
                         f"{cfg.data.cohort} is not there to recompute it from")
    split = plan_split(cfg, load_cached(cfg.data, progress=True))
    return RecordedSplit.from_record(split_record(cfg, split), f"{source} (recomputed from its config)")


@dataclass
class StudySource:
    """A study's split and what else an outside baseline needs from it."""

    split: RecordedSplit
    config: TrialConfig | None  # a trial's config (evaluation protocol, cohorts); None for a file
    ref: Any = None  # tracking.StudyRef of the study's runs; None for a split.json file
    run_id: str | None = None  # the trial whose split and config were read
    name: str | None = None  # the study's name


def _trial_config(run_id: str, tracking_uri: str) -> TrialConfig:
    from seqablate import tracking
    from seqablate.config import load_yaml

    with tempfile.TemporaryDirectory(prefix="seqablate-config-") as tmp:
        path = tracking.download_artifact(run_id, tracking.CONFIG_ARTIFACT, tmp, tracking_uri=tracking_uri)
        return load_yaml(path, TrialConfig, stored=True)


def study_source(study: str | Path, *, tracking_uri: str | None = None) -> StudySource:
    """The split of ``study``: a ``split.json`` file, a trial's run id (its own split), or a
    study (a study folder, a ``train --out`` folder, an experiment name or a parent run id:
    the split its trials share).

    Raises ValueError naming the study when it cannot be resolved, when its trials were
    trained on different splits (name one trial by its run id then), or when no trial
    recorded a split and none can be recomputed.
    """
    from seqablate import tracking

    text = str(study)
    if text.endswith(".json") and Path(text).is_file():
        return StudySource(read_split_file(text), None)
    trial_id = None
    if _RUN_ID.match(text) and not Path(text).exists():
        run = tracking.run_info(text, tracking_uri=tracking_uri)
        if run.data.tags.get(tracking.TAG_KIND) == "trial":
            trial_id = text
    ref = tracking.resolve_study(text, tracking_uri)
    name = tracking.run_info(ref.parent_run_id, tracking_uri=ref.tracking_uri).data.tags.get(tracking.TAG_STUDY)
    if trial_id is not None:
        ids = [trial_id]
    else:
        df = tracking.list_trials(ref)
        if df.empty:
            raise ValueError(f"study {text!r}: has no trial runs, so no split")
        finished = df[df["status"] == "FINISHED"]
        ids = list((finished if len(finished) else df)["run_id"])
    splits: dict[tuple[tuple[str, ...], ...], tuple[str, RecordedSplit]] = {}
    for rid in ids:
        s = run_split(rid, ref.tracking_uri)
        if s is not None:
            splits.setdefault((s.train, s.val, s.test), (rid, s))
    if len(splits) > 1:
        runs = ", ".join(rid for rid, _ in splits.values())
        raise ValueError(f"study {text!r}: its trials were trained on {len(splits)} different splits (their data "
                         f"configs differ in data.cohort or a split setting: fold, split_seed, train_patients, "
                         f"train_fraction, ...); name one trial by its run id: {runs}")
    if splits:
        rid, split = next(iter(splits.values()))
        return StudySource(split, _trial_config(rid, ref.tracking_uri), ref, rid, name)
    rid = ids[0]
    cfg = _trial_config(rid, ref.tracking_uri)
    return StudySource(recompute_split(cfg, f"run {rid}"), cfg, ref, rid, name)
