"""Evaluation of a trained model under missing sequences and on external cohorts.

Conditions (each a set of censored sequences, applied with the same zero-and-rescale rule as
training): ``full``; ``censor_<seq>`` for each sequence alone (``eval.each_sequence``) and for
every sequence in ``eval.censor`` (the paper's Tables III/IV censor ``t1_gre_post``);
``subset_<a+b>`` for every non-empty proper subset kept (``eval.all_subsets``, Table V
generalised). Every external cohort (Table VI) is predicted from whatever sequences its
patients have. Each condition gets lesion-level mAP with a bootstrap CI over patients, maximum
sensitivity, true-positive Dice and the FROC mean sensitivity, under metric keys
``test.<condition>.<metric>`` / ``external.<name>.<metric>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seqablate.config import TrialConfig
from seqablate.sequences import subset_label, subsets
from seqablate.trainables.cohort import original_mask
from seqablate.trainables.inference import predict_volume


def conditions(cfg: TrialConfig) -> list[tuple[str, tuple[str, ...]]]:
    """``(name, censored sequences)`` of every test condition, ``full`` first, no duplicates."""
    seqs = tuple(cfg.data.sequences)
    out: list[tuple[str, tuple[str, ...]]] = [("full", ())]
    singles = list(seqs) if cfg.eval.each_sequence else []
    singles += [s for s in cfg.eval.censor if s not in singles]
    for s in singles:
        if s in seqs and len(seqs) > 1:
            out.append((f"censor_{s}", (s,)))
    if cfg.eval.all_subsets:
        for sub in subsets(seqs):
            if len(sub) == len(seqs):
                continue
            censored = tuple(s for s in seqs if s not in sub)
            out.append((f"subset_{subset_label(sub, seqs)}", censored))
    return out


@dataclass
class ConditionResult:
    """Metrics of one condition and the tables behind them."""

    name: str  # metric prefix, e.g. 'test.full' or 'external.oslo'
    metrics: dict[str, float]
    lesions: pd.DataFrame  # per-lesion table of detection_metrics, with 'condition'
    pr: pd.DataFrame  # precision, recall, threshold


@dataclass
class EvalReport:
    """All conditions of one model."""

    results: list[ConditionResult] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.results:
            out.update(r.metrics)
        return out

    def write_artifacts(self, folder: str | Path) -> list[Path]:
        """Write ``lesions.csv`` (all conditions), ``pr_curves.csv`` and ``pr_curves.png``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lesions = pd.concat([r.lesions for r in self.results], ignore_index=True) if self.results else pd.DataFrame()
        pr = pd.concat([r.pr for r in self.results], ignore_index=True) if self.results else pd.DataFrame()
        paths = [folder / "lesions.csv", folder / "pr_curves.csv", folder / "pr_curves.png"]
        lesions.to_csv(paths[0], index=False)
        pr.to_csv(paths[1], index=False)
        _plot_pr(self.results, paths[2])
        return paths


def _plot_pr(results: list[ConditionResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for r in results:
        if len(r.pr):
            ax.step(r.pr["recall"], r.pr["precision"], where="post",
                    label=f"{r.name} (mAP {r.metrics.get(r.name + '.mAP', float('nan')):.2f})")
    ax.set_xlabel("recall (lesion sensitivity)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_condition(
    name: str,
    probs: list[np.ndarray],
    truths: list[np.ndarray],
    spacings: list[tuple[float, float, float]],
    patient_ids: list[str],
    cfg: TrialConfig,
) -> ConditionResult:
    """Lesion-level metrics of one condition from its probability volumes."""
    from seqablate.metrics import bootstrap_ci, detection_metrics, froc

    e = cfg.eval
    res = detection_metrics(probs, truths, spacings, threshold=e.threshold,
                            max_distance_mm=e.max_distance_mm, patient_ids=patient_ids)
    m = {f"{name}.mAP": float(res.mAP), f"{name}.max_sensitivity": float(res.max_sensitivity),
         f"{name}.n_truth": float(res.n_truth), f"{name}.n_pred": float(res.n_pred),
         f"{name}.n_tp": float(res.n_tp)}
    if res.tp_dice is not None and not math.isnan(float(res.tp_dice)):
        m[f"{name}.tp_dice"] = float(res.tp_dice)
    if e.bootstrap > 0 and len(res.per_patient) > 0:
        lo, hi = bootstrap_ci(res.per_patient, "mAP", n=e.bootstrap, seed=0)
        m[f"{name}.mAP_lo"], m[f"{name}.mAP_hi"] = float(lo), float(hi)
    fr = froc(res)
    m[f"{name}.froc_mean"] = float(fr.mean_sensitivity)
    precision, recall, thresholds = res.pr_curve()
    n = min(len(precision), len(recall), len(thresholds))
    pr = pd.DataFrame({"condition": name, "precision": np.asarray(precision)[:n],
                       "recall": np.asarray(recall)[:n], "threshold": np.asarray(thresholds)[:n]})
    lesions = res.lesions.copy()
    lesions.insert(0, "condition", name)
    return ConditionResult(name, m, lesions, pr)


def evaluate_model(
    model: torch.nn.Module,
    cfg: TrialConfig,
    test_patients: list[Any],
    *,
    externals: dict[str, list[Any]] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EvalReport:
    """Evaluate ``model`` on ``test_patients`` under :func:`conditions`, then on ``externals``.

    Patients without a mask are skipped (they cannot be scored); external patients that lack
    every sequence the model knows are skipped with a warning in the metrics
    (``external.<name>.n_skipped``).
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    amp = device.type == "cuda" and cfg.train.amp in ("auto", "bf16")
    report = EvalReport()
    kw = dict(slices=cfg.data.slices, batch_size=cfg.eval.batch_size, device=device, amp=amp)
    test = [p for p in test_patients if p.mask is not None]
    truths = [original_mask(p) for p in test]
    spacings = [tuple(p.spacing) for p in test]
    ids = [p.patient_id for p in test]
    conds = conditions(cfg)
    bar = tqdm(total=len(conds) * len(test) + sum(len(v) for v in (externals or {}).values()),
               desc="evaluate", disable=not progress, mininterval=2.0, leave=False)
    if test:
        for cname, censored in conds:
            probs = []
            for p in test:
                probs.append(predict_volume(model, p, censor=censored, **kw))
                bar.update(1)
            report.results.append(score_condition(f"test.{cname}", probs, truths, spacings, ids, cfg))
    for ext_name, patients in (externals or {}).items():
        usable = [p for p in patients if p.mask is not None and bool(np.asarray(p.present).any())]
        probs = []
        for p in usable:
            probs.append(predict_volume(model, p, **kw))
            bar.update(1)
        r = score_condition(f"external.{ext_name}", probs, [original_mask(p) for p in usable],
                            [tuple(p.spacing) for p in usable], [p.patient_id for p in usable], cfg)
        r.metrics[f"external.{ext_name}.n_skipped"] = float(len(patients) - len(usable))
        report.results.append(r)
    bar.close()
    return report
