"""DDP smoke test of DC-AE training on the CPU (gloo); not collected by pytest.

    torchrun --standalone --nproc_per_node=2 packages/dc-ae/tests/dist_smoke.py

Each rank trains the tiny preset on different crops of a temporary image folder; DDP averages
the gradients, so after training every parameter must be bit-identical on every rank (without
the all-reduce the ranks would drift apart). Runs phase 1 (interrupted and resumed) and then
phase 3 (discriminator, adaptive GAN weight) from its result. Exits non-zero on any mismatch.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from dc_ae.distributed import init_distributed
from dc_ae.train import TrainConfig, train


def _images(root: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / f"img{i}.png")


def _identical_across_ranks(model: torch.nn.Module, what: str) -> list[str]:
    bad = []
    world = dist.get_world_size()
    for name, value in model.state_dict().items():
        gathered = [torch.empty_like(value) for _ in range(world)]
        dist.all_gather(gathered, value.contiguous())
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            bad.append(f"{what}: {name}")
    return bad


def main() -> int:
    warnings.simplefilter("ignore")
    info = init_distributed("cpu")
    if not info.enabled:
        print("run me under torchrun --nproc_per_node=2", file=sys.stderr)
        return 2
    # One shared folder (rank 0 makes it), as on a shared file system.
    holder = [tempfile.mkdtemp(prefix="dc_ae_dist_") if info.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    root = Path(str(holder[0]))
    if info.is_main:
        (root / "data").mkdir()
        _images(root / "data")
    dist.barrier()

    common = dict(model="tiny-f4", data=root / "data", batch_size=2, lr=2e-3, log_every=1, disc_channels=8)
    p1 = dict(common, out_dir=root / "p1", resolution=16, ema_decay=0.9)
    first = train(TrainConfig(**p1, steps=3), progress=False)
    done = train(TrainConfig(**p1, steps=5), progress=False)  # resumes
    failures = _identical_across_ranks(done.model, "phase 1")
    if done.step != 5 or first.step != 3:
        failures.append(f"steps: first run {first.step}, resumed run {done.step}")

    # Every rank needs the phase-1 file rank 0 wrote; the barrier in train() already ran.
    p3 = dict(common, out_dir=root / "p3", resolution=32, phase=3, init_checkpoint=root / "p1" / "model.safetensors")
    refined = train(TrainConfig(**p3, steps=2), progress=False)
    failures += _identical_across_ranks(refined.model, "phase 3")
    if "d" not in refined.final_losses:
        failures.append("phase 3 trained no discriminator")
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(done.model.state_dict().values(), refined.model.state_dict().values(), strict=True)
    )
    if not changed:
        failures.append("phase 3 changed no weight")

    flag = torch.tensor([len(failures)])
    dist.all_reduce(flag)
    if info.is_main:
        print(
            f"rank 0: world {info.world_size}, phase-1 loss {done.final_losses['loss']:.4f}, "
            f"phase-3 d {refined.final_losses['d']:.4f}; mismatches on all ranks: {int(flag)}"
        )
    for line in failures:
        print(f"rank {info.rank}: {line}", file=sys.stderr)
    dist.barrier()
    dist.destroy_process_group()
    return 0 if int(flag) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
