"""Shared helpers for the linear-dit tests: seeded tiny models and text inputs."""

from __future__ import annotations

import torch

from linear_dit import LinearDiT, LinearDiTConfig


def random_model(name: str = "tiny", seed: int = 0, **overrides: object) -> LinearDiT:
    """A preset (optionally with fields overridden) with seeded weights, in eval mode; every
    norm weight and the video temporal conv are randomised too, so no parameter is trivially
    the identity and layout or parity bugs cannot hide behind ones and zeros."""
    cfg = LinearDiTConfig.from_name(name)
    if overrides:
        cfg = LinearDiTConfig.model_validate({**cfg.model_dump(), **overrides})
    torch.manual_seed(seed)
    model = LinearDiT(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or "temporal_conv" in pname:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "norm" in pname else 0.0))
    return model


def text_inputs(
    config: LinearDiTConfig, batch: int = 2, length: int = 5, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random text-encoder states ``[B, L, caption_channels]`` and a mask that pads the first
    sample after 3 tokens (the others keep all tokens)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(batch, length, config.caption_channels, generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, min(3, length) :] = 0
    return y, mask


def latent(
    config: LinearDiTConfig, batch: int = 2, h: int = 8, w: int = 6, frames: int = 3, seed: int = 2
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, config.in_channels, frames, h, w) if config.video else (batch, config.in_channels, h, w)
    return torch.randn(*shape, generator=g)
