"""Evaluation of a trained model under missing sequences and on external cohorts.

Conditions (each a set of censored sequences, applied with the same zero-and-rescale rule as
training): ``full``; ``censor_<seq>`` for each sequence alone (``eval.each_sequence``) and for
every sequence in ``eval.censor`` (the paper's Tables III/IV censor ``t1_gre_post``);
``subset_<a>-<b>`` for every non-empty proper subset kept (``eval.all_subsets``, Table V
generalised). Every external cohort (Table VI) is predicted from whatever sequences its
patients have. Each condition gets lesion-level mAP with a bootstrap CI over patients, maximum
sensitivity, true-positive Dice and the FROC mean sensitivity, under the names of
:mod:`seqablate.metric_names` (``test.<condition>.<metric>``, ``external.<name>.<metric>``).

A BatchNorm model with per-subset statistics is evaluated under both statistics policies: its
own (``eval.norm_stats``) under ``test.``/``external.``, the other under
``test_<policy>.``/``external_<policy>.``, so the report can show them side by side.
Every prediction goes through :class:`seqablate.models.inference.Predictor`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seqablate import metric_names as mn
from seqablate import timing
from seqablate.config import TrialConfig
from seqablate.evaluation.cohort import original_mask
from seqablate.models.deployed import DeployedModel
from seqablate.sequences import subsets
from seqablate.vocabulary import PER_SUBSET, STORED


def evaluation_conditions(cfg: TrialConfig) -> list[tuple[str, tuple[str, ...]]]:
    """``(name, censored sequences)`` of every test condition, ``full`` first, no duplicates.

    The validation conditions (``train.val_conditions``) are tested too, under their own names,
    unless a condition above already gives the model the same sequences: a model selected
    under a condition has its test number under it, which its objective's test value (and a
    multi-objective study's Pareto table) needs.
    """
    from seqablate.objectives import condition_censored

    seqs = tuple(cfg.data.sequences)
    out: list[tuple[str, tuple[str, ...]]] = [(mn.FULL, ())]
    singles = list(seqs) if cfg.eval.each_sequence else []
    singles += [s for s in cfg.eval.censor if s not in singles]
    for s in singles:
        if s in seqs and len(seqs) > 1:
            out.append((mn.censor_condition(s), (s,)))
    if cfg.eval.all_subsets:
        for sub in subsets(seqs):
            if len(sub) == len(seqs):
                continue
            censored = tuple(s for s in seqs if s not in sub)
            out.append((mn.subset_condition([s for s in seqs if s in sub]), censored))
    have = {c for _, c in out}
    for name in cfg.train.val_conditions:
        censored = condition_censored(name, seqs)
        if censored not in have:
            out.append((name, censored))
            have.add(censored)
    return out


@dataclass
class ConditionResult:
    """Metrics of one condition and the tables behind them."""

    name: str  # metric prefix, e.g. 'test.full' or 'external.oslo'
    metrics: dict[str, float]
    lesions: pd.DataFrame  # per-lesion table of detection_metrics, with 'condition'
    patients: pd.DataFrame  # per-patient table (metrics.patient_table), with 'condition'
    pr: pd.DataFrame  # precision, recall, threshold
    froc: pd.DataFrame  # fps_per_patient, sensitivity (metrics.froc's curve)
    norm_stats: dict[str, str] = field(default_factory=dict)  # patient -> statistics used


@dataclass
class EvalReport:
    """All conditions of one model."""

    results: list[ConditionResult] = field(default_factory=list)
    deployed: DeployedModel | None = None  # the model under its own statistics policy
    sequences: tuple[str, ...] = ()  # the model's sequences, in study order

    @property
    def metrics(self) -> dict[str, float]:
        """Every condition's metrics, and each sequence's Shapley value where every subset
        was scored (:func:`shapley_metrics`)."""
        out: dict[str, float] = {}
        for r in self.results:
            out.update(r.metrics)
        out.update(shapley_metrics(out, self.sequences))
        return out


    def write_artifacts(self, folder: str | Path) -> list[Path]:
        """Write ``lesions.csv``, ``patients.csv``, ``pr_curves.csv``, ``froc.csv`` (all
        conditions, a ``condition`` column) and ``pr_curves.png`` (:mod:`seqablate.metric_names`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)

        def cat(frames: list[pd.DataFrame]) -> pd.DataFrame:
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

        tables = {mn.LESIONS_CSV: "lesions", mn.PATIENTS_CSV: "patients", mn.PR_CSV: "pr", mn.FROC_CSV: "froc"}
        paths = []
        for name, attr in tables.items():
            cat([getattr(r, attr) for r in self.results]).to_csv(folder / name, index=False)
            paths.append(folder / name)
        own = [r for r in self.results if mn.parse_metric(f"{r.name}.mAP").policy is None]
        _plot_pr(own, folder / mn.PR_PNG)  # the model's own statistics policy only
        return [*paths, folder / mn.PR_PNG]


def shapley_metrics(metrics: dict[str, float], sequences: tuple[str, ...]) -> dict[str, float]:
    """``test[_<policy>].shapley.<seq>``: each sequence's exact Shapley value for test lesion
    mAP (:mod:`seqablate.metrics.shapley`), for every statistics policy whose ``2^S - 1``
    subset conditions are all in ``metrics`` (``full``, ``censor_<seq>``, ``subset_<...>``
    name them); nothing for fewer than two sequences or an incomplete set of subsets. Each
    subset's mAP is the logged one, pooled over the patients that subset could score (a patient
    holding none of its sequences is skipped), so the values sum to the full-protocol mAP; the
    report's estimates use the patients every subset scored."""
    from seqablate.metrics.shapley import all_subsets, shapley_values

    if len(sequences) < 2:
        return {}
    scores: dict[str | None, dict[frozenset[str], float]] = {}
    for key, value in metrics.items():
        p = mn.parse_metric(key)
        if p is None or p.split != "test" or p.metric != "mAP" or p.bound is not None:
            continue
        kept = mn.condition_subset(p.condition, sequences)
        if kept:
            scores.setdefault(p.policy, {}).setdefault(frozenset(kept), float(value))
    need = len(all_subsets(sequences))
    out: dict[str, float] = {}
    for policy, table in scores.items():
        if len(table) == need:
            for seq, phi in shapley_values(table, sequences).items():
                out[mn.shapley_key(seq, policy=policy)] = phi
    return out


def _plot_pr(results: list[ConditionResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    drawn = [r for r in results if len(r.pr)]
    for r in drawn:
        ax.step(r.pr["recall"], r.pr["precision"], where="post",
                label=f"{r.name} (mAP {r.metrics.get(r.name + '.mAP', float('nan')):.2f})")
    ax.set_xlabel("recall (lesion sensitivity)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if drawn:
        ax.legend(fontsize=6)
    else:  # no condition predicted a lesion: say so instead of an empty legend
        ax.text(0.5, 0.5, "no predicted lesion under any condition", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _record_stats(r: ConditionResult, used: dict[str, str], deployed: DeployedModel) -> None:
    """Which BatchNorm statistics scored each patient, into the patient table: ``norm_stats``
    ("stored" or the subset key) and ``norm_stats_fallback`` (per-subset statistics were asked
    for, but none were estimated for the patient's subset, so the training ones were used)."""
    r.norm_stats = used
    if len(r.patients):
        keys = r.patients["patient"].astype(str).map(used).fillna("")
        r.patients["norm_stats"] = keys
        r.patients["norm_stats_fallback"] = (deployed.policy == PER_SUBSET) & bool(deployed.norm_stats) & (keys == STORED)


def fallbacks(report: EvalReport) -> dict[str, list[str]]:
    """Condition -> patients scored with the training statistics although per-subset ones were
    asked for (their subset was never estimated: e.g. no training patient had it)."""
    out: dict[str, list[str]] = {}
    for r in report.results:
        if len(r.patients) and "norm_stats_fallback" in r.patients:
            ids = r.patients.loc[r.patients["norm_stats_fallback"].astype(bool), "patient"].astype(str).tolist()
            if ids:
                out[r.name] = ids
    return out


def score_condition(
    name: str,
    probs: list[np.ndarray],
    truths: list[np.ndarray],
    spacings: list[tuple[float, float, float]],
    patient_ids: list[str],
    cfg: TrialConfig,
) -> ConditionResult:
    """Lesion-level metrics of one condition from its probability volumes
    (:func:`detect` per patient, then :func:`score_detections`)."""
    return score_detections(name, [detect(p, t, s, pid, cfg) for p, t, s, pid in
                                   zip(probs, truths, spacings, patient_ids, strict=True)], cfg)


def detect(prob: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float], patient_id: str,
           cfg: TrialConfig) -> Any:
    """One patient's lesion detections (``metrics.detect_patient`` at the trial's threshold and
    matching distance): what a condition keeps of a patient once its volume is scored."""
    from seqablate.metrics.detection import detect_patient

    return detect_patient(prob, truth, spacing, threshold=cfg.eval.threshold,
                          max_distance_mm=cfg.eval.max_distance_mm, patient_id=str(patient_id))


def score_detections(name: str, per_patient: list[Any], cfg: TrialConfig) -> ConditionResult:
    """Lesion-level metrics of one condition from its patients' detections (:func:`detect`):
    pooled mAP with a bootstrap CI over patients, maximum sensitivity, TP Dice, FROC."""
    from seqablate.metrics import bootstrap_ci, froc, patient_table
    from seqablate.metrics.detection import DetectionResult

    e = cfg.eval
    ids = [p.patient_id for p in per_patient]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name}: patient ids must be unique, duplicated: {sorted({i for i in ids if ids.count(i) > 1})}")
    res = DetectionResult.from_patients(per_patient, threshold=e.threshold, max_distance_mm=e.max_distance_mm)
    m = {f"{name}.mAP": float(res.mAP), f"{name}.max_sensitivity": float(res.max_sensitivity),
         f"{name}.n_truth": float(res.n_truth), f"{name}.n_pred": float(res.n_pred),
         f"{name}.n_tp": float(res.n_tp), f"{name}.n_patients": float(len(per_patient))}
    if res.tp_dice is not None and not math.isnan(float(res.tp_dice)):
        m[f"{name}.tp_dice"] = float(res.tp_dice)
    if e.bootstrap > 0 and len(res.per_patient) > 0:
        with timing.phase("bootstrap"):  # taken out of the evaluation around it
            lo, hi = bootstrap_ci(res.per_patient, "mAP", n=e.bootstrap, seed=0)
        m[f"{name}.mAP_lo"], m[f"{name}.mAP_hi"] = float(lo), float(hi)
    fr = froc(res)
    m[f"{name}.froc_mean"] = float(fr.mean)
    froc_curve = pd.DataFrame({"condition": name, "fps_per_patient": fr.fps_per_patient,
                               "sensitivity": fr.curve_sensitivity})
    precision, recall, thresholds = res.pr_curve()
    k = min(len(precision), len(recall), len(thresholds))
    pr = pd.DataFrame({"condition": name, "precision": np.asarray(precision)[:k],
                       "recall": np.asarray(recall)[:k], "threshold": np.asarray(thresholds)[:k]})
    lesions = res.lesions.copy()
    lesions.insert(0, "condition", name)
    patients = patient_table(res.per_patient)
    patients.insert(0, "condition", name)
    return ConditionResult(name, m, lesions, patients, pr, froc_curve)


def has_input(patient: Any, censored: tuple[str, ...]) -> bool:
    """Whether ``patient`` keeps a sequence under ``censored`` (else it cannot be predicted)."""
    return any(bool(p) and s not in censored for s, p in zip(patient.sequences, np.asarray(patient.present), strict=True))


def policies(model: torch.nn.Module, cfg: TrialConfig, norm_stats: Any) -> list[tuple[str | None, DeployedModel]]:
    """``(metric policy, deployed model)`` pairs to evaluate: the model's own statistics policy
    first (metric policy None), then, for a BatchNorm model with per-subset statistics, the
    other one."""
    from seqablate.models.deployed import DeployedModel
    from seqablate.models.norm_stats import has_batchnorm

    own = cfg.eval.norm_stats
    conf = cfg.model_dump(mode="json")
    if not has_batchnorm(model) or not norm_stats:
        return [(None, DeployedModel(model, policy=STORED, config=conf))]
    other = STORED if own == PER_SUBSET else PER_SUBSET
    return [(None, DeployedModel(model, norm_stats=norm_stats, policy=own, config=conf)),
            (other, DeployedModel(model, norm_stats=norm_stats, policy=other, config=conf))]


def evaluate_model(
    model: torch.nn.Module,
    cfg: TrialConfig,
    test_patients: list[Any],
    *,
    externals: dict[str, list[Any]] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    norm_stats: dict[str, dict[str, torch.Tensor]] | None = None,
    conditions_override: list[tuple[str, tuple[str, ...]]] | None = None,
) -> EvalReport:
    """Evaluate ``model`` on ``test_patients`` under :func:`evaluation_conditions` (or
    ``conditions_override``: ``(name, censored)`` pairs), then on ``externals``, under each
    statistics policy of :func:`policies`.

    Patients without a mask are skipped (they cannot be scored); patients left without any
    sequence under a condition (or external patients with none of the model's sequences) are
    skipped and counted in ``<prefix>.n_skipped``.

    One patient at a time: all its conditions under all policies are predicted together
    (:func:`~seqablate.models.inference.predict_conditions`: its slices read once, an
    input-level stem convolved once), each volume is scored (:func:`detect`) and dropped, so
    memory holds one patient's volumes, not a cohort's. Results are ordered by policy, then
    test condition, then external cohort.
    """
    from tqdm.auto import tqdm

    from seqablate.models.inference import Predictor

    runs = policies(model, cfg, norm_stats)
    report = EvalReport(deployed=runs[0][1], sequences=tuple(cfg.data.sequences))
    predictors = [Predictor(d, device=device, batch_size=cfg.eval.batch_size, amp=cfg.train.amp) for _, d in runs]
    test = [p for p in test_patients if p.mask is not None]
    conds = conditions_override if conditions_override is not None else evaluation_conditions(cfg)
    externals = externals or {}
    bar = tqdm(total=len(runs) * (len(conds) * len(test) + sum(len(v) for v in externals.values())),
               desc="evaluate", disable=not progress, mininterval=2.0, leave=False)
    # Test: job (policy i, condition c) -> its patients' detections and statistics keys.
    jobs = [(i, c) for i in range(len(runs)) for c in range(len(conds))] if test else []
    found: dict[tuple[int, int], list[Any]] = {j: [] for j in jobs}
    used: dict[tuple[int, int], dict[str, str]] = {j: {} for j in jobs}
    for patient in test:
        mine = [(i, c) for i, c in jobs if has_input(patient, conds[c][1])]
        _score_patient(patient, [(predictors[i], conds[c][1]) for i, c in mine], mine, found, used, cfg)
        bar.update(len(jobs))
    test_results: dict[int, list[ConditionResult]] = {i: [] for i in range(len(runs))}
    for i, c in jobs:
        name = mn.prefix("test", conds[c][0], policy=runs[i][0])
        r = score_detections(name, found[(i, c)], cfg)
        r.metrics[f"{name}.n_skipped"] = float(len(test) - len(found[(i, c)]))
        _record_stats(r, used[(i, c)], runs[i][1])
        test_results[i].append(r)
    ext_results: dict[tuple[int, str], ConditionResult] = {}
    for ext_name, patients in externals.items():
        usable = [p for p in patients if p.mask is not None and bool(np.asarray(p.present).any())]
        ejobs = [(i, 0) for i in range(len(runs))]
        efound: dict[tuple[int, int], list[Any]] = {j: [] for j in ejobs}
        eused: dict[tuple[int, int], dict[str, str]] = {j: {} for j in ejobs}
        for patient in usable:
            _score_patient(patient, [(predictors[i], ()) for i, _ in ejobs], ejobs, efound, eused, cfg)
            bar.update(len(ejobs))
        bar.update(len(runs) * (len(patients) - len(usable)))
        for i, _ in ejobs:
            name = mn.prefix("external", cohort=ext_name, policy=runs[i][0])
            r = score_detections(name, efound[(i, 0)], cfg)
            r.metrics[f"{name}.n_skipped"] = float(len(patients) - len(usable))
            _record_stats(r, eused[(i, 0)], runs[i][1])
            ext_results[(i, ext_name)] = r
    for i in range(len(runs)):  # per policy: its test conditions, then its external cohorts
        report.results.extend(test_results[i])
        report.results.extend(ext_results[(i, e)] for e in externals)
    bar.close()
    return report


def _score_patient(patient: Any, requests: list[tuple[Any, tuple[str, ...]]], jobs: list[tuple[int, int]],
                   found: dict[tuple[int, int], list[Any]], used: dict[tuple[int, int], dict[str, str]],
                   cfg: TrialConfig) -> None:
    """Predict one patient under ``requests`` (``(predictor, censored)``, one per job) in one
    pass, map each volume to the patient's grid and keep only its detections."""
    from seqablate.data.cache import to_original_grid
    from seqablate.models.inference import predict_conditions

    if not requests:
        return
    # predict_conditions appends one (patient, key) per request to its predictor, in order.
    cursor = {id(p): len(p.used) for p, _ in requests}
    vols = predict_conditions(patient, requests)
    truth, spacing, pid = original_mask(patient), tuple(patient.spacing), str(patient.patient_id)
    for job, (pred, _), vol in zip(jobs, requests, vols, strict=True):
        found[job].append(detect(to_original_grid(vol, patient, above=cfg.eval.threshold), truth, spacing, pid, cfg))
        used[job][pid] = pred.used[cursor[id(pred)]][1]
        cursor[id(pred)] += 1
