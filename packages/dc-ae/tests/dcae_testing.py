"""Helpers shared by the dc-ae tests: models with random but well-conditioned weights."""

from __future__ import annotations

import torch
from torch import nn

from dc_ae import DCAE, DCAEConfig
from dc_ae.norms import RMSNorm2d


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm affine parameters and BN running statistics, so that a wrong formula shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RMSNorm2d | nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(7)
    return model


def random_model(name: str | DCAEConfig, seed: int = 0) -> DCAE:
    """Default PyTorch init (well-conditioned attention denominators) plus non-trivial norm stats."""
    cfg = DCAEConfig.from_name(name) if isinstance(name, str) else name
    torch.manual_seed(seed)
    model = randomize_norms(DCAE(cfg), seed)
    return model.eval()
