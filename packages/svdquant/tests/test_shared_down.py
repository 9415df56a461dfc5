"""One shared smoothing and down-projection for layers reading one input (SVDQuant, Li et al., ICLR 2025, Sec. 4.2)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from sq_testing import snr_db, structured_weight
from torch import Tensor, nn

from svdquant.checkpoint import load_quantized, save_quantized
from svdquant.config import SVDQuantConfig
from svdquant.errors import ConfigError, InputError
from svdquant.lora import apply_lora, reset_lora
from svdquant.quantize import quantize_
from svdquant.svdq_linear import SVDQLinear
from svdquant.svdq_shared import SharedInput, SVDQSharedLinear

FAST = SVDQuantConfig(rank=8, svd="randomized", lowrank_iters=5, num_grids=6, max_calibration_tokens=256)
D, E = 64, 128


class Attention(nn.Module):
    """A diffusers-style attention: separate to_q/to_k/to_v Linears, to_out a ModuleList (Linear, Dropout)."""

    def __init__(self, dim: int, kv_dim: int, seed: int) -> None:
        super().__init__()
        self.to_q = nn.Linear(dim, dim)
        self.to_k, self.to_v = nn.Linear(kv_dim, dim), nn.Linear(kv_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        with torch.no_grad():
            for i, lin in enumerate((self.to_q, self.to_k, self.to_v, self.to_out[0])):
                lin.weight.copy_(structured_weight(lin.out_features, lin.in_features, seed=seed + i))

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None) -> Tensor:
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, t, d = hidden_states.shape
        q = self.to_q(hidden_states).reshape(b, t, 2, -1).transpose(1, 2)
        k, v = (p(ctx).reshape(b, ctx.shape[1], 2, -1).transpose(1, 2) for p in (self.to_k, self.to_v))
        a = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        return self.to_out[1](self.to_out[0](a))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn1 = Attention(D, D, seed=1)  # self-attention: q, k and v read one tensor
        self.attn2 = Attention(D, E, seed=11)  # cross-attention: k and v read the text states
        self.requires_grad_(False)

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        h = self.norm1(x)
        h[..., :2] *= 30.0  # outlier channels
        x = x + self.attn1(h)
        return x + self.attn2(self.norm2(x), encoder_hidden_states=text)


def _data(n: int = 3, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, 16, D, generator=g), torch.randn(2, 8, E, generator=g) * 2) for _ in range(n)]


def _unshared(layer: SVDQLinear) -> SVDQLinear:
    """A plain SVDQLinear with copies of ``layer``'s buffers (nothing shared)."""
    plain = SVDQLinear(
        layer.in_features,
        layer.out_features,
        layer.rank,
        fmt=layer.fmt,
        group_size=layer.group_size,
        bias=layer.bias is not None,
        act_unsigned=layer.act_unsigned,
        w4a16=layer.w4a16,
        dtype=layer.dtype,
        wcscales=layer.wcscales is not None,
    )
    plain.load_state_dict({k: v.clone() for k, v in layer.state_dict().items()})
    return plain


SELF, CROSS = ("attn1.to_q", "attn1.to_k", "attn1.to_v"), ("attn2.to_k", "attn2.to_v")


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_siblings_share_one_factor_and_match_unshared_layers(fmt: str) -> None:
    block = Block()
    x, text = _data(1, seed=5)[0]
    ref = block(x, text)
    reports = quantize_(block, FAST.model_copy(update={"fmt": fmt}), calibration=_data())
    for group in (SELF, CROSS):
        layers = [block.get_submodule(n) for n in group]
        assert all(isinstance(m, SVDQSharedLinear) for m in layers)
        assert all(reports[n].shared_with == group for n in group)
        lead = layers[0]
        assert isinstance(lead, SVDQSharedLinear) and lead.shared_input is not None
        assert lead.shared_input.members == group
        for m in layers[1:]:
            assert m.proj_down is lead.proj_down and m.smooth_factor is lead.smooth_factor
            assert m.shared_input is lead.shared_input
        assert not torch.equal(lead.smooth_factor, torch.ones(lead.in_features))  # smoothing was searched
    assert not reports["attn2.to_q"].shared_with and not reports["attn1.to_out.0"].shared_with
    assert type(block.attn2.to_q) is SVDQLinear
    assert snr_db(ref, block(x, text)) > 15.0
    # Each member computes what an independent layer holding the same tensors computes.
    h = block.norm1(x)
    for n in SELF:
        m = block.get_submodule(n)
        assert torch.allclose(m(h), _unshared(m)(h), rtol=0, atol=1e-5)
    for n in CROSS:
        m = block.get_submodule(n)
        assert torch.allclose(m(text), _unshared(m)(text), rtol=0, atol=1e-5)


def test_the_down_projection_runs_once_per_input() -> None:
    block = Block()
    quantize_(block, FAST, calibration=_data())
    shared_self = block.attn1.to_q.shared_input
    shared_cross = block.attn2.to_k.shared_input
    assert isinstance(shared_self, SharedInput) and isinstance(shared_cross, SharedInput)
    before = (shared_self.down_computed, shared_self.act_computed, shared_cross.down_computed)
    x, text = _data(2, seed=3)[1]
    block(x, text)
    block(x, text.clone())
    after = (shared_self.down_computed, shared_self.act_computed, shared_cross.down_computed)
    # Two forwards: two inputs each for q/k/v and for k/v, instead of six and four.
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (2, 2, 2)
    block(x, text)
    block(x, text)  # the very same, unmodified text tensor again: its k/v down-projection is reused
    assert shared_cross.down_computed == after[2] + 1
    # An input changed in place is not mistaken for the cached one.
    h = torch.randn(2, 4, D)
    y0 = block.attn1.to_k(h)
    h.mul_(2.0)
    assert torch.allclose(block.attn1.to_k(h), _unshared(block.attn1.to_k)(h), rtol=0, atol=1e-5)
    assert not torch.allclose(block.attn1.to_k(h), y0)


def test_sharing_off_and_explicit_groups() -> None:
    block = Block()
    reports = quantize_(block, FAST.model_copy(update={"share_inputs": False}), calibration=_data())
    assert not any(r.shared_with for r in reports.values())
    assert all(type(block.get_submodule(n)) is SVDQLinear for n in SELF)
    assert block.attn1.to_q.proj_down is not block.attn1.to_k.proj_down

    # Named groups work without calibration data (the branch then fits the weights).
    block = Block()
    cfg = FAST.model_copy(update={"shared_groups": (SELF,)})
    reports = quantize_(block, cfg)
    assert reports["attn1.to_v"].shared_with == SELF and not reports["attn2.to_k"].shared_with
    assert block.attn1.to_v.proj_down is block.attn1.to_q.proj_down

    with pytest.raises(InputError, match=r"shared group.*every member needs in_features=64.*'attn2.to_k' has 128"):
        quantize_(Block(), FAST.model_copy(update={"shared_groups": (("attn1.to_q", "attn2.to_k"),)}))
    with pytest.raises(InputError, match=r"shared group.*\['attn1.nope'\] are not quantized with the others"):
        quantize_(Block(), FAST.model_copy(update={"shared_groups": (("attn1.to_q", "attn1.nope"),)}))
    with pytest.raises(InputError, match="different settings"):
        cfg = FAST.model_copy(update={"shared_groups": (SELF,), "overrides": (("attn1.to_q", {"rank": 4}),)})
        quantize_(Block(), cfg)
    with pytest.raises(ConfigError, match="more than one shared group"):
        SVDQuantConfig(shared_groups=(("a", "b"), ("b", "c")))


def test_save_load_is_exact_and_relinks(tmp_path: Path) -> None:
    block = Block()
    quantize_(block, FAST.model_copy(update={"fmt": "nvfp4"}), calibration=_data())
    path = save_quantized(block, tmp_path / "q.safetensors")
    fresh = load_quantized(Block(), path)
    want, got = block.state_dict(), fresh.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]) and want[k].dtype == got[k].dtype, k
    for group in (SELF, CROSS):
        layers = [fresh.get_submodule(n) for n in group]
        assert all(type(m) is SVDQSharedLinear for m in layers)
        assert all(m.proj_down is layers[0].proj_down and m.shared_input is layers[0].shared_input for m in layers)
        assert layers[0].shared_input.members == group
    assert type(fresh.attn2.to_q) is SVDQLinear
    x, text = _data(1, seed=9)[0]
    assert torch.equal(block(x, text), fresh(x, text))
    # A copy shares within itself, not with the original; pickling drops the cache (weak references).
    dup = copy.deepcopy(fresh)
    assert dup.attn1.to_k.shared_input is dup.attn1.to_q.shared_input is not fresh.attn1.to_q.shared_input
    assert torch.equal(dup(x, text), fresh(x, text))
    restored = pickle.loads(pickle.dumps(fresh.attn1.to_q.shared_input))
    assert restored.members == SELF and restored.down_computed == fresh.attn1.to_q.shared_input.down_computed


def test_lora_on_one_member_unshares_only_that_member() -> None:
    block = Block()
    quantize_(block, FAST, calibration=_data())
    h = block.norm1(_data(1, seed=4)[0][0])
    before = {n: block.get_submodule(n)(h) for n in SELF}
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, D, generator=g) * 0.1, torch.randn(D, 4, generator=g) * 0.1
    lora = {"attn1.to_q.lora_A.weight": a, "attn1.to_q.lora_B.weight": b}
    apply_lora(block, lora, 1.5, name="style")
    q = block.attn1.to_q
    assert q.rank == 12 and block.attn1.to_k.rank == 8
    shared = q.shared_input
    assert shared is not None
    n0 = shared.down_computed
    outs = {n: block.get_submodule(n)(h) for n in SELF}
    assert shared.down_computed - n0 == 2  # q's own down-projection, then the one k and v share
    assert torch.allclose(outs["attn1.to_q"], before["attn1.to_q"] + 1.5 * (h @ a.T) @ b.T, rtol=0, atol=1e-4)
    for n in SELF[1:]:
        assert torch.equal(outs[n], before[n])
    reset_lora(block)
    for n in SELF:
        assert torch.allclose(block.get_submodule(n)(h), before[n], rtol=0, atol=1e-6)
