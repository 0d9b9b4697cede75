"""Where a study's trials spend their time, against the optimiser step measured alone.

Reads a study back from MLflow (a study folder, a ``train --out`` folder, an experiment name or
a parent run id, as ``seqablate report`` does) and prints:

* the per-phase table of its finished trials' ``time.<phase>`` metrics (median seconds per
  trial, and each phase's share of the trials' summed wall time);
* the isolated optimiser step of the same config, measured in this process: the trial's model
  built from the run's ``config.yaml``, a random batch of its batch size, sequences, slices and
  training patch size, ``--steps`` timed steps after ``--warmup``, ``--rounds`` times (median),
  through the loop's own ``train_step`` (forward, loss, backward, update), with the trial's
  torch threads (the study's ``cpus_per_worker``, else 1);
* the single ratio ``steps / trial wall time``: the trials' summed ``time.steps`` over their
  summed ``time.total``;
* with ``--startup-floor N``: Ray Train V2's own start-up, measured here: N ``TorchTrainer``
  fits of a function that only notes the time it was entered (one worker with the study's CPUs,
  a local Ray instance of this process), from ``fit()`` to that entry (the controller actor,
  the worker actor, the train context: no seqablate code runs), beside the trials' median
  ``time.startup``.

::

    .venv/bin/python benchmarks/bench_trial.py demo-out/study [--tracking-uri URI] [--run NAME]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqablate import metric_names as mn


def run_config(run_id: str, tracking_uri: str) -> Any:
    """The trial config a run logged (its ``config.yaml``)."""
    from seqablate import tracking
    from seqablate.config import TrialConfig, load_yaml

    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        path = tracking.download_artifact(run_id, tracking.CONFIG_ARTIFACT, tmp, tracking_uri=tracking_uri)
        return load_yaml(path, TrialConfig, stored=True)


def study_threads(folder: Path | None) -> int:
    """Torch threads a trial of the study trained with: its ``cpus_per_worker`` (study.yaml),
    else 1 (the default)."""
    if folder is not None:
        try:
            from seqablate.trainables.driver import load_study_config

            return max(1, int(load_study_config(folder).cpus_per_worker))
        except Exception:  # noqa: BLE001 - a train --out folder has no study.yaml
            pass
    return 1


def isolated_step(cfg: Any, *, steps: int, warmup: int, rounds: int, use_gpu: bool) -> tuple[float, str]:
    """Median seconds of one optimiser step of ``cfg``'s model alone, and what was timed."""
    from seqablate.trainables.loop import build_trainer, patch_size, train_step
    from seqablate.trainables.session import LocalSession

    size = patch_size(cfg) or cfg.data.image_size
    b, s, k = cfg.train.batch_size, len(cfg.data.sequences), cfg.data.slices
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(b, s, k, size, size, generator=gen),
             "present": torch.ones(b, s, dtype=torch.bool),
             "mask": (torch.rand(b, size, size, generator=gen) > 0.97).to(torch.uint8)}
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        trainer = build_trainer(cfg, LocalSession(tmp, use_gpu=use_gpu))
    trainer.model.train()
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for i in range(warmup):
        train_step(trainer, batch, cfg, i + 1)
    times = []
    for _ in range(rounds):
        sync()
        t = time.perf_counter()
        for i in range(steps):
            train_step(trainer, batch, cfg, warmup + i + 1)
        sync()
        times.append((time.perf_counter() - t) / steps)
    what = (f"{cfg.model.backbone} {cfg.model.integration}, batch {b}, {s} sequences x {k} slices x {size}x{size}, "
            f"{torch.get_num_threads()} thread(s), {trainer.device.type}")
    return statistics.median(times), what


def _note_entry(config: dict[str, Any]) -> None:
    """The empty train function: writes the time it was entered."""
    Path(config["out"]).write_text(repr(time.time()))


def train_startup_floor(fits: int, *, cpus: int) -> list[float]:
    """Seconds from ``TorchTrainer.fit()`` to the entry of a train function that does nothing,
    ``fits`` times, one worker of ``cpus`` CPUs on a local Ray instance started here."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    out: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        ray.init(num_cpus=max(2, cpus), include_dashboard=False, log_to_driver=False)
        try:
            for i in range(fits):
                mark = Path(tmp) / f"entry{i}"
                trainer = TorchTrainer(
                    _note_entry, train_loop_config={"out": str(mark)},
                    scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": cpus}),
                    run_config=ray.train.RunConfig(name=f"floor{i}", storage_path=str(Path(tmp) / "store")),
                )
                t0 = time.time()
                trainer.fit()
                out.append(float(mark.read_text()) - t0)
        finally:
            ray.shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", help="study folder, train --out folder, experiment name or parent run id")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--run", default=None, help="the run (name or id) whose config is timed (default: the first)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the study's cpus_per_worker)")
    ap.add_argument("--gpu", action="store_true", help="time the step on the GPU when there is one")
    ap.add_argument("--startup-floor", type=int, default=0, metavar="N",
                    help="also time N fits of an empty Ray Train V2 function (its start-up floor)")
    args = ap.parse_args()

    from seqablate.analysis.runs import timed_runs, timing_summary
    from seqablate.analysis.study import load_study

    data = load_study(args.study, tracking_uri=args.tracking_uri)
    timed = timed_runs(data.runs)
    if not timed:
        print(f"study {data.name}: no finished run logged time.* metrics (a study of an older seqablate?)",
              file=sys.stderr)
        return 2
    table = timing_summary(data.runs)
    finished = sum(r.usable for r in data.runs)
    print(f"study {data.name}: {len(timed)} timed trials of {finished} finished")
    print(f"  {'phase':<12} {'median s':>10} {'share':>8}")
    for row in table.itertuples(index=False):
        share = f"{100 * row.share:.1f} %" if row.share == row.share else "-"
        print(f"  {row.phase:<12} {row.median_s:>10.2f} {share:>8}")

    runs = [r for r in data.runs if r.name in timed]
    chosen = next((r for r in runs if args.run in (r.name, r.run_id)), None) if args.run else runs[0]
    if chosen is None:
        print(f"--run {args.run}: no timed run of that name or id; timed: {sorted(timed)}", file=sys.stderr)
        return 2
    cfg = run_config(chosen.run_id, data.tracking_uri)
    threads = args.threads or study_threads(data.folder)
    torch.set_num_threads(threads)
    step_s, what = isolated_step(cfg, steps=args.steps, warmup=args.warmup, rounds=args.rounds, use_gpu=args.gpu)
    print(f"isolated optimiser step of {chosen.name} ({what}): {step_s:.4f} s/step "
          f"(median of {args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up)")
    in_trial = [timed[r.name]["steps"] / float(r.params.get("train.steps", "nan")) for r in runs]
    in_trial = [v for v in in_trial if np.isfinite(v) and v > 0]
    if in_trial:
        med = statistics.median(in_trial)
        print(f"in-trial optimiser step: {med:.4f} s/step (median time.steps / train.steps), "
              f"{med / step_s:.2f}x the isolated one")
    totals = table.set_index("phase")["seconds"]
    median_total = float(table.set_index("phase").loc[mn.TIME_TOTAL, "median_s"])
    steps = int(cfg.train.steps)
    print(f"floor: {steps} isolated steps / the median trial's wall time: {steps * step_s / median_total:.3f}")
    print(f"steps / trial wall time: {totals['steps'] / totals[mn.TIME_TOTAL]:.3f}")
    if args.startup_floor > 0:
        floors = train_startup_floor(args.startup_floor, cpus=threads)
        floor = statistics.median(floors)
        startup = float(table.set_index("phase").loc["startup", "median_s"])
        print(f"Ray Train V2 start-up floor (fit() to an empty function's entry, {len(floors)} fits): "
              f"median {floor:.1f} s ({', '.join(f'{f:.1f}' for f in floors)}); the trials' median "
              f"time.startup {startup:.1f} s = {startup / floor:.2f}x the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
