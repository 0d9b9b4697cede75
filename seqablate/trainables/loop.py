"""The per-worker training function, and the same function run without Ray.

:func:`train_loop_per_worker` is one plain function that Ray Train V2 runs on every worker of
a trial (``TorchTrainer(train_loop_per_worker, ...)``). Ray touches it only through the
:class:`~seqablate.trainables.session.Session` it gets (marked ``# [ray]`` below): prepare the
model and the loader, report metrics + checkpoint, get the checkpoint to resume from.
:func:`fit_trial` runs the very same function in this process with a
:class:`~seqablate.trainables.session.LocalSession` (``seqablate train CONFIG.yaml``).

The ``config`` dict a worker gets::

    {"trial": TrialConfig as a JSON-able dict,
     "run": {"split": {"train": [...], "val": [...], "test": [...]},   # patient ids
             "cpus_per_worker": 1,          # torch threads
             "tracking": {...} | None,      # MLflow child run to log into (rank 0), or None
             "evaluate": True,              # evaluate the best model at the end (rank 0)
             "fail_at_step": None}}         # test hook: raise at that step (failure handling)

After the last step, rank 0 evaluates the best weights (``evaluate.evaluate_model``: test
patients under every censoring condition, plus ``eval.external`` cohorts) on the worker's
own device (the GPU on a cluster), logs metrics, PR curves, the per-lesion CSV and the best
model to the trial's MLflow run, and reports the test metrics in one last report. A worker
restarted after a failure past the last step resumes straight into this evaluation.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqablate.config import TrialConfig, parse
from seqablate.trainables.checkpoint import TrainState, read_state, save_checkpoint
from seqablate.trainables.cohort import TrialSplit, load_cached, original_mask, plan_split, select
from seqablate.trainables.inference import _autocast, predict_volume
from seqablate.trainables.losses import segmentation_loss
from seqablate.trainables.sampling import DistributedWeightedSampler
from seqablate.trainables.schedule import build_optimizer
from seqablate.trainables.session import LocalSession, RaySession, Session


class InjectedFailure(RuntimeError):
    """Raised by the ``run.fail_at_step`` test hook (exercises failure handling)."""


def worker_config(
    cfg: TrialConfig,
    split: TrialSplit,
    *,
    cpus_per_worker: int = 1,
    tracking: dict[str, Any] | None = None,
    evaluate: bool = True,
    fail_at_step: int | None = None,
) -> dict[str, Any]:
    """The config dict :func:`train_loop_per_worker` expects (JSON-able; Ray ships it)."""
    return {
        "trial": cfg.model_dump(mode="json"),
        "run": {
            "split": split.as_dict(),
            "cpus_per_worker": max(1, int(cpus_per_worker)),
            "tracking": tracking,
            "evaluate": evaluate,
            "fail_at_step": fail_at_step,
        },
    }


def _set_threads(cpus: int | None) -> None:
    """Use as many intra-op threads as CPUs the worker was given (Ray reserves them)."""
    n = max(1, int(cpus or 1))
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


class _Rescale:
    """The presence rule with nothing dropped (scales patients that lack a sequence)."""

    def __init__(self, sequences: tuple[str, ...]) -> None:
        self.sequences = sequences

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        from seqablate.data.dropout import censor

        return censor(sample, (), self.sequences)


def _reseed_worker(worker_id: int) -> None:
    """DataLoader workers get distinct dropout streams (they start as copies of the parent)."""
    info = torch.utils.data.get_worker_info()
    tf = getattr(info.dataset, "transform", None) if info is not None else None
    if info is not None and hasattr(tf, "rng"):
        tf.rng = np.random.default_rng([info.seed % 2**32, worker_id])


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([torch.as_tensor(s["image"]) for s in samples]),
        "present": torch.stack([torch.as_tensor(s["present"]) for s in samples]),
        "mask": torch.stack([torch.as_tensor(s["mask"]) for s in samples]),
    }


def _open_logger(tracking: dict[str, Any] | None, rank: int) -> Any:
    """The MLflow logger of the trial's child run (rank 0 only), or None.

    ``tracking`` = ``{"tracking_uri": ..., "run_id": ...}``: the run is created (and closed)
    by the trial driver; workers only append metrics to it, buffered.
    """
    if not tracking or rank != 0:
        return None
    from seqablate.tracking import RunLogger

    return RunLogger(tracking["tracking_uri"], tracking["run_id"], flush_every=200, flush_seconds=15.0)


@dataclass
class _Validation:
    """Validation patients with their original-grid masks (loaded once)."""

    patients: list[Any]
    truths: list[np.ndarray]
    spacings: list[tuple[float, float, float]]
    censor: tuple[str, ...]


def validate(model: torch.nn.Module, val: _Validation, cfg: TrialConfig, device: torch.device, amp: bool) -> dict[str, float]:
    """Lesion-level validation metrics (keys ``val.mAP``, ...) of the bare model."""
    from seqablate.metrics import detection_metrics

    if not val.patients:
        return {}
    probs = [
        predict_volume(model, p, slices=cfg.data.slices, censor=val.censor,
                       batch_size=cfg.eval.batch_size, device=device, amp=amp)
        for p in val.patients
    ]
    res = detection_metrics(probs, val.truths, val.spacings, threshold=cfg.eval.threshold,
                            max_distance_mm=cfg.eval.max_distance_mm,
                            patient_ids=[p.patient_id for p in val.patients])
    out = {"val.mAP": float(res.mAP), "val.max_sensitivity": float(res.max_sensitivity)}
    if res.tp_dice is not None and not math.isnan(float(res.tp_dice)):
        out["val.tp_dice"] = float(res.tp_dice)
    return out


def train_loop_per_worker(config: dict[str, Any], session: Session | None = None) -> None:
    """Train one trial on this worker (Ray Train V2 entry point; see the module docstring)."""
    session = session if session is not None else RaySession()  # [ray] rank, device
    cfg = parse(TrialConfig, config["trial"], source="trial config")
    run = config.get("run", {})
    t = cfg.train
    _set_threads(run.get("cpus_per_worker"))
    rank = session.world_rank
    device = session.device
    on_gpu = device.type == "cuda"
    amp = on_gpu and t.amp in ("auto", "bf16")

    # --- data: cached patients of this trial's split --------------------------------------
    from seqablate.data.dataset import SliceDataset, slice_weights
    from seqablate.data.dropout import SequenceDropout

    split = TrialSplit.from_dict(run["split"])
    patients = load_cached(cfg.data)
    train_p = select(patients, split.train)
    val_p = select(patients, split.val)
    val = _Validation(val_p, [original_mask(p) for p in val_p], [tuple(p.spacing) for p in val_p], tuple(t.val_censor))

    # --- model + optimiser ------------------------------------------------------------------
    torch.manual_seed(t.seed)  # same init on every rank (DDP also broadcasts rank 0's)
    from seqablate.models import build_model

    model = build_model(cfg.model, seed=t.seed)
    if on_gpu and t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = session.prepare_model(model)  # [ray] device + DDP
    bare = getattr(model, "module", model)
    optimizer, scheduler = build_optimizer(list(model.parameters()), t)
    state = TrainState()
    best_state: dict[str, torch.Tensor] | None = None
    saliency_acc = None
    if t.saliency_every:
        from seqablate.saliency import SaliencyAccumulator

        saliency_acc = SaliencyAccumulator(cfg.data.sequences, cfg.data.slices)

    resumed_from: int | None = None  # [infra] step of the checkpoint this worker resumed from
    with session.resume_checkpoint() as ckpt:  # [ray] get_checkpoint
        if ckpt is not None:
            bare.load_state_dict(torch.load(ckpt / "model.pt", map_location=device, weights_only=True))
            opt_state = torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=False)
            optimizer.load_state_dict(opt_state["optimizer"])
            scheduler.load_state_dict(opt_state["scheduler"])
            best_state = torch.load(ckpt / "best_model.pt", map_location="cpu", weights_only=True)
            state = read_state(ckpt)
            resumed_from = state.step
            if saliency_acc is not None and (ckpt / "saliency.pt").is_file():
                saliency_acc.load_state_dict(torch.load(ckpt / "saliency.pt", weights_only=False))

    # --- loader: lesion oversampling, per-rank stream, dropout in the data path ------------
    # The presence rule (zero missing/dropped sequences, scale the rest by S/S_present) is
    # applied per sample, in the data path: by SequenceDropout, or by censor(nothing).
    seqs = tuple(cfg.data.sequences)
    stream_seed = [t.seed, rank, state.step]
    if t.dropout_p > 0:  # 0 = off, whatever the mode
        transform: Any = SequenceDropout(
            p=t.dropout_p, mode=t.dropout_mode,
            seed=int(np.random.SeedSequence(stream_seed + [1]).generate_state(1)[0]))
    else:
        transform = _Rescale(seqs)
    base = SliceDataset(train_p, slices=cfg.data.slices, transform=transform)
    sampler = DistributedWeightedSampler(slice_weights(base, oversample=cfg.data.oversample),
                                         rank=rank, seed=t.seed, start=state.step)
    loader = torch.utils.data.DataLoader(
        base, batch_size=t.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
        collate_fn=_collate, drop_last=True,
        worker_init_fn=_reseed_worker if cfg.data.num_workers else None,
    )
    loader = session.prepare_data_loader(loader)  # [ray]
    batches = iter(loader)

    logger = _open_logger(run.get("tracking"), rank)
    if logger is not None and resumed_from is not None:
        # [infra] Record where a restarted worker picked up, so a resume from a checkpoint
        # is visible in MLflow (tests/infra/test_infra_multinode.py checks it is not step 0).
        logger.log_metrics({"train.resumed_from_step": float(resumed_from)}, step=resumed_from)
    loss_fn = lambda logits, target: segmentation_loss(logits, target, dice_weight=t.dice_weight)  # noqa: E731
    ckpt_every = t.checkpoint_every or t.val_every
    fail_at = run.get("fail_at_step")
    window: list[float] = []
    t0 = time.perf_counter()
    model.train()
    progress = _progress(rank, state.step, t.steps, cfg.name)
    while state.step < t.steps:
        batch = next(batches)
        image = batch["image"].to(device, non_blocking=True)  # [B, S, K, H, W]
        present = batch["present"].to(device)  # [B, S]
        target = batch["mask"].to(device).float().unsqueeze(1)  # [B, 1, H, W]
        with _autocast(device, amp):
            logits = model(image, present)
        loss = loss_fn(logits, target)
        if cfg.model.sharing == "l2_tied" and t.tie_lambda > 0:
            loss = loss + t.tie_lambda * bare.tie_penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        state.step += 1
        step = state.step
        window.append(float(loss.detach()))
        if fail_at is not None and step == int(fail_at):
            raise InjectedFailure(f"injected failure at step {step} (run.fail_at_step)")
        step_metrics: dict[str, float] = {"train.loss": window[-1], "train.lr": scheduler.get_last_lr()[0]}
        if saliency_acc is not None and (step % t.saliency_every == 0 or step == 1):
            step_metrics.update(_saliency(bare, image, present, target, loss_fn, saliency_acc, step, cfg))
        if logger is not None:
            logger.log_metrics(step_metrics, step=step)
        progress.update(1)

        is_val = step % t.val_every == 0 or step == t.steps
        is_ckpt = step % ckpt_every == 0 or step == t.steps
        if not (is_val or is_ckpt):
            continue
        metrics: dict[str, float] = {"step": step, "train.loss": float(np.mean(window)),
                                     "time_s": time.perf_counter() - t0}
        window = []
        if is_val and rank == 0:
            v = validate(bare, val, cfg, device, amp)
            metrics.update(v)
            score = v.get("val.mAP", float("nan"))
            # >= : on ties (e.g. mAP 0 early on) the later, longer-trained weights win.
            if best_state is None or (not math.isnan(score) and score >= state.best_metric):
                state.best_metric = score if not math.isnan(score) else state.best_metric
                state.best_step = step
                best_state = {k: x.detach().cpu().clone() for k, x in bare.state_dict().items()}
            if logger is not None:
                logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("val.")}, step=step)
        # Every report carries the objective, so Tune's schedulers/searchers always find it.
        metrics["val.best_mAP"] = _best(state)
        if saliency_acc is not None:
            metrics.update(saliency_acc.to_metrics("saliency"))
        if is_ckpt:
            with tempfile.TemporaryDirectory(prefix="seqablate-ckpt-") as tmp:
                folder = None
                if rank == 0:  # one copy of the weights; other ranks report metrics only
                    folder = save_checkpoint(Path(tmp), model=model, best_state=best_state,
                                             optimizer=optimizer, scheduler=scheduler, state=state,
                                             cfg=cfg, saliency=saliency_acc.state_dict() if saliency_acc else None)
                session.report(metrics, folder)  # [ray] report (+ checkpoint)
        else:
            session.report(metrics, None)  # [ray]
    progress.close()
    if run.get("evaluate", True):
        final: dict[str, float] = {"step": state.step, "evaluated": 1.0, "val.best_mAP": _best(state)}
        if rank == 0:
            final.update(_evaluate_best(bare, best_state, cfg, patients, split, device, logger))
        session.report(final, None)  # [ray] every rank reports (it is a barrier)
    if logger is not None:
        logger.flush()


def _best(state: TrainState) -> float:
    """Best validation mAP so far (0 before any validation: Tune needs a number)."""
    return float(state.best_metric) if state.best_step >= 0 and math.isfinite(state.best_metric) else 0.0


def _evaluate_best(model: torch.nn.Module, best_state: dict[str, torch.Tensor] | None, cfg: TrialConfig,
                   patients: list[Any], split: TrialSplit, device: torch.device, logger: Any) -> dict[str, float]:
    """Evaluate the best weights on the test split and external cohorts; log to MLflow."""
    import copy

    from seqablate.trainables.evaluate import evaluate_model

    best = copy.deepcopy(model)
    if best_state is not None:
        best.load_state_dict(best_state)
    best.eval()
    externals = {name: load_cached(cfg.data, cohort=path) for name, path in cfg.eval.external.items()}
    report = evaluate_model(best, cfg, select(patients, split.test), externals=externals, device=device)
    metrics = report.metrics
    if logger is not None:
        logger.log_metrics(metrics, step=cfg.train.steps)
        with tempfile.TemporaryDirectory(prefix="seqablate-eval-") as tmp:
            for path in report.write_artifacts(Path(tmp) / "eval"):
                logger.log_artifact(path, "eval")
            torch.save({k: v.detach().cpu() for k, v in best.state_dict().items()}, Path(tmp) / "best_model.pt")
            logger.log_model_checkpoint(Path(tmp) / "best_model.pt", config=cfg)
        logger.flush()
    return metrics


def _progress(rank: int, start: int, total: int, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"train {name}", disable=rank != 0,
                mininterval=5.0, leave=False)


def _saliency(model: torch.nn.Module, image: torch.Tensor, present: torch.Tensor, target: torch.Tensor,
              loss_fn: Any, acc: Any, step: int, cfg: TrialConfig) -> dict[str, float]:
    """Saliency aggregates of this batch (per sequence and slice offset), plus cumulative sums."""
    from seqablate.saliency import saliency_aggregates

    res = saliency_aggregates(model, image, present, target, loss_fn)
    acc.update(res, step)
    return acc.to_metrics("saliency")


@dataclass
class FitResult:
    """Outcome of one trial's training."""

    checkpoint: Path  # latest checkpoint folder (holds best_model.pt)
    state: TrainState  # step / best validation mAP / best step
    history: list[dict[str, Any]] = field(default_factory=list)  # reported metrics, in order
    split: TrialSplit | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # test./external. metrics (if evaluated)


def fit_trial(
    trial_cfg: TrialConfig | dict[str, Any],
    *,
    storage: str | Path,
    split: TrialSplit | None = None,
    tracking: dict[str, Any] | None = None,
    use_gpu: bool = True,
    cpus: int | None = None,
    evaluate: bool = True,
    fail_at_step: int | None = None,
) -> FitResult:
    """Run :func:`train_loop_per_worker` in this process, without Ray.

    ``storage`` holds the checkpoints; if it already holds some, training resumes from the
    newest (at its saved step). ``split`` defaults to :func:`plan_split` of the cohort.
    """
    cfg = parse(TrialConfig, trial_cfg, source="trial config")
    if split is None:
        split = plan_split(cfg, load_cached(cfg.data, progress=True))
    session = LocalSession(storage, use_gpu=use_gpu)
    config = worker_config(cfg, split, cpus_per_worker=cpus or torch.get_num_threads(),
                           tracking=tracking, evaluate=evaluate, fail_at_step=fail_at_step)
    train_loop_per_worker(config, session)
    last = session.checkpoints()[-1]
    final = session.reported[-1] if session.reported and "evaluated" in session.reported[-1] else {}
    return FitResult(checkpoint=last, state=read_state(last), history=session.reported, split=split,
                     metrics={k: v for k, v in final.items() if k.startswith(("test.", "external."))})
