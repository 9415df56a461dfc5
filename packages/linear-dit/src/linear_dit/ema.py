"""Exponential moving average (EMA) of the Linear DiT's weights during training.

SANA (Xie et al., ICLR 2025) trains with an EMA of the weights (``ema_rate: 0.9999`` in the
released configs) and ships the averaged weights; averaging the iterates of a stochastic
optimiser (Polyak & Juditsky, 1992) gives smoother, better samples than the last iterate. After
each optimiser step ``shadow <- d * shadow + (1 - d) * param``; buffers are copied, not averaged.

The average also works on a model sharded with FSDP2 (``fully_shard``): the shadow of a
``DTensor`` parameter is a ``DTensor`` with the same sharding, so each rank averages only its own
shard, and :meth:`EMA.state_dict` / :meth:`EMA.full_shadow` gather the full tensors (every rank
must call them, as for any collective).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from linear_dit.errors import TrainingError

__all__ = ["EMA"]


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


class EMA:
    """Shadow copy of a module's floating-point parameters (averaged) and buffers (copied).

    ``decay`` is ``d`` above. With ``warmup=True`` the decay of update ``n`` (counting from 0) is
    ``min(decay, (1 + n) / (10 + n))``, so short runs forget the random initialisation (the
    schedule of TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``); with
    ``warmup=False`` it is ``decay`` from the first update. Pass the bare model (not a DDP
    wrapper): names must match the model's own ``state_dict`` keys.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise TrainingError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {}
        self._averaged: set[str] = set()
        for name, p in model.named_parameters():
            self.shadow[name] = p.detach().clone()
            if p.is_floating_point():
                self._averaged.add(name)
        for name, buf in model.named_buffers():
            if name not in self.shadow:
                self.shadow[name] = buf.detach().clone()

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def _tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        found: dict[str, torch.Tensor] = dict(model.named_parameters())
        for name, buf in model.named_buffers():
            found.setdefault(name, buf)
        missing = sorted(set(self.shadow) - set(found))
        unexpected = sorted(set(found) - set(self.shadow))
        if missing or unexpected:
            raise TrainingError(
                f"EMA does not match the model: the average tracks {missing[:5]} that the model lacks, "
                f"and the model has {unexpected[:5]} that the average does not track (pass the bare model, "
                "not a DDP wrapper)"
            )
        return found

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (same architecture and sharding) into the average."""
        d = self.current_decay()
        for name, value in self._tensors(model).items():
            shadow = self.shadow[name]
            if name in self._averaged:
                if value.requires_grad:
                    # Frozen parameters never change, so their shadow already equals them.
                    shadow.lerp_(value.detach().to(shadow.dtype), 1.0 - d)
            else:
                shadow.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (same names, shapes and sharding)."""
        for name, value in self._tensors(model).items():
            value.copy_(self.shadow[name])

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run a block with the averaged weights in ``model``, then put its own weights back.

        Used to validate the EMA weights without a second copy of a (possibly sharded) model.
        """
        saved = {k: v.detach().clone() for k, v in self._tensors(model).items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in self._tensors(model).items():
                    value.copy_(saved[name])

    def full_shadow(self, keep: bool = True) -> dict[str, torch.Tensor]:
        """The averaged weights as full CPU tensors (a collective when the model is sharded).

        Tensors are gathered one at a time; a rank passing ``keep=False`` takes part in the
        gathering but returns ``{}``, so only the rank that writes a file holds a full copy.
        """
        out = {}
        for k, v in self.shadow.items():
            if _is_dtensor(v):
                v = v.full_tensor()  # type: ignore[attr-defined]
            if keep:
                out[k] = v.detach().to("cpu", copy=True)
        return out

    def state_dict(self, keep: bool = True) -> dict[str, object]:
        """Everything needed to resume the average exactly, with full (unsharded) CPU tensors
        (``keep`` as in :meth:`full_shadow`)."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": self.full_shadow(keep),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore a :meth:`state_dict`; tracked tensors must match by name and full shape."""
        shadow = state.get("shadow")
        if not isinstance(shadow, Mapping):
            raise TrainingError("EMA state has no 'shadow' mapping")
        missing = sorted(set(self.shadow) - set(shadow))
        unexpected = sorted(set(shadow) - set(self.shadow))
        if missing or unexpected:
            raise TrainingError(f"EMA state does not match the model: missing {missing}, unexpected {unexpected}")
        for k, v in shadow.items():
            mine = self.shadow[k]
            if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(mine.shape):
                found = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise TrainingError(f"EMA state: {k} has shape {found}, expected {tuple(mine.shape)}")
            if _is_dtensor(mine):
                from torch.distributed.tensor import distribute_tensor

                # Every rank holds the full tensor (read from the same file): slice locally, no traffic.
                local = distribute_tensor(
                    v.to(mine.device, mine.dtype),
                    mine.device_mesh,  # type: ignore[attr-defined]
                    mine.placements,  # type: ignore[attr-defined]
                    src_data_rank=None,
                )
                mine.copy_(local)
            else:
                mine.copy_(v)
        decay = state.get("decay", self.decay)
        updates = state.get("num_updates", 0)
        if not isinstance(decay, (int, float)) or not isinstance(updates, int):
            raise TrainingError(f"EMA state has a malformed decay {decay!r} or num_updates {updates!r}")
        self.decay = float(decay)
        self.warmup = bool(state.get("warmup", self.warmup))
        self.num_updates = updates
