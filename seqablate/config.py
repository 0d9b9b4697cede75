"""Typed, validated configs (data, model, train, eval, study). YAML in; errors name the field.

Every run is described by one :class:`TrialConfig` (data + model + train + eval). It is the
*resolved* config: everything the run needs, logged to MLflow as flattened params and as a
YAML artifact, so any run can be re-run from MLflow alone (``seqablate train run.yaml``).

An unknown or mistyped key raises :class:`ConfigError` naming the dotted field and the
closest valid name, e.g. ``model.fusoin: unknown field (did you mean 'fusion'?)``.
"""

from __future__ import annotations

import difflib
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from seqablate import metric_names as mn
from seqablate import objectives
from seqablate import vocabulary as V
from seqablate.naming import mapping_text, parse_mapping_text
from seqablate.sequences import PAPER_SEQUENCES, canonical, validate_sequences

# The choices come from seqablate.vocabulary (declared once); Literal[tuple] expands to them.
Layout = Literal[("auto", *V.LAYOUTS)]  # type: ignore[valid-type]
Integration = Literal[V.INTEGRATIONS]  # type: ignore[valid-type]
IntegrationPoint = Literal[V.INTEGRATION_POINTS]  # type: ignore[valid-type]
Fusion = Literal[V.FUSIONS]  # type: ignore[valid-type]
Sharing = Literal[V.SHARING_MODES]  # type: ignore[valid-type]
Backbone = Literal[V.BACKBONES]  # type: ignore[valid-type]
Norm = Literal[V.NORMS]  # type: ignore[valid-type]
NormStats = Literal[V.NORM_STATS]  # type: ignore[valid-type]
Intensity = Literal[V.INTENSITIES]  # type: ignore[valid-type]
Geometry = Literal[V.GEOMETRIES]  # type: ignore[valid-type]
DropoutMode = Literal[V.DROPOUT_MODES]  # type: ignore[valid-type]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field (dotted path) and why."""


def _numeric(annotation: Any) -> bool:
    """Whether a field annotation takes numbers (int, float, their optionals, tuples and lists
    of them) and not booleans."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not type(None) and a is not Ellipsis]
        return bool(args) and bool not in args and all(_numeric(a) for a in args)
    return annotation in (int, float)


def _path_safe_name(v: str) -> str:
    """A name that becomes a folder name (and an MLflow name): non-empty, no slashes, not
    ``.``/``..``, no surrounding spaces. An empty name would make the runs folder itself the
    run folder, and ``../x`` a folder outside it."""
    if not v or v.strip() != v or "/" in v or "\\" in v or v in (".", ".."):
        raise ValueError(f"must be a non-empty name without slashes or surrounding spaces, got {v!r}")
    return v


class _Strict(BaseModel):
    """Base: unknown keys are errors, numbers must be finite and never booleans, values are
    validated on assignment too."""

    # allow_inf_nan=False: an "lr: .inf" or "dropout_p: .nan" is refused here, naming the field,
    # instead of training to NaN and failing far from its cause.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        # YAML reads `steps: true` as a boolean and pydantic's lax mode would take it as 1 (or
        # 1.0): a typo that silently trains one step. A number field never takes a boolean
        # (strings such as "5" stay accepted, as YAML users quote numbers by habit).
        field = cls.model_fields.get(info.field_name or "")
        if field is None or not _numeric(field.annotation):
            return v
        values = v if isinstance(v, list | tuple) else [v]
        if any(isinstance(x, bool) for x in values):
            raise ValueError("expected a number, not a boolean (YAML reads true/false, yes/no, on/off as booleans)")
        return v


# ------------------------------------------------------------------ sequence dropout settings

#: A ``train.dropout_p`` value: one probability for every sequence, or one per named sequence.
DropoutP = float | dict[str, float]


def _probability(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"{what} must be a number in [0, 1], got {v!r}")
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"{what} must be a number in [0, 1] or a mapping {{sequence: p}} "
                         f"(written 't1_gre_post=0.4,flair=0.1'), got {v!r}") from None
    if not math.isfinite(f) or not 0.0 <= f <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {v!r}")
    return f


def parse_dropout_p(value: Any) -> DropoutP:
    """A ``train.dropout_p`` value: a number in [0, 1] (every sequence), or a mapping
    ``{sequence: p}`` (also written ``t1_gre_post=0.4,flair=0.1``, its MLflow param) with
    canonical names (aliases accepted, each name once) and each p in [0, 1], kept to 12
    significant digits so its one-string form reads back to the same numbers.

    Checked without the study's sequences (that the names are among ``data.sequences``, and
    their order, is :class:`TrialConfig`'s). Raises ValueError naming the value; an empty
    mapping is refused (say 0 for no dropout).
    """
    if isinstance(value, str) and "=" in value:
        value = parse_mapping_text(value)
    if not isinstance(value, Mapping):
        return _probability(value, "dropout p")
    if not value:
        raise ValueError("an empty mapping: name at least one sequence and its p, or give 0 for no dropout")
    out: dict[str, float] = {}
    for name, p in value.items():
        seq = canonical(str(name))
        if seq in out:
            raise ValueError(f"{name!r} names {seq!r} again in {dict(value)}")
        out[seq] = float(f"{_probability(p, f'the dropout p of {name!r}'):.12g}")
    return out


def dropout_probabilities(p: DropoutP, sequences: Sequence[str]) -> tuple[float, ...]:
    """Each sequence's dropout probability, in study order (unnamed sequences 0)."""
    if isinstance(p, Mapping):
        return tuple(float(p.get(s, 0.0)) for s in sequences)
    return tuple(float(p) for _ in sequences)


def dropout_active(p: DropoutP) -> bool:
    """Whether a ``train.dropout_p`` drops anything: a number > 0, or a mapping with a p > 0
    (a mapping of zeros is "no dropout", the no-dropout twin of the analysis)."""
    return any(v > 0 for v in p.values()) if isinstance(p, Mapping) else p > 0


def dropout_text(p: DropoutP) -> str:
    """The one-string form (MLflow param and tag): ``0.25`` or ``t1_gre_post=0.4,flair=0.1``."""
    return mapping_text(p) if isinstance(p, Mapping) else str(p)


class DataConfig(_Strict):
    """Where the cohort is and how volumes become 2.5D samples."""

    cohort: str | None = None  # cohort folder; None = a synthetic 'stanford' phantom cohort
    layout: Layout = "auto"  # cohort layout; 'auto' detects it
    sequences: list[str] = Field(default_factory=lambda: list(PAPER_SEQUENCES))  # study order = S axis
    # 'spacing' = volumes resampled to spacing_mm x spacing_mm x slice_mm (physical space, as
    # nnU-Net does; image_size is then the training patch size, inference covers whole slices);
    # 'resize' = every slice resized to image_size x image_size pixels (the paper's pipeline; what
    # a stored config without this key means)
    geometry: Geometry = "spacing"
    spacing_mm: float | None = Field(None, gt=0, le=20)  # target in-plane voxel size; None = median of the training cohort
    slice_mm: float | None = Field(None, gt=0, le=20)  # target slice spacing (2.5D neighbours); None = median of the training cohort
    clahe_tile_mm: float = Field(30.0, gt=0)  # spacing: CLAHE tile width in mm (the paper's 32 px of ~0.94 mm)
    image_size: int = Field(256, ge=16, le=1024)  # resize: in-plane size (H = W); spacing: training patch size
    # intensities: 'minmax_clahe' = volume rescaled to [0, 1] (min .. 99.5th percentile) then CLAHE
    # per slice (the paper's); 'minmax' = the same without CLAHE; 'zscore' = per sequence, zero mean
    # and unit variance over the head (a mask computed from the volume, as nnU-Net does for MRI),
    # background 0, no CLAHE, so an absent sequence (zeros) sits at the mean
    intensity: Intensity = "minmax_clahe"
    slices: int = Field(5, ge=1, le=31)  # K, 2.5D depth (odd); edge slices padded by repetition
    lesion_labels: list[int] = Field(default_factory=lambda: [1, 3])  # label values that are lesion (BraTS: 1 core, 3 enhancing)
    default_spacing: tuple[float, float, float] = (0.94, 0.94, 1.0)  # mm, for layouts without spacing (PNG)
    # channel name -> canonical sequence, for nnU-Net channel names seqablate does not know
    # (e.g. {"T1_post_gd": "t1_post"}); the CLI's --alias NAME=SEQUENCE
    aliases: dict[str, str] = Field(default_factory=dict)
    cache_dir: str | None = None  # preprocessing cache; None = <cohort>/../.seqablate-cache
    oversample: float = Field(10.0, ge=1.0)  # sampling weight of slices that contain lesion
    val_patients: int | None = Field(None, ge=0)  # validation patients; None = enough for val_fraction and val_min_lesions
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)  # with val_patients None: at least this fraction of labelled patients
    val_min_lesions: int = Field(10, ge=0)  # with val_patients None: at least this many validation lesions
    test_fraction: float = Field(0.25, ge=0.0, lt=1.0)  # fraction of labelled patients held out for test
    split_seed: int = 0  # seed of the patient-level split (independent of the training seed)
    # train on part of the training split: the first N patients (train_patients) or the first
    # fraction * n rounded half up (train_fraction) of one ordering seeded by split_seed, so smaller sets are
    # nested in larger ones; validation and test stay the same (learning curves); None = all
    train_patients: int | None = Field(None, ge=1)
    train_fraction: float | None = Field(None, gt=0, le=1)
    fold: int | None = None  # with folds > 1: which fold is the test fold
    folds: int = Field(1, ge=1)  # k-fold cross-validation when > 1
    num_workers: int = Field(0, ge=0)  # DataLoader workers per training worker

    @field_validator("sequences")
    @classmethod
    def _canonical_sequences(cls, v: list[str]) -> list[str]:
        return list(validate_sequences(v))

    @model_validator(mode="after")
    def _one_training_subset(self) -> DataConfig:
        if self.train_patients is not None and self.train_fraction is not None:
            raise ValueError(f"data.train_patients ({self.train_patients}) and data.train_fraction "
                             f"({self.train_fraction}) both set; give one (a count or a share of the training split)")
        return self

    @field_validator("aliases")
    @classmethod
    def _canonical_aliases(cls, v: dict[str, str]) -> dict[str, str]:
        return {str(k): canonical(str(s)) for k, s in v.items()}

    @field_validator("slices")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd (centre slice plus equal context each side), got {v}")
        return v


class ModelConfig(_Strict):
    """Which network, how sequences are integrated, how parallel branches share weights."""

    integration: Integration = "input"  # where sequences meet: input channels, mid features, end probabilities
    integration_point: IntegrationPoint = V.MODEL_DEFAULTS["integration_point"]  # for 'mid': last backbone stage run per sequence
    fusion: Fusion = V.MODEL_DEFAULTS["fusion"]  # for 'mid': how branch features are combined
    sharing: Sharing = V.MODEL_DEFAULTS["sharing"]  # for 'mid'/'end': weight sharing of parallel branches
    backbone: Backbone = "resnet50"  # ResNet backbone of DeepLabv3 ('compact', 'tiny' for CPUs)
    norm: Norm = "batch"  # normalisation layers: 'batch' (the paper's), 'group', 'instance'
    sequences: list[str] | None = None  # S names in order; None = taken from data.sequences
    slices: int | None = None  # K; None = taken from data.slices

    @field_validator("sequences")
    @classmethod
    def _canonical_sequences(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else list(validate_sequences(v))


class TrainConfig(_Strict):
    """Optimisation, regularisation, validation and bookkeeping of one trial."""

    steps: int = Field(2000, ge=1)  # optimiser steps
    batch_size: int = Field(16, ge=1)  # per worker
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-4, gt=0)  # peak learning rate
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD only
    schedule: Literal["cosine", "poly", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    dice_weight: float = Field(0.0, ge=0)  # loss = BCE + dice_weight * soft Dice
    tie_lambda: float = Field(0.0, ge=0)  # strength of the L2 tie penalty ('l2_tied' only)
    # sequence-dropout probability: one number for every sequence (0 = off), or one per sequence
    # {t1_gre_post: 0.4, flair: 0.1} (unnamed sequences 0); with 'uniform' only a number (on/off)
    dropout_p: DropoutP = 0.0
    dropout_mode: DropoutMode = "bernoulli"
    val_every: int = Field(200, ge=1)  # steps between validations
    # conditions every validation scores ('full', 'censor_<seq>', 'subset_<a>-<b>'), each logged as
    # val.<condition>.mAP; the objective below reduces them to the number the trial selects by
    val_conditions: list[str] = Field(default_factory=lambda: [mn.FULL])
    # what the trial selects its checkpoint by (and Tune / Optuna optimise): None = the first
    # validation condition's mAP; a condition; 'worst' or 'mean' over val_conditions; or a
    # deployment profile {condition: share of patients}, shares summing to 1 (seqablate/objectives.py)
    objective: str | dict[str, float] | None = None
    # multi-objective studies: every objective the trial reports (val.objective.<i>, i from 1), the
    # first being the objective above, the one that selects the checkpoint; [] = that one alone
    objectives: list[str | dict[str, float]] = Field(default_factory=list)
    # the older spelling of val_conditions: [censor_<these>] (sequences censored in validation);
    # kept as written, val_conditions follows it
    val_censor: list[str] = Field(default_factory=list)
    saliency_every: int = Field(50, ge=0)  # steps between saliency aggregates; 0 = off
    seed: int = 0  # training seed (init, sampling, dropout)
    amp: Literal["auto", "bf16", "off"] = "auto"  # bf16 autocast on GPU with 'auto'
    channels_last: bool = True  # train channels-last (faster on GPU and on the CPU's oneDNN)
    checkpoint_every: int | None = None  # steps between checkpoints; None = at each validation
    select: Literal["best", "last"] = "best"  # evaluated weights: best validation objective (train.objective), or the final ones

    @field_validator("val_censor")
    @classmethod
    def _canonical_censor(cls, v: list[str]) -> list[str]:
        return list(validate_sequences(v)) if v else []

    @field_validator("dropout_p", mode="before")
    @classmethod
    def _dropout_p(cls, v: Any) -> DropoutP:
        return parse_dropout_p(v)

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, v: Any) -> objectives.Objective:
        try:
            return objectives.parse_objective(v)
        except ValueError as err:  # the error's location names the field already
            raise ValueError(str(err).removeprefix("train.objective: ")) from None

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, v: Any) -> list[objectives.Objective]:
        try:
            found = objectives.parse_objectives(v)
        except ValueError as err:  # the error's location names the field already
            raise ValueError(str(err).removeprefix("train.objectives: ")) from None
        if len(found) == 1:
            raise ValueError(f"one objective ({objectives.objective_text(found[0])}) is train.objective alone; "
                             "give two or more, or leave train.objectives empty and set train.objective")
        return found

    @field_validator("val_conditions")
    @classmethod
    def _val_conditions(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("empty; name at least one condition (e.g. [full])")
        return [str(c).strip() for c in v]

    @model_validator(mode="after")
    def _uniform_takes_a_number(self) -> TrainConfig:
        # 'uniform' draws a subset ignoring p (p only switches it on): per-sequence rates given
        # with it would be silently unused.
        if self.dropout_mode == "uniform" and isinstance(self.dropout_p, Mapping):
            raise ValueError(
                f"train.dropout_p {dropout_text(self.dropout_p)!r} gives per-sequence probabilities, which "
                "train.dropout_mode: uniform ignores (it keeps a uniformly drawn subset); use "
                "dropout_mode: bernoulli with the mapping, or a number p > 0 with uniform"
            )
        return self


class EvalConfig(_Strict):
    """How the best checkpoint is evaluated."""

    threshold: float = Field(0.1, gt=0, lt=1)  # probability threshold for predicted lesions
    max_distance_mm: float = Field(1.0, gt=0)  # centre-of-mass distance for a true positive
    censor: list[str] = Field(default_factory=lambda: ["t1_gre_post"])  # extra conditions: each censored alone too
    each_sequence: bool = True  # also censor each sequence alone
    all_subsets: bool = False  # evaluate all 2^S - 1 sequence subsets
    external: dict[str, str] = Field(default_factory=dict)  # name -> cohort path (e.g. oslo)
    bootstrap: int = Field(1000, ge=0)  # bootstrap resamples for CIs
    batch_size: int = Field(32, ge=1)  # slices per inference batch
    # BatchNorm statistics at inference: 'stored' = the running statistics of training (the
    # paper's); 'per_subset' = re-estimated after training for every sequence subset a patient may
    # have, and chosen by the subset the patient actually has (validation too)
    norm_stats: NormStats = "stored"
    norm_batches: int = Field(30, ge=1)  # per_subset: training batches per subset's statistics
    norm_batch_size: int = Field(16, ge=1)  # per_subset: slices per such batch


class TrialConfig(_Strict):
    """The resolved config of one run: everything needed to re-run it."""

    name: str = "trial"  # run name; also the run folder's name under ./seqablate-runs
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _path_safe_name(v)

    @model_validator(mode="after")
    def _resolve_model_inputs(self) -> TrialConfig:
        # The model's S and K follow the data unless given; if given they must agree.
        if self.model.sequences is None:
            self.model.sequences = list(self.data.sequences)
        elif list(self.model.sequences) != list(self.data.sequences):
            raise ValueError(
                f"model.sequences {self.model.sequences} differs from data.sequences "
                f"{self.data.sequences}; leave model.sequences unset to follow the data"
            )
        if self.model.slices is None:
            self.model.slices = self.data.slices
        elif self.model.slices != self.data.slices:
            raise ValueError(
                f"model.slices {self.model.slices} differs from data.slices {self.data.slices}"
            )
        self._resolve_sequence_settings()
        d = self.data
        no_val = d.val_patients == 0 or (d.val_patients is None and d.val_fraction == 0 and d.val_min_lesions == 0)
        if no_val and self.train.select == "best":
            # Without validation patients every validation mAP is 0: "best" would keep the first
            # validated checkpoint and a search would optimise a flat objective.
            raise ValueError(
                "train.select: best with no validation patients (data.val_patients: 0, or val_fraction and "
                "val_min_lesions both 0) selects on nothing; set train.select: last, or give validation "
                "patients (data.val_patients > 0, or val_fraction / val_min_lesions > 0)"
            )
        return self

    def _resolve_sequence_settings(self) -> None:
        """The train settings that name sequences, checked against ``data.sequences`` and put
        in canonical form: dropout mapping in study order, validation conditions and objective
        (:func:`seqablate.objectives.resolve`), ``val_censor`` as ``val_conditions``."""
        t, seqs = self.train, tuple(self.data.sequences)
        if isinstance(t.dropout_p, Mapping):
            unknown = [s for s in t.dropout_p if s not in seqs]
            if unknown:
                raise ValueError(f"train.dropout_p names {unknown}, not among the study's sequences "
                                 f"data.sequences {list(seqs)}")
            ordered = {s: t.dropout_p[s] for s in seqs if s in t.dropout_p}
            if list(ordered) != list(t.dropout_p):
                t.dropout_p = ordered
        conditions = list(t.val_conditions)
        if t.val_censor:
            # val_censor is the first spelling of one censored validation condition: it sets
            # val_conditions when those are the default, and must agree with them otherwise.
            unknown = [s for s in t.val_censor if s not in seqs]
            if unknown:
                raise ValueError(f"train.val_censor names {unknown}, not among data.sequences {list(seqs)}")
            kept = [s for s in seqs if s not in t.val_censor]
            if not kept:
                raise ValueError(f"train.val_censor {t.val_censor} censors every sequence: nothing left to validate on")
            censored = objectives.canonical_condition(mn.subset_condition(kept), seqs, field="train.val_censor")
            if conditions == [mn.FULL]:
                conditions = [censored]
            elif [objectives.canonical_condition(c, seqs) for c in conditions] != [censored]:
                raise ValueError(
                    f"train.val_censor {t.val_censor} and train.val_conditions {conditions} both say what "
                    f"validation scores; val_censor is the older spelling of val_conditions: [{censored}]: "
                    "set only train.val_conditions"
                )
        if t.objectives:
            listed, conditions = objectives.resolve_all(t.objectives, conditions, seqs)
            if t.objective is not None:
                first, conditions = objectives.resolve(t.objective, conditions, seqs)
                if first != listed[0]:
                    raise ValueError(
                        f"train.objective {objectives.objective_text(t.objective)!r} is not the first of "
                        f"train.objectives ({objectives.objectives_text(t.objectives)}): the first objective is the "
                        "one the checkpoint is selected by; put it first, or leave train.objective unset"
                    )
            objective = listed[0]
            if listed != list(t.objectives):
                t.objectives = listed
        else:
            objective, conditions = objectives.resolve(t.objective, conditions, seqs)
        if conditions != list(t.val_conditions):
            t.val_conditions = conditions
        if objective != t.objective:
            t.objective = objective


class StudyConfig(_Strict):
    """A study: a search space over a base trial config, and how Ray runs its trials."""

    name: str = "study"  # MLflow experiment name and study folder name
    space: str = "paper-table1"  # registered space name or path of a .py file defining SPACE
    cohort: str | None = None  # training cohort; copied into base.data.cohort (must agree if both set)
    # grids: every point trained on each of these cohorts (data.cohort per trial, e.g. phantoms that
    # differ in one parameter); `cohort` still plans the target spacing, the same for every trial
    cohorts: list[str] = Field(default_factory=list)
    external: dict[str, str] = Field(default_factory=dict)  # name -> cohort path; merged into base.eval.external
    num_samples: int = Field(8, ge=1)  # searches: trials to sample (grids run each point once per seed)
    seeds: int = Field(1, ge=1)  # every config repeated with train.seed = 0 .. seeds-1
    scheduler: Literal["none", "asha"] = "none"  # Tune trial scheduler (ASHA stops weak trials early)
    max_concurrent: int | None = Field(None, ge=1)  # trials at once; None = as many as resources allow
    workers_per_trial: int = Field(1, ge=1)  # Ray Train workers (DDP ranks) per trial
    gpus_per_worker: float = Field(0.0, ge=0)  # 0 = CPU training
    cpus_per_worker: float = Field(1.0, gt=0)  # CPUs reserved per training worker
    storage: str | None = None  # study folder: local path or URI (s3://, gs://); None = ./seqablate-runs/<name>
    tracking_uri: str | None = None  # MLflow URI; None = MLFLOW_TRACKING_URI, else SQLite in the study folder
    smoke: bool = False  # tiny, fast everything (few steps, small images): CI and job tests
    trials: list[str] = Field(default_factory=list)  # grids: run only points whose name matches one of these globs
    base: TrialConfig = Field(default_factory=TrialConfig)  # the trial config every space point overrides

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # The name becomes an experiment name and a folder name: keep it path-safe.
        return _path_safe_name(v)

    @field_validator("cohorts")
    @classmethod
    def _distinct_cohort_names(cls, v: list[str]) -> list[str]:
        # A cohort's folder name labels its runs (run names "...-on_<folder>") and its point in
        # the report's cohort sweep: two folders of one name would merge there.
        seen: dict[str, str] = {}
        for path in v:
            name = PurePath(path).name
            if name in seen:
                raise ValueError(f"cohorts {seen[name]!r} and {path!r} share the folder name {name!r}, which labels "
                                 "their runs and report rows; rename one folder")
            seen[name] = path
        return v

    @field_validator("external")
    @classmethod
    def _external_names(cls, v: dict[str, str]) -> dict[str, str]:
        # Names become metric keys (external.<name>.mAP): letters, digits, '_' and '-' only.
        bad = [k for k in v if not k or not all(ch.isalnum() or ch in "_-" for ch in k)]
        if bad:
            raise ValueError(f"external cohort names {bad} must use letters, digits, '_' or '-'")
        return v

    @model_validator(mode="after")
    def _one_metric_for_asha(self) -> StudyConfig:
        # ASHA stops trials by one metric: it would cut the front short on the first objective's
        # side, stopping early the trials that trade it for the others.
        if self.scheduler == "asha" and self.base.train.objectives:
            raise ValueError(
                f"scheduler: asha with several objectives (--objectives / train.objectives "
                f"{objectives.objectives_text(self.base.train.objectives)}): ASHA stops trials by one metric, so it "
                "would stop early the trials that trade the first objective for the others and cut the Pareto "
                "front short; use --scheduler none"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _resolve_base(cls, data: Any) -> Any:
        # One source of truth: the resolved base (hence every trial's logged config) carries
        # the cohort and the external cohorts, so any trial re-runs from its config alone.
        # Done on the raw mapping: assigning fields after validation would re-trigger it.
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        base = data.get("base")
        if isinstance(base, BaseModel):
            base = base.model_dump()
        if not isinstance(base, Mapping | None):
            return data  # let field validation report the bad section
        base = dict(base or {})
        if not isinstance(base.get("data", {}), Mapping) or not isinstance(base.get("eval", {}), Mapping):
            return data  # let field validation report the bad section
        bdata, beval = dict(base.get("data") or {}), dict(base.get("eval") or {})
        cohort, bcohort = data.get("cohort"), bdata.get("cohort")
        if cohort is not None and bcohort is not None and cohort != bcohort:
            raise ValueError(f"cohort {cohort!r} differs from base.data.cohort {bcohort!r}; set one")
        if cohort is not None or bcohort is not None:
            data["cohort"] = bdata["cohort"] = cohort if cohort is not None else bcohort
        ext, bext = dict(data.get("external") or {}), dict(beval.get("external") or {})
        clash = sorted(k for k in ext if k in bext and bext[k] != ext[k])
        if clash:
            raise ValueError(f"external cohorts {clash} differ from base.eval.external; set one")
        if ext or bext:
            data["external"] = beval["external"] = {**bext, **ext}
        base["data"], base["eval"] = bdata, beval
        data["base"] = base
        return data


C = TypeVar("C", bound=BaseModel)


def _closest(name: str, cls: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Suggestion for an unknown key at ``loc`` (walks nested models to find valid names)."""
    model: Any = cls
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = field.annotation
    fields = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(name), fields, n=1, cutoff=0.4)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; valid fields: {fields}" if fields else hint


def _format(err: ValidationError, cls: type[BaseModel], source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        dotted = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{dotted}: unknown field{_closest(str(loc[-1]), cls, loc)}")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{dotted}: {e['msg']}{shown}")
    where = f"{source}: " if source else ""
    return f"{where}invalid {cls.__name__}:\n  " + "\n  ".join(lines)


def parse(cls: type[C], data: Mapping[str, Any] | C | None, *, source: str = "") -> C:
    """Validate ``data`` (a mapping, an instance, or None for defaults) as ``cls``.

    Raises :class:`ConfigError` whose message names every bad field and its closest valid name.
    """
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source or 'config'}: expected a mapping, got {type(data).__name__}")
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format(err, cls, source)) from None


def stored_trial(data: Mapping[str, Any], *, source: str = "") -> TrialConfig:
    """A TrialConfig a run or a model STORED (its ``config.yaml``, an MLflow model's config).

    A stored config without ``data.geometry`` was saved before the geometry existed, when
    every slice was resized to ``data.image_size``: it means ``resize`` (not the default of new
    configs), so such a model preprocesses, predicts and scores as it was trained.
    """
    return parse(TrialConfig, _legacy_geometry(data), source=source)


def _legacy_geometry(trial: Mapping[str, Any]) -> dict[str, Any]:
    """A stored trial config (mapping) with ``data.geometry`` set to the legacy meaning where absent."""
    raw = dict(trial)
    d = raw.get("data")
    raw["data"] = {"geometry": V.LEGACY_GEOMETRY, **(dict(d) if isinstance(d, Mapping) else {})}
    return raw


def load_yaml(path: str | Path, cls: type[C] = TrialConfig, *, stored: bool = False) -> C:  # type: ignore[assignment]
    """Read a YAML file and validate it as ``cls``; errors name the file and the field.

    ``stored``: the file is a config a run or a study wrote (a TrialConfig, or a StudyConfig's
    ``base``, read as :func:`stored_trial` does).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if stored and cls is TrialConfig and isinstance(raw, Mapping):
        return stored_trial(raw, source=str(p))  # type: ignore[return-value]
    if stored and isinstance(raw, Mapping) and isinstance(raw.get("base"), Mapping):
        # A study's record: its base trial config is a stored one (see stored_trial).
        raw = {**raw, "base": _legacy_geometry(raw["base"])}
    return parse(cls, raw, source=str(p))


def _absolute(path: str | None, base: Path) -> str | None:
    if path is None or "://" in path:
        return path
    # os.path.abspath, not resolve(): a symbolic link the user named stays as named.
    return os.path.abspath(base / Path(path).expanduser())


def absolute_paths(cfg: TrialConfig, base: str | Path | None = None) -> TrialConfig:
    """``cfg`` with its local paths (``data.cohort``, ``data.cache_dir``, ``eval.external``)
    made absolute against ``base`` (default: the working directory), ``~`` expanded.

    Relative paths in a config mean the directory a command runs in; the run's stored config
    must not depend on it, or a resume or a report from another directory would look for the
    cohorts somewhere else. URIs and unset paths are kept.
    """
    root = Path(base) if base is not None else Path.cwd()
    data = cfg.data.model_copy(update={"cohort": _absolute(cfg.data.cohort, root),
                                       "cache_dir": _absolute(cfg.data.cache_dir, root)})
    external = {k: _absolute(v, root) for k, v in cfg.eval.external.items()}
    return cfg.model_copy(update={"data": data, "eval": cfg.eval.model_copy(update={"external": external})})


def to_yaml(cfg: BaseModel) -> str:
    """The config as YAML (round-trips through :func:`parse`)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


#: Mapping-valued settings that are ONE param (``name=value`` pairs, :func:`naming.mapping_text`),
#: not one param per entry: a per-sequence dropout is one setting, and its run is found, compared
#: and grouped by one value.
ONE_PARAM_MAPPINGS: tuple[str, ...] = ("train.dropout_p", "train.objective")
#: List-valued settings whose entries may be mappings: one param in their own one-string form
#: (``train.objectives: full; worst; full=0.7,censor_t1_gre_post=0.3``), which the config reads back.
ONE_PARAM_OBJECTIVE_LISTS: tuple[str, ...] = ("train.objectives",)


def flatten(cfg: BaseModel | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a config, e.g. ``{'model.fusion': 'concat', ...}`` (MLflow params).

    Lists and tuples are rendered as comma-joined strings; None as the string 'None'; the
    mappings of :data:`ONE_PARAM_MAPPINGS` (also under a study's ``base.``) as one
    ``name=value,...`` string (``train.dropout_p: t1_gre_post=0.4,flair=0.1``), which the
    config reads back; the objective lists of :data:`ONE_PARAM_OBJECTIVE_LISTS` as
    ``full; worst`` (:func:`seqablate.objectives.objectives_text`); other mappings as one key
    per entry.
    """
    raw = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else dict(cfg)
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and any(key == m or key.endswith(f".{m}") for m in ONE_PARAM_MAPPINGS):
            out[key] = mapping_text(v)
        elif isinstance(v, list | tuple) and any(key == m or key.endswith(f".{m}") for m in ONE_PARAM_OBJECTIVE_LISTS):
            out[key] = objectives.objectives_text(v)
        elif isinstance(v, Mapping):
            out.update(flatten(v, prefix=f"{key}."))
        elif isinstance(v, list | tuple):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = "None" if v is None else v
    return out


def with_overrides(cfg: C, overrides: Mapping[str, Any]) -> C:
    """A copy of ``cfg`` with dotted-key overrides applied (``{'train.dropout_p': 0.25}``).

    Unknown keys raise :class:`ConfigError` naming the key and the closest valid one.
    """
    raw = cfg.model_dump(mode="python")
    for dotted, value in overrides.items():
        node = raw
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{dotted}: unknown field{_closest(part, type(cfg), tuple(parts[: parts.index(part) + 1]))}")
            node = node[part]
        node[parts[-1]] = value
    # Derived fields are re-derived from the data section unless overridden explicitly.
    if "model" in raw and isinstance(raw["model"], dict):
        if not any(k.startswith("model.sequences") for k in overrides):
            raw["model"]["sequences"] = None
        if not any(k.startswith("model.slices") for k in overrides):
            raw["model"]["slices"] = None
    return parse(type(cfg), raw, source="overrides")


def config_diff(old: BaseModel | Mapping[str, Any], new: BaseModel | Mapping[str, Any]) -> list[str]:
    """``'<dotted key>: <old> -> <new>'`` for every flattened key whose value differs (sorted).

    A key present on one side only shows ``<unset>`` on the other. Empty list = same config.
    """
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<unset>"), b.get(key, "<unset>")
        if va != vb:
            out.append(f"{key}: {va!r} -> {vb!r}")
    return out
