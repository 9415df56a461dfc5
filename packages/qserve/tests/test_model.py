"""Tests of the Llama config, RoPE and model: HF round trip, errors, RoPE scalings against independent formulas,
causality, GQA, KV-cache decoding against the full forward, tied embeddings and the KV-quantization hook."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qserve.config import LlamaConfig, RopeScaling, preset_names
from qserve.errors import ConfigError, InputError
from qserve.model import DenseKVCache, LlamaForCausalLM, RMSNorm, causal_attention, generate_greedy
from qserve.rope import apply_rope, inverse_frequencies, rope_cos_sin

TINYLLAMA_HF = {  # TinyLlama-1.1B's config.json (the fields that matter)
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

LLAMA3_8B_HF = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
}


def tiny(**update: object) -> LlamaConfig:
    return LlamaConfig(**{**LlamaConfig.from_name("tiny").model_dump(), **update})


def make_model(config: LlamaConfig, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that tests see them
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    return model


# ---------------------------------------------------------------------------------------------------- config


def test_parameter_counts_match_published_models() -> None:
    assert LlamaConfig.from_hf(TINYLLAMA_HF).num_parameters() == 1_100_048_384
    assert LlamaConfig.from_hf(LLAMA3_8B_HF).num_parameters() == 8_030_261_248
    for name in preset_names():
        c = LlamaConfig.from_name(name)
        with torch.device("meta"):
            m = LlamaForCausalLM(c)
        assert sum(p.numel() for p in m.parameters()) == c.num_parameters()


@pytest.mark.parametrize(
    "rope_scaling",
    [
        None,
        {"rope_type": "linear", "factor": 2.0},
        {"type": "dynamic", "factor": 4.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ],
)
def test_config_hf_round_trip(rope_scaling: dict[str, object] | None) -> None:
    c = LlamaConfig.from_hf({**LLAMA3_8B_HF, "rope_scaling": rope_scaling, "eos_token_id": [128001, 128009]})
    assert c.head_dim == 128 and c.num_kv_groups == 4 and c.eos_token_ids == (128001, 128009)
    assert (c.rope_scaling is None) == (rope_scaling is None)
    assert LlamaConfig.from_hf(c.to_hf()) == c
    for name in preset_names():
        p = LlamaConfig.from_name(name)
        assert LlamaConfig.from_hf(p.to_hf()) == p


def test_qwen2_and_mistral_configs() -> None:
    base = {k: v for k, v in TINYLLAMA_HF.items() if k not in ("architectures", "model_type")}
    q = LlamaConfig.from_hf({**base, "architectures": ["Qwen2ForCausalLM"], "use_sliding_window": False})
    assert q.attention_bias and not q.attention_out_bias
    assert LlamaConfig.from_hf(q.to_hf()) == q
    m = LlamaConfig.from_hf({**base, "architectures": ["MistralForCausalLM"], "sliding_window": 1024})
    assert m.max_position_embeddings == 1024  # served exactly only within the window
    with pytest.raises(ConfigError, match="sliding"):
        LlamaConfig.from_hf({**base, "architectures": ["Qwen2ForCausalLM"], "use_sliding_window": True})


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"architectures": ["GPT2LMHeadModel"]}, "unsupported architecture"),
        ({"architectures": [], "model_type": "gpt2"}, "architectures"),
        ({"hidden_size": 2050}, "multiple of num_attention_heads"),
        ({"num_key_value_heads": 5}, "multiple of num_key_value_heads"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rope_scaling type"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0, "beta": 1}}, "unsupported fields"),
        ({"hidden_act": "gelu"}, "silu"),
        ({"eos_token_id": 40000}, "outside the vocabulary"),
    ],
)
def test_config_errors(update: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LlamaConfig.from_hf({**TINYLLAMA_HF, **update})


def test_config_is_frozen_and_strict() -> None:
    c = LlamaConfig.from_name("tiny")
    with pytest.raises(ValueError):
        c.hidden_size = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="hiden_size"):
        LlamaConfig(**{**c.model_dump(), "hiden_size": 3})
    with pytest.raises(ConfigError, match="unknown LlamaConfig preset"):
        LlamaConfig.from_name("huge")


# ---------------------------------------------------------------------------------------------------- RoPE


def rope_by_complex(x: torch.Tensor, positions: torch.Tensor, inv: list[float]) -> torch.Tensor:
    """Independent RoPE: channel i and i + D/2 form the complex number x_i + j x_{i+D/2}, rotated by pos*inv_i."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())  # [B, H, T, D/2]
    angle = positions.double()[:, None, :, None] * torch.tensor(inv, dtype=torch.float64)  # [B, 1, T, D/2]
    r = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat((r.real, r.imag), dim=-1).float()


def default_inv(d: int, base: float) -> list[float]:
    return [base ** (-2 * i / d) for i in range(d // 2)]


def test_rope_matches_complex_rotation_and_preserves_norm() -> None:
    c = tiny(rope_theta=500.0)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, c.head_dim)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [10, 11, 12, 40, 41, 42, 43]])
    cos, sin = rope_cos_sin(c, pos)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y, rope_by_complex(x, pos, default_inv(c.head_dim, 500.0)), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    assert torch.equal(y[:, :, 0][:1], x[:, :, 0][:1])  # position 0 is not rotated


def test_rope_linear_scaling_divides_positions() -> None:
    c = tiny(rope_scaling=RopeScaling(type="linear", factor=4.0))
    d = c.head_dim
    expected = [v / 4.0 for v in default_inv(d, c.rope_theta)]
    torch.testing.assert_close(inverse_frequencies(c), torch.tensor(expected, dtype=torch.float32))


def test_rope_dynamic_ntk_grows_the_base_beyond_the_context() -> None:
    c = tiny(rope_scaling=RopeScaling(type="dynamic", factor=2.0), max_position_embeddings=64)
    d = c.head_dim
    torch.testing.assert_close(inverse_frequencies(c, 64), torch.tensor(default_inv(d, c.rope_theta)))
    grown = c.rope_theta * (2.0 * 100 / 64 - 1.0) ** (d / (d - 2))
    torch.testing.assert_close(inverse_frequencies(c, 100), torch.tensor(default_inv(d, grown)))
    pos = torch.arange(100).unsqueeze(0)
    cos, _ = rope_cos_sin(c, pos)  # the sequence length is the largest position + 1
    angles = 99 * torch.tensor(default_inv(d, grown), dtype=torch.float64)
    torch.testing.assert_close(cos[0, -1, : d // 2], angles.cos().float(), atol=1e-4, rtol=1e-4)


def test_rope_llama3_scaling_per_wavelength() -> None:
    rs = RopeScaling(
        type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64
    )
    c = tiny(rope_scaling=rs, rope_theta=10000.0)
    got = inverse_frequencies(c).tolist()
    low_wl, high_wl = 64 / 1.0, 64 / 4.0
    kinds = set()
    for g, f in zip(got, default_inv(c.head_dim, 10000.0), strict=True):
        wl = 2 * math.pi / f
        if wl < high_wl:
            want, kind = f, "high"
        elif wl > low_wl:
            want, kind = f / 8.0, "low"
        else:
            smooth = (64 / wl - 1.0) / (4.0 - 1.0)
            want, kind = (1 - smooth) * f / 8.0 + smooth * f, "mid"
        kinds.add(kind)
        assert g == pytest.approx(want, rel=1e-6)
    assert kinds == {"high", "mid", "low"}  # the test exercises all three bands


# ---------------------------------------------------------------------------------------------------- model


def test_rmsnorm_float32_compute_and_dtype() -> None:
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 9.0))
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.bfloat16
    xf = x.double()
    ref = xf / (xf.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * torch.arange(1.0, 9.0, dtype=torch.float64)
    torch.testing.assert_close(y.double(), ref.to(torch.bfloat16).double(), atol=0.05, rtol=0.01)


def test_forward_shapes_names_and_causality() -> None:
    c = tiny()
    m = make_model(c)
    names = set(m.state_dict())
    for key in (
        "model.embed_tokens.weight",
        "model.layers.1.input_layernorm.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ):
        assert key in names
    ids = torch.randint(0, c.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = m(ids)
        assert logits.shape == (2, 9, c.vocab_size) and logits.dtype == torch.float32
        changed = ids.clone()
        changed[:, 6] = (changed[:, 6] + 1) % c.vocab_size
        logits2 = m(changed)
    torch.testing.assert_close(logits2[:, :6], logits[:, :6], atol=1e-6, rtol=0)
    assert (logits2[:, 6:] - logits[:, 6:]).abs().max() > 1e-3


def test_input_errors() -> None:
    m = make_model(tiny())
    with pytest.raises(InputError, match=r"in \[0, 256\)"):
        m(torch.tensor([[1, 256]]))
    with pytest.raises(InputError, match="integer"):
        m(torch.zeros(1, 3))
    with pytest.raises(InputError, match="positions"):
        m(torch.tensor([[1, 2]]), positions=torch.tensor([[0, 1, 2]]))


def sdpa_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    groups = q.shape[1] // k.shape[1]
    heads = []
    for h in range(q.shape[1]):  # query head h reads KV head h // groups, one head at a time
        kv = h // groups
        heads.append(
            F.scaled_dot_product_attention(q[:, h : h + 1], k[:, kv : kv + 1], v[:, kv : kv + 1], is_causal=True)
        )
    return torch.cat(heads, dim=1)


def test_causal_attention_gqa_matches_per_head_sdpa() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 6, 5, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    torch.testing.assert_close(causal_attention(q, k, v), sdpa_reference(q, k, v), atol=1e-5, rtol=1e-5)
    # queries of the last 2 positions over a 3-token context see the same as the full computation's last rows
    full = causal_attention(q, k, v)
    torch.testing.assert_close(causal_attention(q[:, :, 3:], k, v, context_len=3), full[:, :, 3:], atol=1e-6, rtol=0)
    with pytest.raises(InputError, match="Hq % Hkv"):
        causal_attention(torch.randn(1, 5, 2, 8), torch.randn(1, 2, 2, 8), torch.randn(1, 2, 2, 8))


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_gqa_model_equals_mha_with_repeated_kv_heads(kv_heads: int) -> None:
    c = tiny(num_key_value_heads=kv_heads)
    m = make_model(c)
    mha = LlamaForCausalLM(tiny(num_key_value_heads=4)).eval()
    state = m.state_dict()
    d, groups = c.head_dim, 4 // kv_heads
    for key in list(state):
        if key.endswith(("k_proj.weight", "v_proj.weight")):  # [Hkv * D, C] -> [Hq * D, C]
            w = state[key].view(kv_heads, d, -1).repeat_interleave(groups, dim=0)
            state[key] = w.reshape(4 * d, -1)
    mha.load_state_dict(state)
    ids = torch.randint(0, c.vocab_size, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(m(ids), mha(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config_update", [{}, {"tie_word_embeddings": True}, {"attention_bias": True}])
def test_dense_cache_decoding_equals_full_forward(config_update: dict[str, object]) -> None:
    c = tiny(**config_update)
    m = make_model(c)
    ids = torch.randint(0, c.vocab_size, (3, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = m(ids)
        cache = DenseKVCache(c, batch=3, max_len=11)
        parts = [m(ids[:, :4], cache=cache)]
        for t in range(4, 11):
            parts.append(m(ids[:, t : t + 1], cache=cache))
    assert cache.length == 11
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="max_len"):
        m(ids[:, :1], cache=cache)


def test_explicit_positions_shift_rope_only() -> None:
    c = tiny()
    m = make_model(c)
    ids = torch.randint(0, c.vocab_size, (1, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        base = m(ids)
        shifted = m(ids, positions=torch.arange(5, 11).unsqueeze(0))
    # RoPE attention depends only on relative positions, so a constant shift keeps the logits
    torch.testing.assert_close(shifted, base, atol=1e-4, rtol=1e-4)


def test_tied_and_untied_embeddings() -> None:
    tied = make_model(tiny(tie_word_embeddings=True))
    assert tied.embeddings_tied and tied.lm_head.weight is tied.model.embed_tokens.weight
    n_tied = sum(p.numel() for p in tied.parameters())
    assert n_tied == tied.config.num_parameters()
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        before = tied(ids)
        tied.untie_embeddings()
        assert not tied.embeddings_tied and not tied.config.tie_word_embeddings
        torch.testing.assert_close(tied(ids), before, atol=0, rtol=0)
        tied.lm_head.weight.mul_(2)  # now independent of the embedding
        assert not torch.equal(tied.model.embed_tokens.weight, tied.lm_head.weight)
    untied = make_model(tiny())
    assert not untied.embeddings_tied
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 256 * 64


class StandInKVQuantizer:
    """Rounds to a 1/4 grid per element; counts calls (any object with these three methods is accepted)."""

    def __init__(self) -> None:
        self.calls = {"fake": 0, "quantize": 0, "dequantize": 0}

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["fake"] += 1
        return self.dequantize(*self.quantize(x), dtype=x.dtype)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.calls["quantize"] += 1
        codes = torch.round(x.float() * 4).to(torch.int16)
        ones = torch.ones(x.shape[:-1], dtype=torch.float16)
        return codes, ones, torch.zeros_like(ones)

    def dequantize(
        self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        self.calls["dequantize"] += 1
        return (codes.float() / 4 * scales.float().unsqueeze(-1) + zeros.float().unsqueeze(-1)).to(dtype)


def test_kv_quant_hook_is_used_by_every_path() -> None:
    c = tiny()
    m = make_model(c)
    ids = torch.randint(0, c.vocab_size, (2, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        plain = m(ids)
        quant = StandInKVQuantizer()
        m.kv_quant = quant
        fake = m(ids)
        assert quant.calls["fake"] == 2 * c.num_hidden_layers  # keys and values of every layer
        assert (fake - plain).abs().max() > 1e-4  # the 1/4 grid is coarse enough to matter
        cache = DenseKVCache(c, 2, 8, kv_quant=quant)
        parts = [m(ids[:, :5], cache=cache)] + [m(ids[:, t : t + 1], cache=cache) for t in range(5, 8)]
        assert quant.calls["quantize"] > 2 * c.num_hidden_layers
        assert cache._store[0] is not None and cache._store[0][0][0].dtype == torch.int16  # codes are stored
    torch.testing.assert_close(torch.cat(parts, dim=1), fake, atol=1e-5, rtol=1e-5)


def test_generate_greedy_matches_argmax_of_full_forward() -> None:
    c = tiny()
    m = make_model(c)
    prompt = torch.randint(3, c.vocab_size, (2, 5), generator=torch.Generator().manual_seed(6))
    out = generate_greedy(m, prompt, max_new_tokens=6)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    with torch.no_grad():
        seq = prompt
        for _ in range(6):
            seq = torch.cat([seq, m(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
    # an eos that the first sequence emits first stops it; the batch stops when both are done
    eos = int(out[0, 5])
    stopped = generate_greedy(m, prompt, max_new_tokens=6, eos=eos)
    assert int(stopped[0, 5]) == eos and bool((stopped[0, 5:] == eos).all())
    with pytest.raises(InputError, match="context"):
        generate_greedy(m, prompt, max_new_tokens=c.max_position_embeddings)


def test_logits_at_keeps_one_position_per_sequence() -> None:
    cfg = LlamaConfig.from_name("tiny")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (3, 7))
    at = torch.tensor([6, 0, 3])
    with torch.no_grad():
        full = model(ids)
        kept = model(ids, logits_at=at)
    assert kept.shape == (3, 1, cfg.vocab_size)
    torch.testing.assert_close(kept[:, 0], full[torch.arange(3), at], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="logits_at"):
        model(ids, logits_at=torch.tensor([1, 2]))
