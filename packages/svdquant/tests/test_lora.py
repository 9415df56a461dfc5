"""LoRA merging by rank concatenation into the low-rank branch: exactness at several strengths, stacking,
re-weighting, unmerge/reset bit-identity, key layouts and name mapping, and bad input that leaves the model as it
was."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from svdquant.errors import InputError
from svdquant.lora import applied_loras, apply_lora, remove_lora, reset_lora, set_lora_strength


class BranchLinear(nn.Module):
    """Stand-in for SVDQLinear: a dense weight plus the low-rank branch acting on the raw input."""

    def __init__(self, k: int, n: int, r: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.in_features, self.out_features = k, n
        self.register_buffer("weight", torch.randn(n, k, generator=g))
        self.register_buffer("proj_down", torch.randn(k, r, generator=g))
        self.register_buffer("proj_up", torch.randn(n, r, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.T + (x @ self.proj_down) @ self.proj_up.T


class Block(nn.Module):
    def __init__(self, d: int = 12, h: int = 20, r: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.attn = nn.Module()
        self.attn.to_q = BranchLinear(d, d, r, seed)
        self.attn.to_k = BranchLinear(d, d, r, seed + 1)
        self.ff = BranchLinear(d, h, r, seed + 2)
        self.norm = nn.LayerNorm(d)  # not a target


def lora_pair(k: int, n: int, r: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, k, generator=g), torch.randn(n, r, generator=g)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model: nn.Module, snap: dict[str, Tensor]) -> None:
    sd = model.state_dict()
    assert sd.keys() == snap.keys()
    for k, v in snap.items():
        assert sd[k].shape == v.shape and sd[k].dtype == v.dtype, k
        assert torch.equal(sd[k], v), k


def peft_sd(a: Tensor, b: Tensor, module: str, alpha: float | None = None) -> dict[str, Tensor]:
    sd = {f"{module}.lora_A.weight": a, f"{module}.lora_B.weight": b}
    if alpha is not None:
        sd[f"{module}.alpha"] = torch.tensor(alpha)
    return sd


def delta(x: Tensor, a: Tensor, b: Tensor, coeff: float) -> Tensor:
    return coeff * ((x.double() @ a.double().T) @ b.double().T)


@pytest.mark.parametrize("strength", [1.0, 0.5, 2.5, -1.0])
def test_merged_output_is_base_plus_scaled_lora(strength: float) -> None:
    layer = BranchLinear(24, 16, 4, seed=0)
    x = torch.randn(9, 24, generator=torch.Generator().manual_seed(1))
    base = layer(x)
    a, b = lora_pair(24, 16, 3, seed=2)
    model = nn.Sequential(layer)
    h = apply_lora(model, peft_sd(a, b, "0", alpha=6.0), strength, name="style")
    assert h.modules == ("0",) and h.ranks == (3,) and h.scales == (2.0,)
    assert layer.proj_down.shape == (24, 7) and layer.proj_up.shape == (16, 7)
    expected = base.double() + delta(x, a, b, strength * 2.0)
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-4)
    # the base columns are untouched; the new ones are exactly A^T and strength*scale*B
    assert torch.equal(layer.proj_down[:, 4:], a.T) and torch.equal(layer.proj_up[:, 4:], b * (strength * 2.0))
    assert applied_loras(model) == {"style": strength}


def test_two_loras_stack_and_strength_changes_only_its_columns() -> None:
    model = Block()
    snap = snapshot(model)
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(3))
    base = model.attn.to_q(x)
    a1, b1 = lora_pair(12, 12, 2, seed=4)
    a2, b2 = lora_pair(12, 12, 5, seed=5)
    apply_lora(model, peft_sd(a1, b1, "attn.to_q", alpha=1.0), 0.7, name="one")
    after_one = {k: v.clone() for k, v in model.state_dict().items()}
    h2 = apply_lora(model, peft_sd(a2, b2, "attn.to_q"), -1.5, name="two")
    assert model.attn.to_q.proj_down.shape == (12, 4 + 2 + 5)
    expected = base.double() + delta(x, a1, b1, 0.7 * 0.5) + delta(x, a2, b2, -1.5)
    torch.testing.assert_close(model.attn.to_q(x).double(), expected, rtol=1e-5, atol=1e-4)

    up_before = model.attn.to_q.proj_up.clone()
    h2.set_strength(3.0)
    up = model.attn.to_q.proj_up
    assert torch.equal(up[:, :6], up_before[:, :6])  # base and LoRA "one" columns unchanged
    assert torch.equal(up[:, 6:], b2 * 3.0)
    set_lora_strength(model, "one", 0.0)
    assert torch.equal(model.attn.to_q.proj_up[:, 4:6], torch.zeros(12, 2))
    set_lora_strength(model, "one", 0.7)  # back from zero: recomputed from B, not rescaled
    assert torch.equal(model.attn.to_q.proj_up[:, :6], up_before[:, :6])
    assert applied_loras(model) == {"one": 0.7, "two": 3.0}

    set_lora_strength(model, "two", -1.5)
    remove_lora(model, "two")  # removing the last one restores exactly the state after the first
    assert_bit_identical(model, after_one)
    h2 = apply_lora(model, peft_sd(a2, b2, "attn.to_q"), -1.5, name="two")
    remove_lora(model, "one")  # removing one from the middle keeps the other's exact columns
    assert torch.equal(model.attn.to_q.proj_up[:, 4:], b2 * -1.5)
    assert torch.equal(model.attn.to_q.proj_down[:, 4:], a2.T)
    reset_lora(model)
    assert_bit_identical(model, snap)
    assert applied_loras(model) == {}
    assert not hasattr(model.attn.to_q, "_svdq_lora")


def test_reset_restores_base_after_several_loras_on_several_modules() -> None:
    model = Block()
    snap = snapshot(model)
    for i in range(3):
        a1, b1 = lora_pair(12, 12, 2 + i, seed=10 + i)
        a2, b2 = lora_pair(12, 20, 3, seed=20 + i)
        apply_lora(model, peft_sd(a1, b1, "attn.to_k") | peft_sd(a2, b2, "ff"), 1.0 + i, name=f"l{i}")
    assert model.ff.proj_down.shape == (12, 4 + 9)
    reset_lora(model)
    assert_bit_identical(model, snap)
    reset_lora(model)  # no-op on a clean model
    assert_bit_identical(model, snap)


def test_unconsumed_keys_are_listed_and_nothing_changes() -> None:
    model = Block()
    snap = snapshot(model)
    a, b = lora_pair(12, 12, 2, seed=0)
    sd = peft_sd(a, b, "attn.to_q", alpha=2.0)
    sd |= {
        "attn.to_v.lora_A.weight": a,  # no such module
        "attn.to_v.lora_B.weight": b,
        "attn.to_k.lora_A.weight": a,  # A without B
        "attn.to_q.dora_scale": torch.ones(12),  # an unknown key
        "norm.lora_A.weight": a,  # a module that is not a target
        "norm.lora_B.weight": b,
    }
    with pytest.raises(InputError) as info:
        apply_lora(model, sd, name="bad")
    msg = str(info.value)
    for key in (
        "attn.to_v.lora_A.weight",
        "attn.to_v.lora_B.weight",
        "attn.to_k.lora_A.weight",
        "attn.to_q.dora_scale",
        "norm.lora_A.weight",
    ):
        assert key in msg
    assert "6 unconsumed" in msg and "'attn.to_q.lora_A.weight'" not in msg
    assert_bit_identical(model, snap)
    assert applied_loras(model) == {}


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda sd: sd.update({"ff.lora_A.weight": torch.randn(2, 13)}), "expected shape [r, 12]"),
        (lambda sd: sd.update({"ff.lora_B.weight": torch.randn(19, 2)}), "expected shape [20, r]"),
        (lambda sd: sd.update({"ff.lora_B.weight": torch.randn(20, 3)}), "same non-zero rank"),
        (lambda sd: sd.update({"ff.lora_A.weight": torch.randn(2)}), "'ff.lora_A.weight'"),
        (lambda sd: sd["ff.lora_B.weight"].__setitem__((0, 0), float("nan")), "NaN or Inf"),
        (lambda sd: sd["ff.lora_A.weight"].__setitem__((1, 1), float("inf")), "NaN or Inf"),
        (lambda sd: sd.update({"ff.alpha": torch.tensor(float("nan"))}), "finite"),
        (lambda sd: sd.update({"ff.alpha": torch.ones(2)}), "expected a scalar"),
    ],
)
def test_bad_tensors_raise_and_leave_the_model_unchanged(mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    model = Block()
    snap = snapshot(model)
    a, b = lora_pair(12, 12, 2, seed=0)
    fa, fb = lora_pair(12, 20, 2, seed=1)
    sd = peft_sd(a, b, "attn.to_q") | peft_sd(fa, fb, "ff")  # to_q is valid and would merge first
    mutate(sd)
    with pytest.raises(InputError, match=None) as info:
        apply_lora(model, sd)
    assert needle in str(info.value)
    assert_bit_identical(model, snap)


def test_bad_strength_name_and_unknown_lora() -> None:
    model = Block()
    a, b = lora_pair(12, 12, 2, seed=0)
    with pytest.raises(InputError, match="finite strength"):
        apply_lora(model, peft_sd(a, b, "attn.to_q"), float("inf"))
    apply_lora(model, peft_sd(a, b, "attn.to_q"), name="x")
    with pytest.raises(InputError, match="already applied"):
        apply_lora(model, peft_sd(a, b, "attn.to_k"), name="x")
    with pytest.raises(InputError, match="expected it to be applied"):
        set_lora_strength(model, "y", 1.0)
    with pytest.raises(InputError, match="expected it to be applied"):
        remove_lora(model, "y")
    with pytest.raises(InputError, match="no low-rank|proj_down"):
        apply_lora(nn.Linear(3, 3), peft_sd(a, b, "x"))
    with pytest.raises(InputError, match="found none"):
        apply_lora(model, {})


@pytest.mark.parametrize(
    ("key_prefix", "prefix"),
    [
        ("transformer.", None),
        ("base_model.model.", None),
        ("diffusion_model.", None),
        ("custom.", "custom."),
        ("", None),
    ],
)
def test_prefixes_are_stripped(key_prefix: str, prefix: str | None) -> None:
    model = Block()
    a, b = lora_pair(12, 12, 2, seed=0)
    h = apply_lora(model, peft_sd(a, b, key_prefix + "attn.to_k"), prefix=prefix)
    assert h.modules == ("attn.to_k",)
    assert torch.equal(model.attn.to_k.proj_down[:, 4:], a.T)


def test_unknown_prefix_without_option_is_unconsumed_and_name_map_fixes_it() -> None:
    model = Block()
    a, b = lora_pair(12, 12, 2, seed=0)
    sd = peft_sd(a, b, "custom.blocks.attn.to_k")
    with pytest.raises(InputError, match="unconsumed"):
        apply_lora(model, sd)
    h = apply_lora(model, sd, name_map=lambda n: n.replace("custom.blocks.", ""))
    assert h.modules == ("attn.to_k",)


def test_kohya_and_peft_adapter_and_old_diffusers_layouts() -> None:
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(9))
    a, b = lora_pair(12, 12, 4, seed=0)
    fa, fb = lora_pair(12, 20, 4, seed=1)
    layouts = {
        "kohya": {
            "lora_unet_attn_to_q.lora_down.weight": a,
            "lora_unet_attn_to_q.lora_up.weight": b,
            "lora_unet_attn_to_q.alpha": torch.tensor(2.0),
            "lora_unet_ff.lora_down.weight": fa,
            "lora_unet_ff.lora_up.weight": fb,
            "lora_unet_ff.alpha": torch.tensor(2.0),
        },
        "peft_adapter": {
            "base_model.model.attn.to_q.lora_A.default.weight": a,
            "base_model.model.attn.to_q.lora_B.default.weight": b,
            "base_model.model.attn.to_q.lora_alpha": torch.tensor(2.0),
            "base_model.model.ff.lora_A.default.weight": fa,
            "base_model.model.ff.lora_B.default.weight": fb,
            "base_model.model.ff.lora_alpha": 2.0,
        },
        "diffusers_old": {
            "transformer.attn.to_q.lora.down.weight": a,
            "transformer.attn.to_q.lora.up.weight": b,
            "transformer.attn.to_q.alpha": torch.tensor([2.0]),
            "transformer.ff.lora.down.weight": fa,
            "transformer.ff.lora.up.weight": fb,
            "transformer.ff.alpha": torch.tensor(2.0),
        },
    }
    outs = []
    for sd in layouts.values():
        model = Block()
        apply_lora(model, sd, 2.0)  # type: ignore[arg-type]
        outs.append((model.attn.to_q(x), model.ff(x)))
    ref = Block()
    apply_lora(ref, peft_sd(a, b, "attn.to_q", alpha=2.0) | peft_sd(fa, fb, "ff", alpha=2.0), 2.0)
    for q, f in outs:
        assert torch.equal(q, ref.attn.to_q(x)) and torch.equal(f, ref.ff(x))


def test_two_lora_modules_for_one_target_and_ambiguous_kohya_name() -> None:
    model = Block()
    a, b = lora_pair(12, 12, 2, seed=0)
    with pytest.raises(InputError, match="second one"):
        apply_lora(model, peft_sd(a, b, "attn.to_q") | peft_sd(a, b, "transformer.attn.to_q"))

    amb = nn.Module()
    amb.a_b = nn.Module()
    amb.a_b.c = BranchLinear(12, 12, 2, seed=0)
    amb.a = nn.Module()
    amb.a.b_c = BranchLinear(12, 12, 2, seed=1)
    with pytest.raises(InputError, match="several"):
        apply_lora(amb, {"a_b_c.lora_down.weight": a, "a_b_c.lora_up.weight": b})


def test_bf16_branch_and_safetensors_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    layer = BranchLinear(12, 12, 4, seed=0).to(torch.bfloat16)
    model = nn.Sequential(layer)
    snap = snapshot(model)
    a, b = lora_pair(12, 12, 2, seed=1)
    path = tmp_path / "lora.safetensors"
    save_file(peft_sd(a, b, "0", alpha=4.0), str(path))
    apply_lora(model, str(path), 1.5)
    assert layer.proj_up.dtype == torch.bfloat16 and layer.proj_up.shape == (12, 6)
    assert torch.equal(layer.proj_up[:, 4:], (b * 3.0).to(torch.bfloat16))
    reset_lora(model)
    assert_bit_identical(model, snap)
    with pytest.raises(InputError, match="no file"):
        apply_lora(model, str(tmp_path / "missing.safetensors"))


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 20),
    n=st.integers(1, 20),
    base_r=st.integers(0, 6),
    ranks=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    strengths=st.lists(st.floats(-4, 4, allow_nan=False), min_size=3, max_size=3),
    seed=st.integers(0, 10_000),
)
def test_property_stack_matches_dense_sum_and_resets(
    k: int, n: int, base_r: int, ranks: list[int], strengths: list[float], seed: int
) -> None:
    layer = BranchLinear(k, n, base_r, seed)
    model = nn.Sequential(layer)
    snap = snapshot(model)
    x = torch.randn(3, k, generator=torch.Generator().manual_seed(seed + 1))
    expected = layer(x).double()
    for i, r in enumerate(ranks):
        a, b = lora_pair(k, n, r, seed + 2 + i)
        alpha = float(r) / 2
        apply_lora(model, peft_sd(a, b, "0", alpha=alpha), strengths[i], name=f"l{i}")
        expected = expected + delta(x, a, b, strengths[i] * 0.5)
    assert layer.proj_down.shape == (k, base_r + sum(ranks))
    tol = 1e-4 * (1.0 + float(expected.abs().max()))
    torch.testing.assert_close(layer(x).double(), expected, rtol=0, atol=tol)
    remove_lora(model, "l0")
    assert layer.proj_up.shape == (n, base_r + sum(ranks[1:]))
    reset_lora(model)
    assert_bit_identical(model, snap)
