"""Evaluation of one trained model under many conditions: the per-condition baseline against
the platform's path, side by side in one process.

Baseline: what evaluation did before predictions were grouped by patient: for each statistics
policy and condition, every patient through the whole network (contiguous NCHW layout, no
shared stem, the full transform back to the patient's grid), volumes held for the condition,
then scored. Platform: ``evaluate_model``
(one patient at a time, all conditions and policies in one pass: :func:`predict_conditions`).
Both give the same metrics (printed side by side; ``tests/trainables/test_trainables_evaluate.py``
checks it on phantoms).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_evaluate.py --model RUN_ID \\
        --tracking-uri sqlite:///demo-out/study/mlflow.db --cohort demo-out/cohorts/stanford --patients 12

``--all-subsets`` (default on) evaluates the full protocol and every sequence subset, as
``seqablate evaluate --all-subsets`` does; ``--trial`` the conditions a demo trial evaluates.
Prints seconds per path, the ratio, and the largest metric difference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _baseline(model: torch.nn.Module, cfg, patients, norm_stats) -> dict[str, float]:  # noqa: ANN001
    from seqablate import metric_names as mn
    from seqablate.evaluation.cohort import original_mask
    from seqablate.evaluation.evaluate import (
        evaluation_conditions,
        has_input,
        policies,
        score_condition,
    )
    from seqablate.models.inference import Predictor

    out: dict[str, float] = {}
    for policy, deployed in policies(model, cfg, norm_stats):
        pred = Predictor(deployed, batch_size=cfg.eval.batch_size, share_stem=False, channels_last=False)
        for cname, censored in evaluation_conditions(cfg):
            keep = [p for p in patients if has_input(p, censored)]
            probs = [pred.predict_volume(p, censored) for p in keep]
            r = score_condition(mn.prefix("test", cname, policy=policy), probs, [original_mask(p) for p in keep],
                                [tuple(p.spacing) for p in keep], [p.patient_id for p in keep], cfg)
            out.update(r.metrics)
    return out


def main() -> None:
    from seqablate.config import with_overrides
    from seqablate.evaluation.cohort import labelled, load_cached
    from seqablate.evaluation.evaluate import evaluate_model
    from seqablate.evaluation.model_ref import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="run id, models:/ URI or model folder")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--patients", type=int, default=12, help="first N labelled patients (timing, not a test set)")
    ap.add_argument("--trial", action="store_true", help="the trial's conditions instead of every subset")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    deployed, cfg = load_model(args.model, tracking_uri=args.tracking_uri)
    cfg = with_overrides(cfg, {"data.cohort": args.cohort, "eval.all_subsets": not args.trial,
                               "eval.bootstrap": args.bootstrap, "eval.external": {}})
    patients = labelled(load_cached(cfg.data, progress=False))[: args.patients]
    stats = deployed.norm_stats or None
    model = deployed.net
    evaluate_model(model, cfg, patients[:1], norm_stats=stats, progress=False)  # warm-up, both paths' caches
    t0 = time.perf_counter()
    base = _baseline(model, cfg, patients, stats)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = evaluate_model(model, cfg, patients, norm_stats=stats, progress=False).metrics
    t_new = time.perf_counter() - t0
    keys = [k for k in base if k.endswith(".mAP")]
    diff = max(abs(base[k] - new[k]) for k in keys if np.isfinite(base[k]))
    n_cond = len(keys)
    print(f"patients {len(patients)}, conditions x policies {n_cond}, predictions {n_cond * len(patients)}, "
          f"threads {torch.get_num_threads()}")
    print(f"| path | seconds | per prediction |\n|---|---|---|\n"
          f"| baseline (per condition, whole network) | {t_base:.1f} | {t_base / (n_cond * len(patients)):.3f} |\n"
          f"| platform (per patient, shared stem, channels-last) | {t_new:.1f} | {t_new / (n_cond * len(patients)):.3f} |")
    print(f"ratio baseline / platform: {t_base / t_new:.2f}x; largest mAP difference {diff:.2e} over {len(keys)} conditions")
    for k in keys[:4]:
        print(f"  {k}: {base[k]:.6f} vs {new[k]:.6f}")


if __name__ == "__main__":
    main()
