"""The per-worker training function, and the same function run without Ray.

:func:`train_loop_per_worker` is one plain function that Ray Train V2 runs on every worker of
a trial (``TorchTrainer(train_loop_per_worker, ...)``). It reads like Ray's examples: it calls
named steps (restore, loader, step, validate-and-keep-best, checkpoint, evaluate), and Ray
touches it only through the :class:`~seqablate.trainables.session.Session` it gets (marked
``# [ray]``): prepare the model and the loader, report metrics + checkpoint, get the
checkpoint to resume from. :func:`fit_trial` runs the very same function in this process with
a :class:`~seqablate.trainables.session.LocalSession` (``seqablate train CONFIG.yaml``).

The ``config`` dict a worker gets is ``{"trial": TrialConfig as JSON, "run": WorkerRun as
JSON}`` (:func:`worker_config`).

Where the time goes: the loop books every block to a phase of one
:class:`~seqablate.timing.PhaseTimer` (start-up, data, batches, steps, saliency,
validation, statistics, evaluation, bootstrap, checkpoint, logging); rank 0 logs the seconds
as ``time.<phase>`` at the end and puts them in the final report, and the trial's driver (the
Tune driver, or :func:`fit_trial`) adds ``time.other`` and ``time.total`` when it ends.

Order of the last step: the weights to evaluate are selected (``train.select``), per-subset
BatchNorm statistics are estimated for them (BatchNorm models), the final checkpoint is
reported, then rank 0 evaluates (test conditions, external cohorts), logs metrics, curves,
per-lesion tables and the model to the trial's MLflow run, and reports the test metrics in
one last report. A worker restarted after the final checkpoint resumes straight into the
evaluation. Metrics are flushed to MLflow before every checkpoint is reported, so a worker
that resumes from a checkpoint leaves no hole in the metric history.
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqablate import metric_names as mn
from seqablate.config import TrialConfig, parse
from seqablate.evaluation.checkpoint import TrainState, read_checkpoint, read_state, save_checkpoint
from seqablate.evaluation.cohort import (
    TrialSplit,
    load_cached,
    original_mask,
    plan_geometry,
    plan_split,
    select,
    split_record,
)
from seqablate.timing import DriverClock, PhaseTimer, Timed, close_books
from seqablate.trainables.losses import segmentation_loss
from seqablate.trainables.sampling import DistributedWeightedSampler
from seqablate.trainables.schedule import build_optimizer
from seqablate.trainables.session import LocalSession, RaySession, Session
from seqablate.vocabulary import PER_SUBSET


class InjectedFailure(RuntimeError):
    """Raised by :class:`FaultPlan` ``fail_at_step`` (exercises failure handling)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the learning rate."""


@dataclass(frozen=True)
class FaultPlan:
    """Fault injection for the reliability tests; never set in a normal run.

    ``fail_at_step``: raise :class:`InjectedFailure` right after that optimiser step, each
    time the step is reached (a trial that keeps failing). ``kill_at_step``: SIGKILL this
    worker process at that step, after its metrics were flushed to MLflow and before the
    step's checkpoint is reported (the window a crash can hit); it fires once, recorded by
    creating ``once_file``, so the restarted worker runs through. ``settle_s``: seconds to
    wait before the kill, so that Ray Train's controller (which polls its workers) has
    registered the previous checkpoint and the restart resumes from it rather than from an
    older one.
    """

    fail_at_step: int | None = None
    kill_at_step: int | None = None
    once_file: str | None = None
    settle_s: float = 0.0

    def after_step(self, step: int) -> None:
        if self.fail_at_step is not None and step == self.fail_at_step:
            raise InjectedFailure(f"injected failure at step {step} (FaultPlan.fail_at_step)")

    def before_checkpoint(self, step: int) -> None:
        if self.kill_at_step is None or step != self.kill_at_step:
            return
        if self.once_file is not None:
            marker = Path(self.once_file)
            if marker.exists():
                return
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"killed pid {os.getpid()} at step {step}\n")
        time.sleep(self.settle_s)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class WorkerRun:
    """How one trial's workers run (everything but the trial config)."""

    split: TrialSplit
    cpus_per_worker: int = 1  # torch threads per worker (Ray reserves the CPUs)
    tracking: dict[str, str] | None = None  # {"tracking_uri", "run_id"}: the trial's MLflow run
    evaluate: bool = True  # evaluate the selected model at the end (rank 0)
    faults: FaultPlan = field(default_factory=FaultPlan)
    # the driver's start (wall clock) and the phases it booked first (DriverClock.for_worker)
    timing: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split.as_dict(), "cpus_per_worker": self.cpus_per_worker,
                "tracking": self.tracking, "evaluate": self.evaluate, "faults": asdict(self.faults),
                "timing": self.timing}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkerRun:
        return cls(TrialSplit.from_dict(d["split"]), max(1, int(d.get("cpus_per_worker") or 1)),
                   d.get("tracking"), bool(d.get("evaluate", True)), FaultPlan(**(d.get("faults") or {})),
                   d.get("timing"))


def worker_config(cfg: TrialConfig, run: WorkerRun) -> dict[str, Any]:
    """The config dict :func:`train_loop_per_worker` expects (JSON-able; Ray ships it)."""
    return {"trial": cfg.model_dump(mode="json"), "run": run.to_dict()}


# ------------------------------------------------------------------------------------ steps


@dataclass
class Trainer:
    """The model being trained and everything that updates it."""

    model: torch.nn.Module  # as prepared by the session (DDP-wrapped on several workers)
    bare: torch.nn.Module  # the SeqSegModel itself
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    amp: bool


@dataclass
class Progress:
    """What a checkpoint restores: counters, the best weights, saliency, norm statistics."""

    state: TrainState = field(default_factory=TrainState)
    best_state: dict[str, torch.Tensor] | None = None  # weights at state.best_step (CPU)
    saliency: Any = None  # SaliencyAccumulator, or None when off
    norm_stats: dict[str, dict[str, torch.Tensor]] | None = None  # after the last step
    resumed_from: int | None = None  # step of the checkpoint this worker resumed from


@dataclass
class TrialData:
    """The trial's cached patients by role."""

    patients: list[Any]
    train: list[Any]
    val: list[Any]
    val_truths: list[np.ndarray]


def load_trial_data(cfg: TrialConfig, split: TrialSplit) -> TrialData:
    patients = load_cached(cfg.data)
    val = select(patients, split.val)
    return TrialData(patients, select(patients, split.train), val, [original_mask(p) for p in val])


def build_trainer(cfg: TrialConfig, session: Session) -> Trainer:
    from seqablate.models import build_model
    from seqablate.models.inference import use_bf16

    t = cfg.train
    device = session.device
    torch.manual_seed(t.seed)  # same init on every rank (DDP also broadcasts rank 0's)
    model = build_model(cfg.model, seed=t.seed)
    if t.channels_last:  # faster on CUDA, and with oneDNN on the CPU (benchmarks/RESULTS.md, "Trial time")
        model = model.to(memory_format=torch.channels_last)
    model = session.prepare_model(model)  # [ray] device + DDP
    optimizer, scheduler = build_optimizer(list(model.parameters()), t)
    # One autocast decision for training, validation and evaluation (use_bf16; Predictor).
    amp = use_bf16(device, t.amp)
    return Trainer(model, getattr(model, "module", model), optimizer, scheduler, device, amp)


def restore(session: Session, trainer: Trainer, cfg: TrialConfig) -> Progress:
    """The progress of the checkpoint the session resumes from (or a fresh one)."""
    progress = Progress()
    if cfg.train.saliency_every:
        from seqablate.saliency import SaliencyAccumulator

        progress.saliency = SaliencyAccumulator(cfg.data.sequences, cfg.data.slices)
    with session.resume_checkpoint() as folder:  # [ray] get_checkpoint
        if folder is None:
            return progress
        ckpt = read_checkpoint(folder, device=trainer.device)
        trainer.bare.load_state_dict(ckpt.model)
        trainer.optimizer.load_state_dict(ckpt.optimizer["optimizer"])
        trainer.scheduler.load_state_dict(ckpt.optimizer["scheduler"])
        progress.state, progress.best_state, progress.norm_stats = ckpt.state, ckpt.best, ckpt.norm_stats
        progress.resumed_from = ckpt.state.step
        if progress.saliency is not None and ckpt.saliency is not None:
            progress.saliency.load_state_dict(ckpt.saliency)
    return progress


def make_batches(cfg: TrialConfig, train: list[Any], session: Session, start: int) -> Any:
    """An endless iterator of training batches: lesion oversampling, a per-rank stream that a
    resumed run continues from ``start``, sequence dropout in the data path."""
    from seqablate.config import dropout_active
    from seqablate.data.dataset import SliceDataset, slice_weights
    from seqablate.data.dropout import SequenceDropout

    t, rank = cfg.train, session.world_rank
    # The presence rule (zero missing/dropped sequences, scale the rest by S/S_present) is
    # applied per sample: by SequenceDropout, or with p = 0 only to sequences missing on disk.
    seed = int(np.random.SeedSequence([t.seed, rank, start, 1]).generate_state(1)[0])
    on = dropout_active(t.dropout_p)  # p = 0 switches 'uniform' off too
    transform = SequenceDropout(p=t.dropout_p if on else 0.0, mode=t.dropout_mode if on else "bernoulli",
                                seed=seed, sequences=cfg.data.sequences)
    patch_seed = int(np.random.SeedSequence([t.seed, rank, start, 2]).generate_state(1)[0])
    base = SliceDataset(train, slices=cfg.data.slices, transform=transform, patch=patch_size(cfg), seed=patch_seed)
    sampler = DistributedWeightedSampler(slice_weights(base, oversample=cfg.data.oversample),
                                         rank=rank, seed=t.seed, start=start)
    loader = torch.utils.data.DataLoader(
        base, batch_size=t.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
        collate_fn=_collate, drop_last=True,
        worker_init_fn=_reseed_worker if cfg.data.num_workers else None,
    )
    return iter(session.prepare_data_loader(loader))  # [ray]


def train_step(trainer: Trainer, batch: dict[str, torch.Tensor], cfg: TrialConfig, step: int) -> tuple[float, tuple]:
    """One optimiser step; returns the loss and the batch on the device (for saliency).

    Raises :class:`TrainingDiverged` when the loss is not finite (a learning rate too high,
    or bad inputs): training on would only spread NaN through the weights.
    """
    t = cfg.train
    image = batch["image"].to(trainer.device, non_blocking=True)  # [B, S, K, H, W]
    present = batch["present"].to(trainer.device)  # [B, S]
    target = batch["mask"].to(trainer.device).float().unsqueeze(1)  # [B, 1, H, W]
    with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=trainer.amp):
        logits = trainer.model(image, present)
    loss = segmentation_loss(logits, target, dice_weight=t.dice_weight)
    if cfg.model.sharing == "l2_tied" and t.tie_lambda > 0:
        loss = loss + t.tie_lambda * trainer.bare.tie_penalty()
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"the training loss is {float(loss.detach())} at step {step} (train.lr={t.lr}, "
            f"train.dice_weight={t.dice_weight}); lower train.lr or check the inputs"
        )
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    trainer.scheduler.step()
    return float(loss.detach()), (image, present, target)


def validation_conditions(cfg: TrialConfig) -> list[tuple[str, tuple[str, ...]]]:
    """``(condition, censored sequences)`` of every ``train.val_conditions`` entry."""
    from seqablate.objectives import condition_censored

    return [(c, condition_censored(c, cfg.data.sequences)) for c in cfg.train.val_conditions]


def check_validation(cfg: TrialConfig, data: TrialData) -> None:
    """Refuse, before any training, a validation condition under which no validation patient
    keeps a sequence (its mAP, hence the objective, would be undefined at every validation)."""
    from seqablate.evaluation.evaluate import has_input

    if not data.val:
        return
    for name, censored in validation_conditions(cfg):
        if not any(has_input(p, censored) for p in data.val):
            raise ValueError(
                f"train.val_conditions: under {name!r} no validation patient has a sequence left "
                f"(validation patients: {[p.patient_id for p in data.val]}); drop the condition or change the split"
            )


def validate(trainer: Trainer, data: TrialData, cfg: TrialConfig) -> dict[str, float]:
    """Lesion-level validation metrics of the current weights under every validation
    condition (``val.<condition>.mAP``, ``.max_sensitivity``, ``.tp_dice``) and the trial's
    objective (``val.objective``; ``val.mAP`` is the same number under its first name).

    Uses the test's norm policy: with ``eval.norm_stats: per_subset`` a BatchNorm model is
    validated with statistics re-estimated, on a copy, for every sequence subset the
    validation patients have under the conditions (estimated once for all conditions). A
    patient left without a sequence under a condition is not scored under it (as in
    evaluation). Empty dict without validation patients.
    """
    from seqablate import objectives
    from seqablate.data.cache import to_original_grid
    from seqablate.evaluation.evaluate import detect, has_input
    from seqablate.metrics.detection import DetectionResult
    from seqablate.models.deployed import DeployedModel
    from seqablate.models.inference import Predictor

    if not data.val:
        return {}
    conditions = validation_conditions(cfg)
    stats = (_norm_stats_for(trainer.bare, data, cfg, [c for _, c in conditions])
             if cfg.eval.norm_stats == PER_SUBSET else None)
    deployed = DeployedModel(trainer.bare, norm_stats=stats, policy=cfg.eval.norm_stats)
    predictor = Predictor(deployed, device=trainer.device, batch_size=cfg.eval.batch_size, amp=cfg.train.amp)
    # One patient at a time, every condition in one pass (its slices read, an input-level
    # stem convolved, once); only the detections are kept.
    found: dict[str, list[Any]] = {name: [] for name, _ in conditions}
    for i, patient in enumerate(data.val):
        mine = [(name, censored) for name, censored in conditions if has_input(patient, censored)]
        vols = predictor.predict_many(patient, [c for _, c in mine])
        for (name, _), vol in zip(mine, vols, strict=True):
            prob = to_original_grid(vol, patient, above=cfg.eval.threshold)  # scored at that threshold
            found[name].append(detect(prob, data.val_truths[i], tuple(patient.spacing), str(patient.patient_id), cfg))
    out: dict[str, float] = {}
    maps: dict[str, float] = {}
    for name, _ in conditions:
        res = DetectionResult.from_patients(found[name], threshold=cfg.eval.threshold,
                                            max_distance_mm=cfg.eval.max_distance_mm)
        maps[name] = float(res.mAP)
        out[mn.val_key(name, "mAP")] = float(res.mAP)
        out[mn.val_key(name, "max_sensitivity")] = float(res.max_sensitivity)
        if res.tp_dice is not None and not math.isnan(float(res.tp_dice)):
            out[mn.val_key(name, "tp_dice")] = float(res.tp_dice)
    t = cfg.train
    objective = objectives.objective_value(t.objective, t.val_conditions, maps)
    out[mn.VAL_OBJECTIVE] = out[mn.VAL_MAP] = objective
    # A multi-objective trial: every objective, numbered from 1 (1 is the one above).
    for i, obj in enumerate(t.objectives, start=1):
        out[mn.objective_key(i)] = objectives.objective_value(obj, t.val_conditions, maps)
    # The first names of the selection condition's other numbers, where there is one condition.
    chosen = objectives.selection_condition(t.objective, t.val_conditions)
    for metric in ("max_sensitivity", "tp_dice"):
        if chosen is not None and mn.val_key(chosen, metric) in out:
            out[f"val.{metric}"] = out[mn.val_key(chosen, metric)]
    return out


def _norm_stats_for(model: torch.nn.Module, data: TrialData, cfg: TrialConfig,
                    censored: list[tuple[str, ...]]) -> Any:
    from seqablate import timing
    from seqablate.evaluation.norm import estimate_norm_stats, patient_subsets
    from seqablate.models.norm_stats import has_batchnorm

    if not has_batchnorm(model):
        return None
    keys = [k for c in censored for k in patient_subsets(data.val, cfg.data.sequences, c)]
    with timing.phase("norm_stats"):  # statistics, wherever estimated, are one phase
        stats, _ = estimate_norm_stats(model, data.train, cfg, list(dict.fromkeys(keys)),
                                       device=next(model.parameters()).device, seed=cfg.train.seed)
    return stats


def keep_best(progress: Progress, trainer: Trainer, metrics: dict[str, float], step: int, cfg: TrialConfig) -> None:
    """Record a validation; keep a copy of the weights when its objective (``val.objective``,
    the number Tune and Optuna see too) is the best so far. A NaN objective is never a best
    (but the first validation is recorded, so there is always a selected step).

    A multi-objective trial selects by the first objective alone (it is ``val.objective``); the
    state records every objective's value at the selected step (``selected``: what the selected
    weights do; with ``train.select: last`` the latest validation's, as the latest weights are
    evaluated) and each objective's own best so far (``bests``)."""
    score = metrics.get(mn.VAL_OBJECTIVE, float("nan"))
    st = progress.state
    values = [float(metrics.get(mn.objective_key(i), math.nan)) for i in range(1, len(cfg.train.objectives) + 1)]
    if values:
        # Each objective's own best, whichever validation it comes from (NaN never counts).
        old = st.bests if len(st.bests) == len(values) else [math.nan] * len(values)
        st.bests = [v if math.isnan(b) or (not math.isnan(v) and v > b) else b for b, v in zip(old, values, strict=True)]
    # >= : on ties (e.g. mAP 0 early on) the later, longer-trained weights win.
    if cfg.train.select == "last":
        st.selected = values  # the weights evaluated are the latest: what they do
    if st.best_step < 0 or (not math.isnan(score) and score >= st.best_metric):
        st.best_metric = score if not math.isnan(score) else st.best_metric
        st.best_step = step
        if cfg.train.select == "best":
            st.selected = values  # what the selected weights do under every objective
            progress.best_state = {k: x.detach().cpu().clone() for k, x in trainer.bare.state_dict().items()}


def select_final(progress: Progress, trainer: Trainer, cfg: TrialConfig) -> tuple[dict[str, torch.Tensor], int]:
    """The weights to evaluate (``train.select``) and the step they come from."""
    if cfg.train.select == "best" and progress.best_state is not None:
        return progress.best_state, progress.state.best_step
    return {k: x.detach().cpu().clone() for k, x in trainer.bare.state_dict().items()}, progress.state.step


def estimate_final_stats(weights: dict[str, torch.Tensor], trainer: Trainer, data: TrialData, cfg: TrialConfig) -> Any:
    """Per-subset BatchNorm statistics of the selected weights (None without BatchNorm)."""
    import copy

    from seqablate.evaluation.norm import estimate_norm_stats, norm_subsets
    from seqablate.models.norm_stats import has_batchnorm

    if not has_batchnorm(trainer.bare):
        return None
    model = copy.deepcopy(trainer.bare)
    model.load_state_dict(weights)
    stats, _ = estimate_norm_stats(model, data.train, cfg, norm_subsets(cfg), device=trainer.device,
                                   seed=cfg.train.seed)
    return stats


def checkpoint(session: Session, trainer: Trainer, progress: Progress, cfg: TrialConfig,
               metrics: dict[str, float], logger: Any, faults: FaultPlan) -> None:
    """Flush the metrics, then report them with a checkpoint (rank 0 writes the files)."""
    if logger is not None:
        logger.flush()  # before the checkpoint: a resume from it leaves no hole in the history
    faults.before_checkpoint(progress.state.step)
    with tempfile.TemporaryDirectory(prefix="seqablate-ckpt-") as tmp:
        folder = None
        if session.world_rank == 0:  # one copy of the weights; other ranks report metrics only
            folder = save_checkpoint(
                Path(tmp), model=trainer.bare, best_state=progress.best_state, optimizer=trainer.optimizer,
                scheduler=trainer.scheduler, state=progress.state, cfg=cfg,
                saliency=progress.saliency.state_dict() if progress.saliency else None,
                norm_stats=progress.norm_stats,
            )
        session.report(metrics, folder)  # [ray] report (+ checkpoint)


# ------------------------------------------------------------------------------------- loop


def train_loop_per_worker(config: dict[str, Any], session: Session | None = None,
                          timer: PhaseTimer | None = None) -> None:
    """Train one trial on this worker (Ray Train V2 entry point; see the module docstring).

    ``timer`` books the worker's time per phase (a fresh one by default; :func:`fit_trial`
    passes its own to read the phases back). It is closed when rank 0 has its ``time.<phase>``
    metrics: the final report and flush come after, as the driver's ``other``.
    """
    entered = time.time()  # wall clock, compared with the driver's start (timing module)
    timer = timer if timer is not None else PhaseTimer()
    with timer.active():
        _train(config, session, timer, entered)


def _train(config: dict[str, Any], session: Session | None, timer: PhaseTimer, entered: float) -> None:
    with timer.phase("startup"):  # everything before the first step that no other phase takes
        session = session if session is not None else RaySession()  # [ray] rank, device
        cfg = plan_geometry(parse(TrialConfig, config["trial"], source="trial config"))
        run = WorkerRun.from_dict(config["run"])
        timer.start_worker(run.timing, now=entered)
        t, rank = cfg.train, session.world_rank
        _set_threads(run.cpus_per_worker)

        with timer.phase("data"):
            data = load_trial_data(cfg, run.split)
        check_validation(cfg, data)
        trainer = build_trainer(cfg, session)
        progress = restore(session, trainer, cfg)
        timer.resume(progress.state.timing)  # a restarted worker keeps its predecessor's phases
        state = progress.state
        with timer.phase("batches"):
            batches = make_batches(cfg, data.train, session, state.step)
        with timer.phase("logging"):
            logger = _open_logger(run.tracking, rank)
        if logger is not None:
            logger = Timed(logger, timer, "logging")  # every MLflow call, wherever it is made
            # Which patients trained it, for evaluate and other tools (export-nnunet); rewritten
            # identically on a resume.
            logger.log_dict(split_record(cfg, run.split), mn.SPLIT_JSON)
            logger.log_metrics({mn.N_TRAIN: float(len(run.split.train))}, step=0)
        if logger is not None and progress.resumed_from is not None:
            # Where a restarted worker picked up: a resume from a checkpoint is visible in MLflow.
            logger.log_metrics({"train.resumed_from_step": float(progress.resumed_from)}, step=progress.resumed_from)

        ckpt_every = t.checkpoint_every or t.val_every
        window: list[float] = []
        t0 = time.perf_counter()
        trainer.model.train()
        bar = _progress(rank, state.step, t.steps, cfg.name)
    while state.step < t.steps:
        with timer.phase("batches"):
            batch = next(batches)
        with timer.phase("steps"):
            loss, (image, present, target) = train_step(trainer, batch, cfg, state.step + 1)
        state.step += 1
        step = state.step
        window.append(loss)
        run.faults.after_step(step)
        step_metrics = {"train.loss": loss, "train.lr": trainer.scheduler.get_last_lr()[0]}
        if progress.saliency is not None and (step % t.saliency_every == 0 or step == 1):
            with timer.phase("saliency"):
                step_metrics.update(_saliency(trainer.bare, image, present, target, progress.saliency, step, cfg))
        if logger is not None:
            logger.log_metrics(step_metrics, step=step)
        bar.update(1)

        is_last = step == t.steps
        is_val = step % t.val_every == 0 or is_last
        is_ckpt = step % ckpt_every == 0 or is_last
        if not (is_val or is_ckpt):
            continue
        metrics: dict[str, float] = {"step": step, "train.loss": float(np.mean(window)),
                                     "time_s": time.perf_counter() - t0}
        window = []
        if is_val and rank == 0:
            with timer.phase("validation"):
                v = validate(trainer, data, cfg)
                trainer.model.train()
                keep_best(progress, trainer, v, step, cfg)
            metrics.update(v)
            if logger is not None:
                # The best so far too: the analysis picks a seed by it, as the trial selected.
                logger.log_metrics({**v, mn.VAL_BEST_STEP: float(state.best_step), **_bests(state, len(t.objectives))}, step=step)
        if is_last and rank == 0 and run.evaluate:
            with timer.phase("norm_stats"):
                weights, _ = select_final(progress, trainer, cfg)
                progress.norm_stats = estimate_final_stats(weights, trainer, data, cfg)
        # Every report carries the objective, so Tune's schedulers/searchers always find it.
        metrics.update(_bests(state, len(t.objectives)))
        if progress.saliency is not None:
            metrics.update(progress.saliency.to_metrics())
        if is_ckpt:
            with timer.phase("checkpoint"):
                state.timing = timer.snapshot()
                checkpoint(session, trainer, progress, cfg, metrics, logger, run.faults)
        else:
            session.report(metrics, None)  # [ray]
    bar.close()
    final: dict[str, float] = {"step": state.step, "evaluated": 1.0, **_bests(state, len(t.objectives))}
    if run.evaluate and rank == 0:
        with timer.phase("evaluation"):
            final.update(evaluate_selected(trainer, progress, cfg, data, run.split, logger))
    phases = timer.close()  # what follows is the driver's "other"
    if run.evaluate:
        session.report({**final, **phases}, None)  # [ray] every rank reports (it is a barrier)
    if logger is not None:
        logger.log_metrics(phases, step=state.step)
        logger.flush()


def evaluate_selected(trainer: Trainer, progress: Progress, cfg: TrialConfig, data: TrialData,
                      split: TrialSplit, logger: Any) -> dict[str, float]:
    """Evaluate the selected weights on the test split and external cohorts; log to MLflow."""
    import copy

    from seqablate import timing
    from seqablate.evaluation.evaluate import evaluate_model

    weights, step = select_final(progress, trainer, cfg)
    model = copy.deepcopy(trainer.bare)
    model.load_state_dict(weights)
    model.eval()
    with timing.phase("data"):
        externals = {name: load_cached(cfg.data, cohort=path) for name, path in cfg.eval.external.items()}
    report = evaluate_model(model, cfg, select(data.patients, split.test), externals=externals,
                            device=trainer.device, norm_stats=progress.norm_stats)
    metrics = {**report.metrics, "train.selected_step": float(step)}
    if logger is not None:
        logger.log_metrics(metrics, step=cfg.train.steps)
        # Writing the artifacts (tables, the PR figure, the model's example) is logging too.
        with timing.phase("logging"), tempfile.TemporaryDirectory(prefix="seqablate-eval-") as tmp:
            for path in report.write_artifacts(Path(tmp) / "eval"):
                logger.log_artifact(path, "eval")
            logger.log_model(report.deployed, example=_example(cfg, data.val or data.train),
                             split=split_record(cfg, split))
        logger.flush()
    return metrics


# ---------------------------------------------------------------------------------- helpers


def _example(cfg: TrialConfig, patients: list[Any]) -> dict[str, np.ndarray]:
    """A small input example for the MLflow model's signature: two stacks of a patient."""
    from seqablate.data.dataset import patient_stacks

    p = patients[0]
    stacks = patient_stacks(p, cfg.data.slices)
    z = stacks.shape[0] // 2
    return {"image": np.ascontiguousarray(stacks[z : z + 2]),
            "present": np.repeat(np.asarray(p.present, dtype=bool)[None], 2, axis=0)}


def _set_threads(cpus: int | None) -> None:
    """Use as many intra-op threads as CPUs the worker was given (Ray reserves them)."""
    n = max(1, int(cpus or 1))
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


def patch_size(cfg: TrialConfig) -> int | None:
    """The training patch size (``spacing`` geometry: ``data.image_size``), or None for whole
    resized slices (``resize``)."""
    return cfg.data.image_size if cfg.data.geometry == "spacing" else None


def _reseed_worker(worker_id: int) -> None:
    """DataLoader workers get distinct dropout and patch streams (they start as copies of the
    parent)."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    tf = getattr(info.dataset, "transform", None)
    if hasattr(tf, "rng"):
        tf.rng = np.random.default_rng([info.seed % 2**32, worker_id])
    if hasattr(info.dataset, "rng"):
        info.dataset.rng = np.random.default_rng([info.seed % 2**32, worker_id, 2])


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([torch.as_tensor(s["image"]) for s in samples]),
        "present": torch.stack([torch.as_tensor(s["present"]) for s in samples]),
        "mask": torch.stack([torch.as_tensor(s["mask"]) for s in samples]),
    }


def _open_logger(tracking: dict[str, Any] | None, rank: int) -> Any:
    """The MLflow logger of the trial's child run (rank 0 only), or None.

    The run is created (and closed) by the trial driver; workers only append to it, buffered.
    """
    if not tracking or rank != 0:
        return None
    from seqablate.tracking import RunLogger

    return RunLogger(tracking["tracking_uri"], tracking["run_id"], flush_every=200, flush_seconds=15.0)


def _best(state: TrainState) -> float:
    """Best validation objective so far (0 before any validation: Tune needs a number)."""
    return float(state.best_metric) if state.best_step >= 0 and math.isfinite(state.best_metric) else 0.0


def _finite(v: float) -> float:
    return float(v) if math.isfinite(v) else 0.0


def _bests(state: TrainState, n_objectives: int = 0) -> dict[str, float]:
    """The best objective so far under its name (Tune's metric) and its first name; for a
    trial of ``n_objectives`` objectives also each one's value at the selected step
    (``val.selected_objective.<i>``: Optuna's objectives) and its own best
    (``val.best_objective.<i>``). Every report carries them (Tune refuses a result without a
    searched metric); as for the first, 0 where undefined (no validation yet, or a condition
    without a validation lesion): Tune needs a number."""
    best = _best(state)
    out = {mn.VAL_BEST_OBJECTIVE: best, mn.VAL_BEST: best}
    selected = state.selected if len(state.selected) == n_objectives else [math.nan] * n_objectives
    bests = state.bests if len(state.bests) == n_objectives else [math.nan] * n_objectives
    for i in range(1, n_objectives + 1):
        # With select: best, objective 1's selected value is its best (val.best_objective).
        out[mn.objective_key(i, "selected_objective")] = _finite(selected[i - 1])
        out[mn.objective_key(i, "best_objective")] = _finite(bests[i - 1])
    return out


def _progress(rank: int, start: int, total: int, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"train {name}", disable=rank != 0,
                mininterval=5.0, leave=False)


def _saliency(model: torch.nn.Module, image: torch.Tensor, present: torch.Tensor, target: torch.Tensor,
              acc: Any, step: int, cfg: TrialConfig) -> dict[str, float]:
    """Saliency aggregates of this batch (per sequence and slice offset), plus cumulative sums."""
    from seqablate.saliency import saliency_aggregates

    def loss_fn(logits: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(logits, tgt, dice_weight=cfg.train.dice_weight)

    acc.update(saliency_aggregates(model, image, present, target, loss_fn), step)
    return acc.to_metrics()


@dataclass
class FitResult:
    """Outcome of one trial's training."""

    checkpoint: Path  # latest checkpoint folder
    state: TrainState  # step / best validation objective (train.objective) / best step
    history: list[dict[str, Any]] = field(default_factory=list)  # reported metrics, in order
    split: TrialSplit | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # test./external. metrics (if evaluated)
    timing: dict[str, float] = field(default_factory=dict)  # time.<phase>, time.other, time.total (seconds)


def fit_trial(
    trial_cfg: TrialConfig | dict[str, Any],
    *,
    storage: str | Path,
    split: TrialSplit | None = None,
    tracking: dict[str, Any] | None = None,
    use_gpu: bool = True,
    cpus: int | None = None,
    evaluate: bool = True,
    faults: FaultPlan | None = None,
) -> FitResult:
    """Run :func:`train_loop_per_worker` in this process, without Ray.

    ``storage`` holds the checkpoints; if it already holds some, training resumes from the
    newest (at its saved step). ``split`` defaults to :func:`plan_split` of the cohort.

    This function is the trial's driver for the timing (:mod:`~seqablate.timing`):
    ``time.total`` runs from its start to the worker's end, the patients it loads to plan the
    split are ``data``; with ``tracking`` it logs ``time.other`` and ``time.total`` beside the
    worker's phases. A resumed run times this call only.
    """
    clock = DriverClock.start()
    cfg = plan_geometry(parse(TrialConfig, trial_cfg, source="trial config"))
    before: dict[str, float] = {}
    if split is None:
        loading = time.perf_counter()
        patients = load_cached(cfg.data, progress=True)
        before["data"] = time.perf_counter() - loading
        split = plan_split(cfg, patients)
    session = LocalSession(storage, use_gpu=use_gpu)
    run = WorkerRun(split, cpus_per_worker=cpus or torch.get_num_threads(), tracking=tracking,
                    evaluate=evaluate, faults=faults or FaultPlan(), timing=clock.for_worker(before))
    timer = PhaseTimer()
    train_loop_per_worker(worker_config(cfg, run), session, timer)
    last = session.checkpoints()[-1]
    phases = timer.metrics()  # closed by the worker: what it logged
    timing = {**phases, **close_books(phases, clock.elapsed())}
    logger = _open_logger(tracking, 0)
    if logger is not None:
        logger.log_metrics({k: v for k, v in timing.items() if k not in phases}, step=cfg.train.steps)
        logger.flush()
    final = session.reported[-1] if session.reported and "evaluated" in session.reported[-1] else {}
    return FitResult(checkpoint=last, state=read_state(last), history=session.reported, split=split,
                     metrics={k: v for k, v in final.items() if k.startswith(("test.", "external."))},
                     timing=timing)
