"""Sin-cos positional embeddings with resolution interpolation.

SANA (Xie et al., ICLR 2025) drops positional embeddings at 512/1K (Sec. 2.2, "NoPE": the Mix-FFN
conv carries position) but its 2K and 4K models add the fixed 2-D sin-cos embedding of ViT/MAE.
Positions are measured against the training grid (``base_size``) and divided by
``interpolation`` (2.0 at 4K), so a larger canvas sees a stretched version of the same frequency
range (the PixArt-alpha resolution trick). Video configs add a third, temporal, component.

Channel order follows the released models: the first half of the channels encodes the column
(w) coordinate, the second half the row (h) coordinate; for video, [w, h, t] thirds.
"""

from __future__ import annotations

import torch

__all__ = ["sincos_1d", "sincos_2d", "sincos_3d"]


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``pos [M] -> [M, dim]``: ``[sin(pos w_i), cos(pos w_i)]`` with ``w_i = 10000^(-i / (dim/2))``."""
    omega = 1.0 / 10_000.0 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def _axis(n: int, base_size: int, interpolation: float, device: torch.device | None) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32, device=device) / (n / base_size) / interpolation


def sincos_2d(
    dim: int, h: int, w: int, base_size: int, interpolation: float = 1.0, device: torch.device | None = None
) -> torch.Tensor:
    """``[h*w, dim]`` fp32 embedding of a row-major ``h x w`` token grid."""
    rows = _axis(h, base_size, interpolation, device)[:, None].expand(h, w).reshape(-1)
    cols = _axis(w, base_size, interpolation, device)[None, :].expand(h, w).reshape(-1)
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1).float()


def sincos_3d(
    dim: int,
    t: int,
    h: int,
    w: int,
    base_size: int,
    interpolation: float = 1.0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``[t*h*w, dim]`` fp32 embedding of a ``t x h x w`` grid (frames outermost); frames count
    from 0 in unit steps, independent of the spatial resolution."""
    third = dim // 3
    spatial = sincos_2d(2 * third, h, w, base_size, interpolation, device)  # [h*w, 2*third]
    frames = sincos_1d(third, torch.arange(t, dtype=torch.float32, device=device)).float()  # [t, third]
    return torch.cat([spatial[None].expand(t, -1, -1), frames[:, None].expand(-1, h * w, -1)], dim=2).reshape(
        t * h * w, 2 * third + third
    )
