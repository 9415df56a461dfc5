"""Data-parallel plumbing for DC-AE training under ``torchrun``.

DC-AE (Chen et al., ICLR 2025, Sec. 4.1) trains on many GPUs with data parallelism; this module
keeps that optional. Everything is a no-op in a plain ``python`` process: distributed mode starts
only when ``torchrun`` sets ``WORLD_SIZE > 1``. Then the process group uses ``nccl`` on CUDA and
``gloo`` on the CPU, models are wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`,
and only rank 0 logs and writes files.
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dc_ae.errors import TrainingError

_DDP_PARAMS = inspect.signature(DistributedDataParallel.__init__).parameters

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "any_rank",
    "barrier",
    "broadcast_buffers",
    "cleanup",
    "init_distributed",
    "unwrap",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise TrainingError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if there is one, and pick this rank's device.

    ``device`` is ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or a full
    device string. Under ``torchrun`` with CUDA each rank takes ``cuda:LOCAL_RANK``.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"device {device!r} was requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistInfo(0, 1, 0, dev)
    if not dist.is_available():
        raise TrainingError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, object] = {"timeout": datetime.timedelta(minutes=30)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(backend=backend, **kwargs)  # type: ignore[arg-type]
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise TrainingError(
            f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees with "
            f"RANK={rank}, WORLD_SIZE={world}"
        )
    return DistInfo(rank, world, local_rank, dev)


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """``module`` wrapped in DDP when distributed (it must have trainable parameters), else itself."""
    if not info.enabled:
        return module
    if not any(p.requires_grad for p in module.parameters()):
        return module  # DDP refuses modules with nothing to synchronise; frozen modules need none
    ids = [info.device.index] if info.device.type == "cuda" else None
    # broadcast_buffers: BatchNorm statistics follow rank 0, so all ranks stay identical.
    # gradient_as_bucket_view: gradients live in the all-reduce buckets, which saves a copy and
    # keeps channels-last parameters' gradients from being re-laid out on every step.
    # Newer torch renamed broadcast_buffers (and warns about the old name); same behaviour.
    if "forward_sync_buffers" in _DDP_PARAMS:
        return DistributedDataParallel(module, device_ids=ids, gradient_as_bucket_view=True, forward_sync_buffers=True)
    return DistributedDataParallel(module, device_ids=ids, gradient_as_bucket_view=True, broadcast_buffers=True)


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.enabled:
        dist.barrier()


def broadcast_buffers(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank (no-op when not distributed).

    DDP only broadcasts them at the start of the next forward, so without this the ranks hold
    their own statistics after the last step, and an EMA or a checkpoint would differ by rank.
    """
    if not info.enabled:
        return
    for buf in unwrap(module).buffers():
        dist.broadcast(buf.data, src=0)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over ranks (a copy; ``values`` itself when not distributed)."""
    if not info.enabled:
        return values
    out = values.detach().clone().to(info.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / info.world_size).to(values.device)


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank (keeps stop decisions in step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def cleanup(info: DistInfo) -> None:
    """Leave the process group (no-op when not distributed)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
