"""Data-parallel plumbing for Linear DiT training under ``torchrun``: DDP and FSDP2.

SANA (Xie et al., ICLR 2025) and SANA-1.5 (ICML 2025, Sec. 3) train on many GPUs with data
parallelism, the 1.6B/4.8B models with sharded (FSDP) weights and optimizer states. This module
keeps that optional: everything is a no-op in a plain ``python`` process, and distributed mode
starts only when ``torchrun`` sets ``WORLD_SIZE > 1``. The process group uses ``nccl`` on CUDA
and ``gloo`` on the CPU; only rank 0 logs and writes files.

Two strategies:

* ``"ddp"`` -- :class:`~torch.nn.parallel.DistributedDataParallel`: every rank holds the whole
  model and optimizer; gradients are all-reduced.
* ``"fsdp"`` -- FSDP2 (``torch.distributed.fsdp.fully_shard``) on each Linear DiT block and then
  on the root: parameters, gradients and optimizer states are sharded along dim 0 (``DTensor``),
  each block's weights are gathered just for its forward and backward.

Checkpoints are written in full (unsharded) form whatever the strategy, so a run can be resumed
under either one and with another number of ranks.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from linear_dit.errors import TrainingError

__all__ = [
    "DistInfo",
    "Strategy",
    "all_reduce_sum",
    "any_rank",
    "barrier",
    "cleanup",
    "full_state_dict",
    "init_distributed",
    "is_sharded",
    "load_full_state_dict",
    "load_optimizer_state",
    "optimizer_state",
    "reshard",
    "unwrap",
    "wrap_model",
]

Strategy = Literal["ddp", "fsdp"]


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
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise TrainingError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"device {device!r} was requested but CUDA is not available")
        if dev.index is None:
            if world > 1 and local_rank >= torch.cuda.device_count():
                raise TrainingError(
                    f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; start at most "
                    "that many processes per node (torchrun --nproc_per_node), or train on device='cpu'"
                )
            dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistInfo(0, 1, 0, dev)
    if not dist.is_available():
        raise TrainingError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=30)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(backend=backend, **kwargs)
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise TrainingError(
            f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees with "
            f"RANK={rank}, WORLD_SIZE={world}"
        )
    return DistInfo(rank, world, local_rank, dev)


def wrap_model(model: nn.Module, info: DistInfo, strategy: Strategy) -> nn.Module:
    """``model`` ready for data-parallel training: DDP-wrapped, or sharded in place with FSDP2.

    Without a process group (one rank) the model is returned as is. With ``"fsdp"`` each module in
    ``model.blocks`` becomes its own FSDP unit, then the root takes the embedders and final layer;
    build the optimizer *after* this call, on the returned module's (sharded) parameters.
    """
    if strategy not in ("ddp", "fsdp"):
        raise TrainingError(f"distributed strategy must be 'ddp' or 'fsdp', got {strategy!r}")
    if not info.enabled:
        return model
    if strategy == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        # gradient_as_bucket_view: gradients live in the all-reduce buckets, saving a copy.
        return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise TrainingError(f"FSDP sharding needs the model's blocks in a ModuleList 'blocks'; {type(model).__name__}")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # FSDP2 warns when a wrapped module returns a view (the model's unpatchify does); the training
    # step only reads the output out of place, which is the case the warning says is safe.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor", category=UserWarning)
    return model


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (an FSDP2 model is its own module)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def is_sharded(module: nn.Module) -> bool:
    """True if any parameter of ``module`` is a ``DTensor`` (an FSDP2-sharded model)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in unwrap(module).parameters())


def reshard(module: nn.Module) -> None:
    """Free the gathered weights of every FSDP2 unit in ``module`` (no-op for other models).

    FSDP2 leaves the root's parameters unsharded after a forward pass that no backward follows
    (evaluation); until they are resharded, ``parameters()`` yields plain tensors, not the
    ``DTensor`` shards that the optimizer and the EMA hold.
    """
    from torch.distributed.fsdp import FSDPModule

    for m in unwrap(module).modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def full_state_dict(module: nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """The model's ``state_dict`` as full, detached CPU tensors.

    Sharded (``DTensor``) entries are all-gathered one at a time, so every rank must call this
    together; a rank that passes ``keep=False`` takes part but returns ``{}`` and never holds
    more than one gathered tensor (the checkpoint writer is rank 0; the others need no copy).
    """
    from torch.distributed.tensor import DTensor

    out: dict[str, torch.Tensor] = {}
    for k, v in unwrap(module).state_dict().items():
        if isinstance(v, DTensor):
            v = v.full_tensor()
        if keep:
            out[k] = v.detach().to("cpu", copy=True)
    return out


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load full tensors (every rank passes the same ones) into a plain, DDP or FSDP2 model; strict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    inner = unwrap(module)
    if not is_sharded(inner):
        inner.load_state_dict(state, strict=True)
        return
    set_model_state_dict(inner, dict(state), options=StateDictOptions(full_state_dict=True, strict=True))


def optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name, with full CPU tensors (a collective).

    The result is complete on rank 0; with FSDP2 other ranks may get an empty dict.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return dict(get_optimizer_state_dict(unwrap(module), optimizer, options=opts))


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an :func:`optimizer_state` (every rank passes the same full state) into ``optimizer``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True)
    try:
        set_optimizer_state_dict(unwrap(module), optimizer, optim_state_dict=state, options=opts)
    except (KeyError, RuntimeError, ValueError) as e:
        raise TrainingError(f"the saved optimizer state does not fit this model and optimizer: {e}") from e


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``values`` over ranks (a new tensor; a copy of ``values`` when not distributed)."""
    out = values.detach().clone()
    if info.enabled:
        out = out.to(info.device)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(values.device)


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
