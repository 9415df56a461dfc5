"""Peak memory of tiled DC-AE decoding: 2048x2048 against 512x512 with the same 512-px tiles.

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025), Sec. 4 (2K-4K generation decodes large latents). Goal: with tiling the peak resident
memory of a 2048x2048 decode stays within 1.5x that of a 512x512 decode, because it is set by the
tile, not by the image. The untiled 2048x2048 decode is measured too, for contrast.

Each decode runs in its own subprocess, so one measurement's allocations cannot hide in another's
peak. The peak is the process's peak resident set size (``ru_maxrss``), reset just before the
decode on Linux (``/proc/self/clear_refs``), so it is the resident model and runtime plus what the
decode adds. Weights are random: memory and time do not depend on their values.

    PYTHONPATH=packages/dc-ae/src OMP_NUM_THREADS=1 python packages/dc-ae/bench/bench_tiled_memory.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def worker(preset: str, size: int, tile: int) -> dict[str, object]:
    """Decode one random ``size`` x ``size`` latent (tile 0: untiled) and report peak RSS in KiB."""
    import time

    import torch

    from dc_ae import DCAE, DCAEConfig

    torch.manual_seed(0)
    model = DCAE(DCAEConfig.from_name(preset)).eval()
    f = model.spatial_compression
    z = torch.randn(1, model.latent_channels, size // f, size // f)  # (1, c, size/f, size/f)
    reset = True
    try:  # Linux >= 4.0: the peak then covers the decode only (plus what is already resident)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        reset = False
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    with torch.inference_mode():
        y = model.decode(z, tile_size=tile or None)  # (1, 3, size, size)
    seconds = time.perf_counter() - start
    # VmHWM rather than ru_maxrss, which a child inherits from a larger parent.
    peak = _status_kib("VmHWM")
    assert y.shape[-2:] == (size, size)
    return {
        "size": size,
        "tile_latent": tile,
        "peak_kib": peak,
        "before_kib": before,
        "peak_reset": reset,
        "seconds": round(seconds, 2),
        "threads": torch.get_num_threads(),
    }


def measure(preset: str, size: int, tile: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, __file__, "--worker", "--preset", preset, "--size", str(size), "--tile", str(tile)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {size=} {tile=} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dc-ae-f32c32-small", help="DC-AE preset (random weights)")
    parser.add_argument("--small", type=int, default=512, help="small image side, pixels")
    parser.add_argument("--large", type=int, default=2048, help="large image side, pixels")
    parser.add_argument("--tile", type=int, default=16, help="tile size in latent pixels (16 = 512 px at f32)")
    parser.add_argument("--no-untiled", action="store_true", help="skip the untiled large decode")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.preset, args.size, args.tile)))
        return

    runs = {
        f"tiled {args.small}": measure(args.preset, args.small, args.tile),
        f"tiled {args.large}": measure(args.preset, args.large, args.tile),
    }
    if not args.no_untiled:
        runs[f"untiled {args.large}"] = measure(args.preset, args.large, 0)
    base = runs[f"tiled {args.small}"]
    large = runs[f"tiled {args.large}"]
    ratio = large["peak_kib"] / base["peak_kib"]
    machine = f"nproc={os.cpu_count()}, {cpu_model()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}"
    if args.json:
        print(json.dumps({"preset": args.preset, "machine": machine, "runs": runs, "ratio": ratio}, indent=2))
        return
    print(f"preset {args.preset} (random weights), tile {args.tile} latent px, {machine}, {datetime.date.today()}")
    print(f"{'decode':<16}{'peak RSS MiB':>14}{'before MiB':>12}{'added MiB':>11}{'x small':>9}{'seconds':>9}")
    for name, run in runs.items():
        peak, before = run["peak_kib"] / 1024, run["before_kib"] / 1024
        print(
            f"{name:<16}{peak:>14.0f}{before:>12.0f}{peak - before:>11.0f}"
            f"{run['peak_kib'] / base['peak_kib']:>9.2f}{run['seconds']:>9.1f}"
        )
    verdict = "meets" if ratio <= 1.5 else "misses"
    print(f"tiled {args.large} / tiled {args.small} peak RSS: {ratio:.2f}x ({verdict} the 1.5x goal)")


if __name__ == "__main__":
    main()
