"""Model factories for the CLI tests (``svdquant quantize --arch sq_cli_models:tiny_mlp``).

Tiny stand-ins for the blocks SVDQuant (Li et al., ICLR 2025, Sec. 5) quantizes: an MLP whose second layer reads
a GELU output, and a two-input module (a DiT block takes the hidden states and a conditioning vector).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(128, 64)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TwoInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 64)
        self.cond = nn.Linear(64, 64)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.proj(x) + self.cond(c)


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return TinyMLP()


def two_input() -> nn.Module:
    torch.manual_seed(0)
    return TwoInput()


def not_a_module() -> object:
    return object()
