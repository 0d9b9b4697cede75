"""GPU benchmark: training/inference throughput and MFU of input-level DeepLabv3-R50, and the
overhead of running the same loop as a 1-worker Ray Train trial.

    .venv/bin/python benchmarks/gpu_bench.py [--batch 32] [--steps 20] [--skip-compile] [--skip-ray]

Measures, at 256 x 256 with 4 sequences x 5 slices (20 input channels), bfloat16 autocast:

- training slices/s and model FLOPs utilisation (FLOPs of one forward + backward counted by
  ``torch.utils.flop_counter.FlopCounterMode``, divided by the GPU's dense bf16 peak) for
  eager / ``channels_last`` / ``torch.compile`` / both;
- inference slices/s (no grad, channels_last, bf16);
- one Ray Train trial (``TorchTrainer``, 1 GPU worker) running the same training steps vs the
  bare loop in this process: wall-time ratio (includes Ray's worker start-up) and steady-state
  per-step ratio.

Prints one table. Without a CUDA GPU it says so and exits 0. Target: < 8 minutes on one H100.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

#: Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, for MFU.
PEAKS = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
         "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}
SEQS = ("t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair")


def _peak(name: str) -> float | None:
    for frag, peak in PEAKS.items():
        if frag in name:
            return peak
    return None


def _model(channels_last: bool) -> Any:
    import torch

    from seqablate.models import build_model

    m = build_model({"backbone": "resnet50", "integration": "input", "sequences": list(SEQS), "slices": 5}, seed=0)
    m = m.cuda()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def _batch(batch: int, size: int = 256) -> tuple[Any, Any, Any]:
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, len(SEQS), 5, size, size, device="cuda", generator=g)
    p = torch.ones(batch, len(SEQS), dtype=torch.bool, device="cuda")
    y = (torch.rand(batch, 1, size, size, device="cuda", generator=g) > 0.99).float()
    return x, p, y


def _train_steps(model: Any, x: Any, p: Any, y: Any, steps: int) -> float:
    """Seconds for ``steps`` AdamW steps (bf16 autocast), after the caller's warm-up."""
    import torch
    import torch.nn.functional as F

    opt = getattr(model, "_bench_opt", None)
    if opt is None:
        opt = model._bench_opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x, p)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def _flops(batch: int) -> float:
    """FLOPs of one training forward + backward (eager, bf16 autocast)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    model = _model(False)
    x, p, y = _batch(batch)
    with FlopCounterMode(display=False) as fc, torch.autocast("cuda", dtype=torch.bfloat16):
        F.binary_cross_entropy_with_logits(model(x, p).float(), y).backward()
    return float(fc.get_total_flops())


def bench_training(batch: int, steps: int, compile_: bool) -> list[dict[str, Any]]:
    import torch

    flops = _flops(batch)
    peak = _peak(torch.cuda.get_device_name())
    rows = []
    for cl in (False, True):
        for comp in ((False, True) if compile_ else (False,)):
            model = _model(cl)
            run = torch.compile(model) if comp else model
            x, p, y = _batch(batch)
            if cl:
                x = x.contiguous()  # 5-D input; the model's 4-D activations follow the weights
            t0 = time.perf_counter()
            _train_steps(run, x, p, y, 3)  # warm-up (+ compilation)
            warm = time.perf_counter() - t0
            s = _train_steps(run, x, p, y, steps)
            rate = batch * steps / s
            mfu = flops * steps / s / peak if peak else float("nan")
            rows.append({"what": f"train {'compile' if comp else 'eager'}{' +channels_last' if cl else ''}",
                         "slices/s": rate, "MFU": mfu, "note": f"warm-up {warm:.0f}s, {flops / batch / 1e9:.1f} GFLOP/slice"})
            del model, run
            torch.cuda.empty_cache()
    return rows


def bench_inference(batch: int, steps: int) -> dict[str, Any]:
    import torch

    model = _model(True).eval()
    x, p, _ = _batch(batch)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            model(x, p)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            model(x, p)
        torch.cuda.synchronize()
        s = time.perf_counter() - t
    return {"what": "inference eager +channels_last", "slices/s": batch * steps / s, "MFU": float("nan"), "note": f"batch {batch}"}


def _loop(config: dict[str, Any]) -> None:
    """The benchmark's training loop; bare or as a Ray Train worker (reports per 10 steps)."""
    import torch

    in_ray = config.get("ray", False)
    if in_ray:
        import ray.train
        import ray.train.torch

        model = ray.train.torch.prepare_model(_model(True))
    else:
        model = _model(True)
    x, p, y = _batch(config["batch"])
    _train_steps(model, x, p, y, 3)
    torch.cuda.synchronize()
    t = time.perf_counter()
    done = 0
    while done < config["steps"]:
        n = min(10, config["steps"] - done)
        _train_steps(model, x, p, y, n)
        done += n
        if in_ray:
            ray.train.report({"step": done, "steady_s": time.perf_counter() - t})
    config.setdefault("out", {})["steady_s"] = time.perf_counter() - t


def bench_ray_overhead(batch: int, steps: int) -> list[dict[str, Any]]:
    import tempfile

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg: dict[str, Any] = {"batch": batch, "steps": steps}
    t = time.perf_counter()
    _loop(cfg)
    bare_wall = time.perf_counter() - t
    bare_steady = cfg["out"]["steady_s"]
    ray.init(address="local", include_dashboard=False)
    try:
        with tempfile.TemporaryDirectory() as store:
            t = time.perf_counter()
            result = TorchTrainer(
                _loop, train_loop_config={"batch": batch, "steps": steps, "ray": True},
                scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=True),
                run_config=ray.train.RunConfig(name="bench", storage_path=store),
            ).fit()
            ray_wall = time.perf_counter() - t
    finally:
        ray.shutdown()
    ray_steady = float(result.metrics["steady_s"])
    return [
        {"what": "bare loop", "slices/s": batch * steps / bare_steady, "MFU": float("nan"),
         "note": f"wall {bare_wall:.1f}s"},
        {"what": "Ray Train 1 worker", "slices/s": batch * steps / ray_steady, "MFU": float("nan"),
         "note": f"wall {ray_wall:.1f}s; overhead x{ray_wall / bare_wall:.2f} wall, x{ray_steady / bare_steady:.3f} per step"},
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU on this machine; nothing measured (exit 0)")
        return 0
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name()
    t0 = time.perf_counter()
    rows = bench_training(args.batch, args.steps, not args.skip_compile)
    rows.append(bench_inference(2 * args.batch, args.steps))
    if not args.skip_ray:
        rows += bench_ray_overhead(args.batch, 5 * args.steps)
    peak = _peak(name)
    print(f"\n{name}  torch {torch.__version__}  bf16 peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s  "
          f"DeepLabv3-R50 input-level, 20 ch, 256x256, batch {args.batch}")
    print(f"{'what':<34} {'slices/s':>10} {'MFU':>7}  note")
    for r in rows:
        mfu = "" if r["MFU"] != r["MFU"] else f"{r['MFU']:.1%}"
        print(f"{r['what']:<34} {r['slices/s']:>10.1f} {mfu:>7}  {r['note']}")
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
