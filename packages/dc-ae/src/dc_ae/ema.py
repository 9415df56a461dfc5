"""Exponential moving average (EMA) of model parameters for DC-AE training.

The DC-AE release ships EMA weights (``ema_model_state_dict`` in the DC-AE-V checkpoint, Chen et
al. 2024, "Deep Compression Autoencoder", training recipe of Sec. 4.1 and the released code), a
standard practice since Polyak & Juditsky (1992) for the final weights of a stochastic optimiser.
After each optimiser step ``shadow <- d * shadow + (1 - d) * param``; buffers (BatchNorm running
statistics) are copied, not averaged, because they are already running averages.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from dc_ae.errors import TrainingError

__all__ = ["EMA"]


class EMA:
    """Shadow copy of a module's floating-point parameters and buffers.

    ``decay`` is ``d`` above. With ``warmup=True`` the decay used at update ``n`` (counting from
    0) is ``min(decay, (1 + n) / (10 + n))``, so the average forgets the random initialisation
    quickly in short runs (the schedule of TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``); with ``warmup=False`` it is ``decay`` from the first update.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise TrainingError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)
        }
        self._param_names = {k for k, _ in model.named_parameters()}

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (same architecture) into the average."""
        d = self.current_decay()
        params = dict(model.named_parameters())
        for name, value in model.state_dict().items():
            shadow = self.shadow.get(name)
            if shadow is None:
                raise TrainingError(f"EMA: the model has a tensor {name!r} that the average does not track")
            if name in params and value.is_floating_point():
                if params[name].requires_grad:
                    # Frozen parameters never change, so their shadow already equals them.
                    shadow.lerp_(value.detach().to(shadow.dtype), 1.0 - d)
            else:
                shadow.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (strict about keys and shapes)."""
        model.load_state_dict(self.shadow, strict=True)

    def state_dict(self) -> dict[str, object]:
        """Everything needed to resume the average exactly."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore a :meth:`state_dict`; the tracked tensors must match by name and shape."""
        shadow = state.get("shadow")
        if not isinstance(shadow, Mapping):
            raise TrainingError("EMA state has no 'shadow' mapping")
        missing = sorted(set(self.shadow) - set(shadow))
        unexpected = sorted(set(shadow) - set(self.shadow))
        if missing or unexpected:
            raise TrainingError(f"EMA state does not match the model: missing {missing}, unexpected {unexpected}")
        for k, v in shadow.items():
            if not isinstance(v, torch.Tensor) or v.shape != self.shadow[k].shape:
                found = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise TrainingError(f"EMA state: {k} has shape {found}, expected {tuple(self.shadow[k].shape)}")
            self.shadow[k].copy_(v)
        self.decay = float(state.get("decay", self.decay))  # type: ignore[arg-type]
        self.warmup = bool(state.get("warmup", self.warmup))
        self.num_updates = int(state.get("num_updates", 0))  # type: ignore[call-overload]
