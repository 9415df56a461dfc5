"""Block-by-block streamed calibration (SVDQuant, Li et al., ICLR 2025, Sec. 4.2/5.1; calibration_mode='blocks')."""

from __future__ import annotations

import logging

import pytest
import torch
from sq_testing import snr_db, structured_weight
from torch import Tensor, nn

from svdquant.config import SVDQuantConfig
from svdquant.errors import InputError, QuantizationError
from svdquant.quantize import quantize_, target_modules
from svdquant.svdq_linear import SVDQLinear

FAST = SVDQuantConfig(rank=8, svd="randomized", lowrank_iters=5, num_grids=6, max_calibration_tokens=256)
BLOCKS = FAST.model_copy(update={"calibration_mode": "blocks"})
D = 64


class TBlock(nn.Module):
    """A pre-norm transformer block conditioned by a keyword tensor (adaLN-style shift/scale)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Linear(D, 2 * D)  # W4A16 by the default filter
        self.norm = nn.LayerNorm(D, elementwise_affine=False)
        self.q, self.k, self.v, self.out = (nn.Linear(D, D) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v, self.out, self.fc1, self.fc2)):
                lin.weight.copy_(structured_weight(lin.out_features, lin.in_features, seed=seed * 10 + i) * 0.5)
        self.fail = False

    def forward(self, hidden_states: Tensor, *, cond: Tensor) -> Tensor:
        x = hidden_states
        if self.fail:
            raise RuntimeError("injected failure")
        shift, scale = self.adaLN_modulation(cond).unsqueeze(1).chunk(2, dim=-1)
        h = self.norm(x) * (1 + scale) + shift
        b, t, _ = h.shape
        q, k, v = (p(h).reshape(b, t, 2, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, D)
        x = x + self.out(a)
        h = self.norm(x)
        h[..., :3] *= 20.0  # a few outlier channels, as in DiT activations
        return x + self.fc2(nn.functional.gelu(self.fc1(h)))


class Net(nn.Module):
    def __init__(self, depth: int = 4, kw_hidden: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(16, D)  # skipped by the default filter
        self.cond_proj = nn.Linear(D, D)  # a target outside the blocks, before them
        self.blocks = nn.ModuleList(TBlock(i) for i in range(depth))
        self.head = nn.Linear(D, D)  # a target outside the blocks, after them
        self.kw_hidden = kw_hidden
        self.requires_grad_(False)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.embed(x)
        cond = self.cond_proj(c)
        for block in self.blocks:
            h = block(hidden_states=h, cond=cond) if self.kw_hidden else block(h, cond=cond)
        return self.head(h)


def _batches(n: int = 3, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, 16, 16, generator=g), torch.randn(2, D, generator=g)) for _ in range(n)]


def _snapshot(model: nn.Module) -> dict[str, tuple[type, Tensor]]:
    mods = dict(model.named_modules())
    return {k: (type(mods[k.rpartition(".")[0]]), v.clone()) for k, v in model.state_dict().items()}


def _assert_unchanged(model: nn.Module, before: dict[str, tuple[type, Tensor]]) -> None:
    after = _snapshot(model)
    assert before.keys() == after.keys()
    for k, (t, v) in before.items():
        assert after[k][0] is t and torch.equal(after[k][1], v), k
    assert not any(isinstance(m, SVDQLinear) for m in model.modules())
    assert not hasattr(model, "svdquant_config")


@pytest.mark.parametrize("kw_hidden", [False, True])
def test_blocks_mode_matches_whole_mode(kw_hidden: bool) -> None:
    calib, (x, c) = _batches(8), _batches(1, seed=7)[0]
    whole, blocks = Net(kw_hidden=kw_hidden), Net(kw_hidden=kw_hidden)
    ref = whole(x, c)
    names = target_modules(whole, FAST)
    assert "cond_proj" in names and "head" in names and "embed" not in names
    rep_w = quantize_(whole, FAST, calibration=calib)
    rep_b = quantize_(blocks, BLOCKS, calibration=calib)
    assert list(rep_b) == list(rep_w) == names
    assert all(isinstance(blocks.get_submodule(n), SVDQLinear) for n in names)
    assert rep_b["blocks.2.q"].shared_with == ("blocks.2.q", "blocks.2.k", "blocks.2.v")
    assert blocks.svdquant_config.calibration_mode == "blocks"
    # Block 0 and the layers outside the blocks see the same float inputs in both modes.
    assert torch.equal(blocks.blocks[0].fc1.proj_down, whole.blocks[0].fc1.proj_down)
    assert torch.equal(blocks.cond_proj.qweight, whole.cond_proj.qweight)
    snr_w, snr_b = snr_db(ref, whole(x, c)), snr_db(ref, blocks(x, c))
    assert snr_w > 10.0 and abs(snr_b - snr_w) < 1.5, (snr_w, snr_b)
    # Calibrated on what the quantized blocks produce, the streamed model is not worse on its calibration data.
    ref_c = Net(kw_hidden=kw_hidden)(*calib[0])
    assert snr_db(ref_c, blocks(*calib[0])) > snr_db(ref_c, whole(*calib[0])) - 0.5


def test_each_block_calibrates_on_the_quantized_output_of_the_one_before() -> None:
    model = Net()
    calls: list[tuple[int, bool, Tensor, Tensor]] = []
    for i, block in enumerate(model.blocks):

        def hook(mod: nn.Module, args: tuple[Tensor, ...], out: Tensor, i: int = i) -> None:
            quantized = any(isinstance(m, SVDQLinear) for m in mod.modules())
            calls.append((i, quantized, args[0].clone(), out.clone()))

        block.register_forward_hook(hook)
    calib = _batches()
    quantize_(model, BLOCKS, calibration=calib)
    nb = len(calib)
    for i in range(3):
        float_in = [c[2] for c in calls if c[0] == i + 1 and not c[1]]
        q_out = [c[3] for c in calls if c[0] == i and c[1]]
        float_out = [c[3] for c in calls if c[0] == i and not c[1]]
        # The whole-model pass, then one calibration run of block i + 1 on the cached inputs.
        assert len(float_in) == 2 * nb and len(q_out) == nb
        for got, want, flt in zip(float_in[nb:], q_out, float_out[:nb], strict=True):
            assert torch.equal(got, want)
            assert not torch.allclose(got, flt)  # the quantization error of the earlier blocks is seen
    # The last block's quantized output feeds no block: it is never computed.
    assert not any(c[0] == 3 and c[1] for c in calls)


@pytest.mark.parametrize("offload", [True, False])
def test_cached_inputs_stay_one_block_wide(offload: bool, caplog: pytest.LogCaptureFixture) -> None:
    calib = _batches(4)
    hidden = sum(2 * 16 * D * 4 for _ in calib)  # one block's hidden states for the calibration set, fp32
    cond = sum(2 * D * 4 for _ in calib)  # the conditioning, cached once and shared by every block
    cfg = BLOCKS.model_copy(update={"offload_block_inputs": offload})
    with caplog.at_level(logging.DEBUG, logger="svdquant.calibration"):
        quantize_(Net(), cfg, calibration=calib)
    held = [r.cached_bytes for r in caplog.records if hasattr(r, "cached_bytes")]
    assert len(held) == 3  # one hand-over per block but the last
    # The block's inputs and the next block's, never the four blocks' activations at once.
    assert max(held) == 2 * hidden + cond < 4 * hidden


def test_block_selection_and_errors() -> None:
    calib = _batches(1)
    auto, named = Net(), Net()
    quantize_(auto, BLOCKS, calibration=calib)
    quantize_(named, BLOCKS.model_copy(update={"blocks": "blocks"}), calibration=calib)
    assert torch.equal(auto.blocks[3].fc2.proj_up, named.blocks[3].fc2.proj_up)
    model = Net()
    before = _snapshot(model)
    with pytest.raises(InputError, match=r"blocks='layers' is not a submodule.*\['blocks'\]"):
        quantize_(model, BLOCKS.model_copy(update={"blocks": "layers"}), calibration=calib)
    with pytest.raises(InputError, match=r"blocks='head' must name an nn.ModuleList.*found Linear"):
        quantize_(model, BLOCKS.model_copy(update={"blocks": "head"}), calibration=calib)
    mlp = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))
    with pytest.raises(InputError, match="no nn.ModuleList holding targeted layers"):
        quantize_(mlp, BLOCKS, calibration=[torch.randn(4, D)])
    _assert_unchanged(model, before)


class _TupleBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, D)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return self.lin(x), None


def test_tuple_outputs_are_refused() -> None:
    class TupleNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([_TupleBlock(), _TupleBlock()])

        def forward(self, x: Tensor) -> Tensor:
            for layer in self.layers:
                x = layer(x)[0]
            return x

    model = TupleNet().requires_grad_(False)
    before = _snapshot(model)
    with pytest.raises(InputError, match=r"block 'layers.0' returned tuple.*calibration_mode='whole'.*left unchanged"):
        quantize_(model, BLOCKS, calibration=[torch.randn(4, D)])
    _assert_unchanged(model, before)
    quantize_(model, FAST, calibration=[torch.randn(4, D)])  # whole mode handles it


def test_a_failing_middle_block_rolls_everything_back() -> None:
    calib = _batches(2)
    model = Net()
    before = _snapshot(model)
    bad = BLOCKS.model_copy(update={"overrides": (("blocks.2.fc2", {"rank": 100}),)})
    with pytest.raises(InputError, match=r"layer 'blocks.2.fc2'.*rank 100 exceeds.*left unchanged"):
        quantize_(model, bad, calibration=calib)
    _assert_unchanged(model, before)

    model = Net()
    before = _snapshot(model)
    runs = {"n": 0}
    block2 = model.blocks[2]

    def arm(_m: nn.Module, _args: object) -> None:
        # Fail on the first call of block 2 after the whole-model pass (blocks 0 and 1 are swapped by then).
        runs["n"] += 1
        if runs["n"] > len(calib):
            block2.fail = True

    handle = block2.register_forward_pre_hook(arm)
    with pytest.raises(QuantizationError, match=r"running block 'blocks.2'.*injected failure.*left unchanged"):
        quantize_(model, BLOCKS, calibration=calib)
    handle.remove()
    block2.fail = False
    _assert_unchanged(model, before)


def test_blocks_mode_needs_the_block_to_be_called() -> None:
    model = Net()
    with pytest.raises(InputError, match="never called block 'blocks.0'"):
        quantize_(model, BLOCKS, calibration=lambda m: m.head(torch.randn(2, D)))
