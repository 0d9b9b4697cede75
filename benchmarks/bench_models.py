"""Model benchmarks: inference speed, fast-path agreement, training-step peak memory.

Run:  .venv/bin/python benchmarks/bench_models.py            (defaults = the issue's sizes)

1. Inference slices/s at SIZE x SIZE (S=4 paper sequences, K=5, resnet50) for integration
   'input', 'mid@layer4' and 'end' on the platform path (``inference_model`` +
   ``predict_logits``: eval copy, BatchNorm folded, inference mode, batched, bf16 autocast and
   channels_last only where the CPU computes bf16 natively) against plain torchvision
   ``deeplabv3_resnet50`` eager fp32 (``torch.no_grad``, NCHW, same batch, same input), all
   measured in this run. The issue's literal recipe (bf16 autocast + channels_last forced) is
   also timed for 'input', to show what it costs on a CPU without native bf16.
2. Agreement of thresholded masks (threshold 0.1) between fp32 eager and the fast path, on a
   fixed-seed compact 'input' model briefly fitted to a synthetic target (so probabilities are
   not all ~0.5 and the threshold means something).
3. Peak memory of one training step (forward, BCE, backward, AdamW step) per integration level,
   each in its own subprocess (``VmHWM`` after resetting it), batch 8 at SIZE x SIZE.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models.segmentation import deeplabv3_resnet50
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqablate.models import build_model, inference_model, native_bf16, predict_logits  # noqa: E402
from seqablate.sequences import PAPER_SEQUENCES  # noqa: E402

SEQS = list(PAPER_SEQUENCES)
K = 5
LEVELS = {
    "input": {"integration": "input"},
    "mid@layer4": {"integration": "mid", "integration_point": "layer4"},
    "end": {"integration": "end"},
}


def _cfg(level: str, backbone: str) -> dict:
    return {**LEVELS[level], "backbone": backbone, "sequences": SEQS, "slices": K}


def _timed(fn, n_slices: int) -> float:
    """Slices/s of ``fn`` after one warm-up call (oneDNN builds its kernels on first use)."""
    fn()
    t = time.perf_counter()
    fn()
    return n_slices / (time.perf_counter() - t)


def speed(size: int, n: int, n_branchy: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(n, len(SEQS), K, size, size, generator=gen)
    present = torch.ones(n, len(SEQS), dtype=torch.bool)
    out: dict = {}
    # Plain torchvision baseline on the same 20-channel input (stem widened to S*K channels).
    torch.manual_seed(0)
    plain = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=1, aux_loss=False)
    plain.backbone.conv1 = torch.nn.Conv2d(len(SEQS) * K, 64, 7, 2, 3, bias=False)
    plain.eval()
    flat = image.flatten(1, 2)

    def run_plain() -> None:
        with torch.no_grad():
            plain(flat)["out"]

    out["baseline torchvision fp32 eager"] = _timed(run_plain, n)
    for level in tqdm(LEVELS, desc="speed"):
        m = n if level == "input" else n_branchy
        model = build_model(_cfg(level, "resnet50"), seed=0)
        fast = inference_model(model)
        del model
        out[f"{level} platform"] = _timed(lambda f=fast, m=m: predict_logits(f, image[:m], present[:m], batch_size=m), m)
        if level == "input":
            forced = inference_model(fast, channels_last=True, fold_bn=False)
            out["input forced bf16+channels_last"] = _timed(
                lambda f=forced: predict_logits(f, image[:1], present[:1], batch_size=1, amp=True), 1
            )
            del forced
        del fast
    return out


def ab_input(size: int, n: int, rounds: int) -> dict:
    """Interleaved A/B (baseline, platform 'input', alternating) -> median slices/s of each.

    On a shared, loaded machine the load drifts between the sequential timings of ``speed``;
    alternating the two in rounds exposes both to the same drift.
    """
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(n, len(SEQS), K, size, size, generator=gen)
    present = torch.ones(n, len(SEQS), dtype=torch.bool)
    torch.manual_seed(0)
    plain = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=1, aux_loss=False)
    plain.backbone.conv1 = torch.nn.Conv2d(len(SEQS) * K, 64, 7, 2, 3, bias=False)
    plain.eval()
    fast = inference_model(build_model(_cfg("input", "resnet50"), seed=0))
    flat = image.flatten(1, 2)

    def run_plain() -> None:
        with torch.no_grad():
            plain(flat)["out"]

    def run_fast() -> None:
        predict_logits(fast, image, present, batch_size=n)

    run_plain()
    run_fast()
    times: dict[str, list[float]] = {"baseline": [], "platform": []}
    for _ in tqdm(range(rounds), desc="A/B"):
        for name, fn in (("baseline", run_plain), ("platform", run_fast)):
            t = time.perf_counter()
            fn()
            times[name].append(n / (time.perf_counter() - t))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"rounds": rounds, "slices_per_call": n, "median_slices_per_s": med,
            "ratio_platform_vs_baseline": round(med["platform"] / med["baseline"], 2),
            "all_slices_per_s": {k: [round(x, 3) for x in v] for k, v in times.items()}}


def _blobs(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 'lesions': bright discs on t1_gre_post / t1_fse_post over noise; target = discs."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(3):
            cy, cx = torch.randint(8, size - 8, (2,), generator=gen).tolist()
            r = int(torch.randint(3, 8, (1,), generator=gen))
            mask[i, 0] = torch.maximum(mask[i, 0], ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float())
    image = 0.3 * torch.rand(n, len(SEQS), K, size, size, generator=gen)
    image[:, [0, 2]] += 0.7 * mask[:, :, None]
    return image, mask


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (a & b).sum().item()
    total = a.sum().item() + b.sum().item()
    return 1.0 if total == 0 else 2 * inter / total


def agreement(size: int, steps: int, threshold: float = 0.1) -> dict:
    gen = torch.Generator().manual_seed(0)
    model = build_model(_cfg("input", "compact"), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    present4 = torch.ones(4, len(SEQS), dtype=torch.bool)
    for _ in tqdm(range(steps), desc="fit"):
        x, y = _blobs(4, size, gen)
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(x, present4), y).backward()
        opt.step()
    x, y = _blobs(8, size, gen)
    present = torch.ones(8, len(SEQS), dtype=torch.bool)
    model.eval()
    with torch.no_grad():
        ref = torch.sigmoid(model(x, present)) > threshold
    fast = predict_logits(inference_model(model), x, present, batch_size=8)
    forced = predict_logits(inference_model(model, channels_last=True), x, present, batch_size=8, amp=True)
    return {
        "fit_steps": steps,
        "fraction_above_threshold_fp32": ref.float().mean().item(),
        "dice_vs_truth_fp32": _dice(ref, y.bool()),
        "dice_platform_vs_fp32": _dice(torch.sigmoid(fast) > threshold, ref),
        "dice_forced_bf16_vs_fp32": _dice(torch.sigmoid(forced) > threshold, ref),
    }


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False if not permitted.

    (``ru_maxrss`` cannot be used per level: Linux carries it over from the parent across exec.)
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(level: str, backbone: str, size: int, batch: int) -> None:
    """One training step in THIS process; prints JSON with RSS before and the peak."""
    model = build_model(_cfg(level, backbone), seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, len(SEQS), K, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.95).float()
    present = torch.ones(batch, len(SEQS), dtype=torch.bool)
    before = _status_mb("VmRSS")
    reset = _reset_peak()
    t = time.perf_counter()
    F.binary_cross_entropy_with_logits(model(x, present), y).backward()
    opt.step()
    print(json.dumps({
        "level": level, "backbone": backbone, "batch": batch, "size": size,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "rss_before_step_MB": round(before), "peak_reset": reset,
        "step_peak_MB": round(_status_mb("VmHWM")),
        "step_peak_increase_MB": round(_status_mb("VmHWM") - before),
        "step_s": time.perf_counter() - t,
    }))


def memory(backbone: str, size: int, batch: int) -> list[dict]:
    rows = []
    for level in tqdm(LEVELS, desc="memory"):
        res = subprocess.run(
            [sys.executable, __file__, "--memory-child", level, "--backbone", backbone,
             "--size", str(size), "--batch", str(batch)],
            capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=4, help="slices per timed call for baseline and input")
    ap.add_argument("--n-branchy", type=int, default=2, help="slices per timed call for mid/end")
    ap.add_argument("--fit-steps", type=int, default=25)
    ap.add_argument("--fit-size", type=int, default=128)
    ap.add_argument("--backbone", default="compact", help="backbone of the memory measurement")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--skip", nargs="*", default=[], choices=["speed", "agreement", "memory"])
    ap.add_argument("--ab-rounds", type=int, default=0, help="also run an interleaved A/B of input vs baseline")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.backbone, args.size, args.batch)
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16('cpu')}, "
          f"{platform.processor() or platform.machine()}")
    report: dict = {}
    if "speed" not in args.skip:
        sp = speed(args.size, args.n, args.n_branchy)
        base = sp["baseline torchvision fp32 eager"]
        report["speed_slices_per_s"] = {k: round(v, 3) for k, v in sp.items()}
        report["speed_ratio_vs_baseline"] = {k: round(v / base, 2) for k, v in sp.items()}
    if args.ab_rounds:
        report["ab_input"] = ab_input(args.size, args.n, args.ab_rounds)
    if "agreement" not in args.skip:
        report["agreement"] = agreement(args.fit_size, args.fit_steps)
    if "memory" not in args.skip:
        report["memory"] = memory(args.backbone, args.size, args.batch)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
