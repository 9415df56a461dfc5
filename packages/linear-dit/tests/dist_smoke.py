"""DDP and FSDP2 smoke test of Linear DiT training on the CPU (gloo); not collected by pytest.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 packages/linear-dit/tests/dist_smoke.py

Each rank trains the tiny preset on its own batches of a synthetic latent data set; the
gradients are averaged (DDP all-reduce, FSDP2 reduce-scatter), so after training every
parameter -- and the EMA -- must be bit-identical on every rank (without the reduction the
ranks would drift apart), and the loss finite. The FSDP2 run is interrupted and resumed, and
it must end with the weights of an uninterrupted FSDP2 run and close to the DDP run's (the
two reduce in different orders). Rank 0 alone writes the files. Exits non-zero on any failure.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from linear_dit.checkpoint import load
from linear_dit.data import make_synthetic_dataset, save_latent_dataset
from linear_dit.distributed import init_distributed
from linear_dit.training import MODEL_FILE, STATE_FILE, TrainConfig, TrainResult, train


def _identical_across_ranks(state: dict[str, torch.Tensor], what: str) -> list[str]:
    bad = []
    world = dist.get_world_size()
    for name, value in state.items():
        gathered = [torch.empty_like(value) for _ in range(world)]
        dist.all_gather(gathered, value.contiguous())
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            bad.append(f"{what}: {name} differs across ranks")
    return bad


def _check_run(result: TrainResult, what: str, steps: int) -> list[str]:
    bad = _identical_across_ranks(result.model.state_dict(), what)
    losses = [h["loss"] for h in result.history]
    if result.step != steps or not losses or not all(math.isfinite(v) for v in losses):
        bad.append(f"{what}: step {result.step} (expected {steps}), losses {losses}")
    if result.final_val_loss is None or not math.isfinite(result.final_val_loss):
        bad.append(f"{what}: validation loss {result.final_val_loss}")
    if (result.model_path is not None) != (dist.get_rank() == 0):
        bad.append(f"{what}: rank {dist.get_rank()} reports model_path {result.model_path} (only rank 0 writes)")
    return bad


def main() -> int:
    warnings.simplefilter("ignore")
    info = init_distributed("cpu")
    if not info.enabled:
        print("run me under torchrun --nproc_per_node=2", file=sys.stderr)
        return 2
    holder = [tempfile.mkdtemp(prefix="ldit_dist_") if info.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    root = Path(str(holder[0]))
    data = root / "train.safetensors"
    if info.is_main:
        save_latent_dataset(make_synthetic_dataset(num_classes=3, samples_per_class=8), data)
    dist.barrier()

    common = dict(
        model="tiny", data=data, batch_size=3, steps=4, lr=2e-3, log_every=1, val_every=2, ema_decay=0.9, device="cpu"
    )
    failures: list[str] = []
    ddp = train(TrainConfig(**common, out_dir=root / "ddp", strategy="ddp"), progress=False)
    failures += _check_run(ddp, "ddp", 4)

    fsdp_cfg = dict(common, strategy="fsdp", gradient_checkpointing=True)
    whole = train(TrainConfig(**fsdp_cfg, out_dir=root / "fsdp"), progress=False)
    failures += _check_run(whole, "fsdp", 4)
    train(TrainConfig(**fsdp_cfg, out_dir=root / "fsdp_resumed", stop_at_step=2), progress=False)
    resumed = train(TrainConfig(**fsdp_cfg, out_dir=root / "fsdp_resumed"), progress=False)
    failures += _check_run(resumed, "fsdp resumed", 4)
    for k, v in whole.model.state_dict().items():
        if not torch.equal(v, resumed.model.state_dict()[k]):
            failures.append(f"fsdp: resumed run differs from the uninterrupted one in {k}")
        if not torch.allclose(v, ddp.model.state_dict()[k], rtol=1e-4, atol=1e-5):
            failures.append(f"fsdp and ddp disagree in {k}")

    dist.barrier()
    for run in ("ddp", "fsdp", "fsdp_resumed"):
        files = [root / run / MODEL_FILE, root / run / STATE_FILE]
        if not all(f.is_file() for f in files):
            failures.append(f"{run}: rank 0 did not write {files}")
    if info.is_main:
        exported = load(root / "fsdp" / MODEL_FILE)
        if any(not torch.equal(v, exported.state_dict()[k]) for k, v in whole.model.state_dict().items()):
            failures.append("fsdp: model.safetensors differs from the returned model")
        leftovers = sorted(p.name for p in root.rglob("*.tmp"))
        if leftovers:
            failures.append(f"temporary files left behind: {leftovers}")

    flag = torch.tensor([len(failures)])
    dist.all_reduce(flag)
    if info.is_main:
        print(
            f"rank 0: world {info.world_size}, ddp loss {ddp.final_loss:.4f} val {ddp.final_val_loss:.4f}, "
            f"fsdp loss {whole.final_loss:.4f} val {whole.final_val_loss:.4f}; failures on all ranks: {int(flag)}"
        )
    for line in failures:
        print(f"rank {info.rank}: {line}", file=sys.stderr)
    dist.barrier()
    if info.is_main:
        shutil.rmtree(root, ignore_errors=True)
    dist.destroy_process_group()
    return 0 if int(flag) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
