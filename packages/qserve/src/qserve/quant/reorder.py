"""Static input-channel reordering of QoQ for the down_proj inputs.

Lin et al., "QServe" (arXiv 2405.04532), Sec. 4.3 (channel reordering): sorting the input channels of a linear by
their calibration absmax puts channels of similar magnitude in the same 128-group, so each group's UINT4 range is
tighter. For down_proj the permutation is free at run time: the rows of gate_proj and up_proj (which produce its
input) are permuted with the same index, and the elementwise SwiGLU in between does not mix channels.

The o_proj side of the reference is not done here: with head_dim 128 a group is exactly one head, so a
permutation inside each head leaves every group's contents unchanged, and permuting whole heads needs the query,
key and value heads to move together (GQA).
"""

from __future__ import annotations

import torch

from qserve.errors import InputError
from qserve.model import LlamaMLP

__all__ = ["reorder_down", "reorder_index"]


def reorder_index(importance: torch.Tensor) -> torch.Tensor:
    """The permutation that sorts channels by decreasing ``importance`` [I] (ties keep their order)."""
    return torch.sort(importance.float(), descending=True, stable=True).indices


@torch.no_grad()
def reorder_down(mlp: LlamaMLP, perm: torch.Tensor) -> None:
    """Permute gate/up output rows and down_proj input columns by ``perm`` [I]; the MLP function is unchanged."""
    i = mlp.down_proj.in_features
    if perm.shape != (i,) or not torch.equal(torch.sort(perm).values, torch.arange(i, device=perm.device)):
        raise InputError(f"perm must be a permutation of {i} channels, found shape {tuple(perm.shape)}")
    for lin in (mlp.gate_proj, mlp.up_proj):
        lin.weight.copy_(lin.weight[perm])
        if lin.bias is not None:
            lin.bias.copy_(lin.bias[perm])
    mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, perm])
