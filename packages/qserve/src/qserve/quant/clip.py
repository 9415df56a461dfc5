"""Weight-clipping search of QoQ for the W4 quantizers: a per-group (or per-channel) range shrink ratio.

Lin et al., "QServe" (arXiv 2405.04532), Sec. 4.1; the reference searches ratios in [0.8, 1] at group
granularity and scores each by the layer's output error on calibration inputs. Here the error of group g of
output channel n is ``d^T (X_g^T X_g) d`` with ``d`` the group's weight error and ``X_g`` the calibration
inputs of the group's 128 channels (exactly ``|X_g d|^2``, from one Gram matrix per group), and each group keeps
its best ratio. For the g128 format the ratio shrinks the group's level-1 (int8) range, so the per-channel
level-0 scale and the protective range are untouched.
"""

from __future__ import annotations

import torch

from qserve.errors import InputError
from qserve.quant.formats import dequantize_weight, quantize_w4_channel, quantize_w4_g128

__all__ = ["clip_grid", "search_clip"]


def clip_grid(steps: int, min_ratio: float = 0.8) -> torch.Tensor:
    """``steps`` ratios from 1 down to ``min_ratio``."""
    return torch.linspace(1.0, min_ratio, max(steps, 1))


@torch.no_grad()
def search_clip(w: torch.Tensor, x: torch.Tensor, group: int = 128, ratios: torch.Tensor | None = None) -> torch.Tensor:
    """Best clip ratio per group, [N, K/group] (``group`` > 0) or [N] (per channel, ``group`` = -1).

    ``w`` [N, K] is the weight, ``x`` [T, K] calibration inputs of the layer.
    """
    n, k = w.shape
    if x.dim() != 2 or x.shape[1] != k:
        raise InputError(f"calibration inputs must be [T, {k}], found {tuple(x.shape)}")
    ratios = clip_grid(11) if ratios is None else ratios
    g = group if group > 0 else k
    xg = x.double().to(w.device).view(-1, k // g, g)  # [T, G, g]
    gram = torch.einsum("tgi,tgj->gij", xg, xg)  # [G, g, g]
    wf = w.double()
    best_err = torch.full((n, k // g), float("inf"), dtype=torch.float64, device=w.device)
    best = torch.ones(n, k // g, device=w.device)
    for r in ratios.tolist():
        if group > 0:
            q = dequantize_weight(quantize_w4_g128(w, group, torch.full((n, k // g), r, device=w.device)))
        else:
            q = dequantize_weight(quantize_w4_channel(w, torch.full((n,), r, device=w.device)))
        d = (wf - q.double()).view(n, k // g, g)  # [N, G, g]
        err = torch.einsum("ngi,gij,ngj->ng", d, gram, d)  # [N, G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, r), best)
    return best if group > 0 else best[:, 0]
