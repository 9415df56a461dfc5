"""Block-input rotation of QoQ: fold the RMSNorm weights into the next linears, then rotate by Hadamard matrices.

Lin et al., "QServe" (arXiv 2405.04532), Sec. 4.3 (rotation, after QuaRot). With the norm weights folded into
the linears that read them, an RMSNorm commutes with any orthogonal ``H``: ``rmsnorm(x H) = rmsnorm(x) H``. So the
residual stream can be stored rotated, ``x' = x H``: the embedding rows and the outputs of ``o_proj``/``down_proj``
are multiplied by ``H``, and every linear that reads the stream (q/k/v, gate/up, lm_head) gets ``W H`` as its
weight, which undoes it. ``H`` spreads each outlier channel over all channels, which flattens the inputs of
q/k/v/gate/up for 8-bit activations. A second, per-head Hadamard ``Hd`` rotates the value vectors (v_proj output
rows) and is undone on the o_proj input columns of every query head. All of it is offline: zero run-time cost.

Sizes that are not a power of two (e.g. 576, 896) get a seeded random orthogonal matrix instead (QR of a Gaussian,
as QuaRot/SpinQuant's random rotations), which is equally function-preserving and also spreads outliers.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from qserve.errors import ConfigError
from qserve.model import LlamaDecoderLayer, LlamaForCausalLM

__all__ = ["decoder_layers", "fold_norms", "hadamard", "rotate_model", "rotation_matrix"]


def decoder_layers(model: LlamaForCausalLM) -> list[LlamaDecoderLayer]:
    """The decoder layers of ``model``, typed."""
    return [cast(LlamaDecoderLayer, layer) for layer in model.model.layers]


def hadamard(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalized Sylvester Hadamard matrix [n, n] (orthogonal, symmetric); ``n`` must be a power of two."""
    if n < 1 or n & (n - 1):
        raise ConfigError(f"the Hadamard rotation needs a power-of-two size, found {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return (h / n**0.5).to(dtype)


def rotation_matrix(n: int, seed: int = 0) -> torch.Tensor:
    """Orthogonal [n, n] float64: :func:`hadamard` for a power of two, else a seeded random orthogonal matrix."""
    if n >= 1 and not n & (n - 1):
        return hadamard(n)
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]  # the sign fix makes Q Haar-distributed


@torch.no_grad()
def _scale_inputs(linears: list[nn.Linear], g: torch.Tensor) -> None:
    for lin in linears:
        lin.weight.mul_(g.to(lin.weight.dtype)[None, :])


@torch.no_grad()
def fold_norms(model: LlamaForCausalLM) -> None:
    """Multiply every RMSNorm weight into the input columns of the linears after it and set the norm to 1."""
    model.untie_embeddings()
    for layer in decoder_layers(model):
        attn, mlp = layer.self_attn, layer.mlp
        _scale_inputs([attn.q_proj, attn.k_proj, attn.v_proj], layer.input_layernorm.weight.detach().clone())
        layer.input_layernorm.weight.fill_(1.0)
        _scale_inputs([mlp.gate_proj, mlp.up_proj], layer.post_attention_layernorm.weight.detach().clone())
        layer.post_attention_layernorm.weight.fill_(1.0)
    _scale_inputs([model.lm_head], model.model.norm.weight.detach().clone())
    model.model.norm.weight.fill_(1.0)


@torch.no_grad()
def _rotate_input(lin: nn.Linear, h: torch.Tensor) -> None:
    w = lin.weight
    w.copy_((w.double() @ h).to(w.dtype))  # y = (x H)(W H)^T = x W^T


@torch.no_grad()
def _rotate_output(lin: nn.Linear, h: torch.Tensor) -> None:
    w = lin.weight
    w.copy_((h.t() @ w.double()).to(w.dtype))  # y H = x (H^T W)^T
    if lin.bias is not None:
        lin.bias.copy_((lin.bias.double() @ h).to(lin.bias.dtype))


@torch.no_grad()
def rotate_model(model: LlamaForCausalLM, heads: bool = True, seed: int = 0) -> None:
    """Fold the norms, then rotate the residual stream (and, if ``heads``, the value heads) in place.

    The float model computes the same function afterwards (up to rounding). ``seed`` picks the random rotation
    used for sizes that are not a power of two.
    """
    c, d = model.config.hidden_size, model.config.head_dim
    h = rotation_matrix(c, seed)
    hd = rotation_matrix(d, seed + 1) if heads else None
    fold_norms(model)
    emb = model.model.embed_tokens.weight
    emb.copy_((emb.double() @ h).to(emb.dtype))
    for layer in decoder_layers(model):
        attn, mlp = layer.self_attn, layer.mlp
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
            _rotate_input(lin, h)
        _rotate_output(attn.o_proj, h)
        _rotate_output(mlp.down_proj, h)
        if hd is not None:
            hkv, hq = attn.num_kv_heads, attn.num_heads
            wv = attn.v_proj.weight  # [Hkv * D, C]: v_h' = v_h Hd, i.e. rows Hd^T W_h
            wv.copy_(torch.einsum("ed,hec->hdc", hd, wv.double().view(hkv, d, c)).reshape_as(wv).to(wv.dtype))
            if attn.v_proj.bias is not None:
                b = attn.v_proj.bias
                b.copy_((b.double().view(hkv, d) @ hd).reshape_as(b).to(b.dtype))
            wo = attn.o_proj.weight  # [C, Hq * D]: every head's columns become W_h Hd
            wo.copy_((wo.double().view(c, hq, d) @ hd).reshape_as(wo).to(wo.dtype))
    _rotate_input(model.lm_head, h)
