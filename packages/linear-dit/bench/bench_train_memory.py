"""Peak memory of one Linear DiT training step, with and without gradient checkpointing.

Papers: Xie et al., "SANA" (ICLR 2025) and "SANA 1.5" (ICML 2025), Sec. 2.3 (memory-efficient
training of large linear DiTs on limited GPU memory). Gradient checkpointing keeps only each
block's input during the forward pass and recomputes the block in the backward pass, so the
activation memory falls from ``depth`` blocks' worth to about one block's worth, at the price of
a second forward. Goal: at high resolution, where activations dominate, checkpointing cuts the
step's memory (peak minus what is resident before it) several-fold.

One step is the flow-matching step of SANA's training: ``x_t = (1 - t) x0 + t noise``, the model
predicts ``v = noise - x0`` at timestep ``1000 t``, MSE loss, backward, AdamW step. One unmeasured
step runs first, so the measured step is a steady-state one (AdamW's moments already exist).

Each variant runs in its own subprocess, so neither can hide allocations in the other's peak:

* CUDA: ``torch.cuda.max_memory_allocated`` (memory held by tensors), reset before the step;
* CPU: the process's peak resident set (``VmHWM``), reset before the step through
  ``/proc/self/clear_refs`` where Linux allows it, else ``ru_maxrss`` (then the peak also covers
  model creation, which the "before" figure shows).

Weights are random: memory does not depend on their values.

    python packages/linear-dit/bench/bench_train_memory.py --device cuda --preset sana-0.6b-1024px --json
    OMP_NUM_THREADS=1 python packages/linear-dit/bench/bench_train_memory.py --preset tiny --height 16 --width 16
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _bench_common import machine

SRC = Path(__file__).resolve().parents[1] / "src"
VARIANTS = {"plain": False, "checkpointing": True}


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak), in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_cpu_peak() -> bool:
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _status_kib("VmHWM")
        return True
    except (OSError, RuntimeError):
        return False


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model, run one warm-up step and one measured step; report bytes."""
    import torch
    import torch.nn.functional as F

    from linear_dit import LinearDiT, LinearDiTConfig

    device = torch.device(args.device)
    cfg = LinearDiTConfig.from_name(args.preset)
    if args.depth:
        cfg = LinearDiTConfig.model_validate({**cfg.model_dump(), "depth": args.depth})
    height = args.height or cfg.sample_size
    width = args.width or cfg.sample_size
    torch.manual_seed(0)
    with device:  # initialise in place: faster than on the CPU for large models
        model = LinearDiT(cfg).train()
    model.gradient_checkpointing = args.checkpointing
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(args.batch, cfg.in_channels, height, width, generator=g).to(device)
    noise = torch.randn(x0.shape, generator=g).to(device)
    y = torch.randn(args.batch, args.text_tokens, cfg.caption_channels, generator=g).to(device)
    mask = torch.ones(args.batch, args.text_tokens, dtype=torch.bool, device=device)
    t = torch.rand(args.batch, generator=g).to(device)
    xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise
    target = noise - x0

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-autocast"):
            velocity = model(xt, t * cfg.max_timestep, y, mask)
        loss = F.mse_loss(velocity.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result: dict[str, Any] = {
        "checkpointing": args.checkpointing,
        "params": model.num_parameters(),
        "latent": [args.batch, cfg.in_channels, height, width],
        "config": cfg.name,
        "depth": cfg.depth,
    }
    try:
        step()  # warm-up: allocates AdamW's moments and the allocator's pools
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            result["peak_reset"] = _reset_cpu_peak()
            before = _status_kib("VmRSS") * 1024
        start = time.perf_counter()
        loss = step()
        sync()
        seconds = time.perf_counter() - start
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
        elif result["peak_reset"]:
            peak = _status_kib("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    except torch.OutOfMemoryError as err:
        result.update(oom=True, error=str(err).splitlines()[0])
        return result
    result.update(
        oom=False,
        before_bytes=before,
        peak_bytes=peak,
        step_bytes=peak - before,
        seconds=round(seconds, 4),
        loss=loss,
        loss_finite=bool(torch.isfinite(torch.tensor(loss))),
        threads=torch.get_num_threads(),
    )
    return result


def measure(args: argparse.Namespace, checkpointing: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, __file__, "--worker", "--preset", args.preset, "--device", args.device]
    cmd += ["--batch", str(args.batch), "--text-tokens", str(args.text_tokens), "--precision", args.precision]
    for name in ("depth", "height", "width"):
        if getattr(args, name):
            cmd += [f"--{name}", str(getattr(args, name))]
    if checkpointing:
        cmd.append("--checkpointing")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"checkpointing": checkpointing, "failed": True, "stderr_tail": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sana-0.6b-1024px", help="model preset (random weights)")
    parser.add_argument("--depth", type=int, default=0, help="override the number of blocks (0: the preset's)")
    parser.add_argument("--height", type=int, default=0, help="latent height (0: the preset's sample_size)")
    parser.add_argument("--width", type=int, default=0, help="latent width (0: the preset's sample_size)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16-autocast"], default="fp32")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    runs = {name: measure(args, VARIANTS[name]) for name in args.variants}
    ok = {k: r for k, r in runs.items() if not r.get("failed") and not r.get("oom")}
    ratios: dict[str, float | None] = {}
    if len(ok) == 2:
        plain, ckpt = ok["plain"], ok["checkpointing"]
        ratios = {
            "peak_plain_over_checkpointing": plain["peak_bytes"] / ckpt["peak_bytes"],
            # A step that adds nothing measurable (tiny models, RSS granularity) has no ratio.
            "step_plain_over_checkpointing": plain["step_bytes"] / ckpt["step_bytes"]
            if ckpt["step_bytes"] > 0
            else None,
            "time_checkpointing_over_plain": ckpt["seconds"] / plain["seconds"],
        }
    result = {
        "preset": args.preset,
        "precision": args.precision,
        "device": args.device,
        "machine": machine(args.device),
        "measure": "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "peak RSS (VmHWM)",
        "runs": runs,
        "ratios": ratios,
        "date": datetime.date.today().isoformat(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.preset}, batch {args.batch}, {args.precision} on {args.device} ({result['machine']}), AdamW")
    print(f"{'variant':<14}{'peak MiB':>11}{'before MiB':>12}{'step MiB':>10}{'seconds':>9}  loss")
    for name, r in runs.items():
        if r.get("failed") or r.get("oom"):
            why = "out of memory" if r.get("oom") else "failed: " + r["stderr_tail"].strip().splitlines()[-1]
            print(f"{name:<14}{why}")
            continue
        mib = 1024 * 1024
        print(
            f"{name:<14}{r['peak_bytes'] / mib:>11.0f}{r['before_bytes'] / mib:>12.0f}{r['step_bytes'] / mib:>10.0f}"
            f"{r['seconds']:>9.2f}  {r['loss']:.4g}"
        )
    for k, v in ratios.items():
        print(f"{k}: {'n/a' if v is None else f'{v:.2f}'}")
    print(f"measured with {result['measure']}; {result['date']}")


if __name__ == "__main__":
    main()
