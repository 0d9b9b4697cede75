"""Names of the tracking schema: run tags, artifact folders, and the reference to a study.

Shared by every module of :mod:`seqablate.tracking`; nothing here talks to MLflow.
"""

from __future__ import annotations

from typing import NamedTuple

from seqablate import metric_names as mn

TAG_KIND = "seqablate.kind"  # 'study' (parent run), 'trial' (child run), 'evaluation' or 'baseline'
#: On 'baseline' runs (another tool's predictions scored by ``evaluate --predictions``): the
#: tool's name (``--name``, e.g. 'nnunet-2d').
TAG_BASELINE = "seqablate.baseline"
KIND_BASELINE = "baseline"
TAG_STUDY = "seqablate.study"  # study name, on parent and trial runs
TAG_TRIAL_KEY = "seqablate.trial_key"  # stable key of a trial's overrides (resume idempotency)
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own parent link (nests runs in the UI)
TAG_ERROR = "error"  # on FAILED runs: '<ExceptionType>: <message>'
TAG_GIT = "git_commit"
#: On trial runs: the objective the run selected its checkpoint by, in words
#: (:func:`seqablate.objectives.definition`; the param ``train.objective`` holds its value).
TAG_OBJECTIVE = "objective.definition"
#: On trial runs of a multi-objective study (``train.objectives``): every objective in words,
#: numbered as the metrics ``val.<kind>.<i>`` are (``1: validation mAP under full; 2: worst ...``).
TAG_OBJECTIVES = "objectives.definition"
#: On trial runs of a multi-objective study: ``true`` when the run's configuration is on the
#: Pareto front of the study's finished trials on their validation objectives, else ``false``
#: (``seqablate.analysis.pareto``); finished runs without the objectives get none.
TAG_PARETO = "pareto"
TAG_VERSION = "seqablate.version"
MODEL_DIR = mn.MODEL_DIR  # artifact folder of the trained model (an MLflow PyTorch model)
CONFIG_ARTIFACT = "config.yaml"
SPLIT_ARTIFACT = mn.SPLIT_JSON  # a trial's split, at the run's root and inside model/
STUDY_FILE = "study.yaml"  # the resolved StudyConfig the study driver writes into its folder


class StudyRef(NamedTuple):
    """Where a study lives; plain strings, so it pickles into Ray workers."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
