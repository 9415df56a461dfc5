"""Minimal HF-layout BERT / GPT-2 / Llama: save/load round trips, strict loading errors, KV cache, attention hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from accel_sims.errors import ModelLoadError
from accel_sims.models import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2Model,
    LlamaConfig,
    LlamaModel,
    dense_attention,
    load_model,
    mean_pool,
    save_model,
)

torch.manual_seed(0)


def tiny_bert() -> BertModel:
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return BertModel(cfg).eval()


def tiny_gpt2() -> GPT2Model:
    m = GPT2Model(GPT2Config(vocab_size=40, n_positions=64, n_embd=16, n_layer=2, n_head=4)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=0.2)
    return m


def tiny_llama(tie: bool = False) -> LlamaModel:
    cfg = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
        tie_word_embeddings=tie,
    )
    m = LlamaModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=0.2)
    return m


@pytest.mark.parametrize("make", [tiny_bert, tiny_gpt2, tiny_llama, lambda: tiny_llama(tie=True)])
def test_save_load_round_trip(tmp_path: Path, make) -> None:
    model = make()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert type(loaded) is type(model)
    ids = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        a, b = model(ids), loaded(ids)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)


def test_hf_prefixed_keys_and_buffers_load(tmp_path: Path) -> None:
    """A GPT2LMHeadModel file: `transformer.` prefix, causal-mask buffers and the tied lm_head copy."""
    m = tiny_gpt2()
    state = {f"transformer.{k}": v for k, v in m.state_dict().items()}
    state["transformer.h.0.attn.bias"] = torch.ones(1, 1, 64, 64)
    state["lm_head.weight"] = m.wte.weight.detach().clone()
    (tmp_path / "config.json").write_text(json.dumps(m.config.to_hf()))
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = load_model(tmp_path)
    ids = torch.randint(0, 40, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, m(ids).logits)


def test_pytorch_bin_and_sharded(tmp_path: Path) -> None:
    m = tiny_bert()
    state = m.state_dict()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text(json.dumps(m.config.to_hf()))
    torch.save({f"bert.{k}": v for k, v in state.items()}, tmp_path / "bin" / "pytorch_model.bin")
    ids = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        ref = m(ids).last_hidden_state
        assert torch.equal(load_model(tmp_path / "bin")(ids).last_hidden_state, ref)
    shard = tmp_path / "shard"
    shard.mkdir()
    (shard / "config.json").write_text(json.dumps(m.config.to_hf()))
    keys = sorted(state)
    parts = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2 :]}
    for name, ks in parts.items():
        save_file({k: state[k].contiguous() for k in ks}, str(shard / name))
    index = {"weight_map": {k: name for name, ks in parts.items() for k in ks}}
    (shard / "model.safetensors.index.json").write_text(json.dumps(index))
    with torch.no_grad():
        assert torch.equal(load_model(shard)(ids).last_hidden_state, ref)


def _saved(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    save_model(tiny_bert(), tmp_path)
    return tmp_path, load_file(str(tmp_path / "model.safetensors"))


def test_missing_key_named(tmp_path: Path) -> None:
    folder, state = _saved(tmp_path)
    del state["encoder.layer.1.attention.self.key.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"missing key 'encoder\.layer\.1\.attention\.self\.key\.weight'"):
        load_model(folder)


def test_unexpected_key_and_shape_named(tmp_path: Path) -> None:
    folder, state = _saved(tmp_path)
    save_file({**state, "encoder.layer.0.extra": torch.zeros(2)}, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: unexpected key 'encoder\.layer\.0\.extra'"):
        load_model(folder)
    state["embeddings.word_embeddings.weight"] = torch.zeros(49, 16)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(
        ModelLoadError, match=r"'embeddings\.word_embeddings\.weight' has shape \(49, 16\), expected \(50, 16\)"
    ):
        load_model(folder)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ModelLoadError, match="model_type 't5'"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(tiny_bert().config.to_hf()))
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelLoadError, match="model.safetensors: cannot read weights"):
        load_model(tmp_path)
    cfg = tiny_bert().config.to_hf()
    del cfg["num_attention_heads"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="missing field 'num_attention_heads'"):
        load_model(tmp_path)


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_kv_cache_decode_matches_full_forward(make) -> None:
    model = make()
    ids = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5])
        steps = [out.logits]
        for t in range(5, 9):
            out = model(ids[:, t : t + 1], out.past_key_values)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_dense_attention_matches_sdpa() -> None:
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(dense_attention(q, k, v, layer=0, key_mask=mask, causal=False), ref)
    qc = torch.randn(2, 3, 7, 8)
    ref_c = F.scaled_dot_product_attention(qc, k, v, is_causal=True)
    torch.testing.assert_close(dense_attention(qc, k, v, layer=0, key_mask=None, causal=True), ref_c)


@pytest.mark.parametrize("make", [tiny_bert, tiny_gpt2, tiny_llama])
def test_attention_hook_sees_every_layer_and_restores(make) -> None:
    model = make()
    calls: list[tuple[int, tuple[int, ...], bool]] = []

    def spy(q, k, v, *, layer, key_mask, causal):
        calls.append((layer, tuple(q.shape), causal))
        return dense_attention(q, k, v, layer=layer, key_mask=key_mask, causal=causal)

    ids = torch.randint(0, 40, (1, 6))
    with torch.no_grad():
        ref = model(ids)[0]
        with model.use_attention(spy):
            out = model(ids)[0]
    assert [c[0] for c in calls] == [0, 1]
    assert all(c[1] == (1, 4, 6, 4) for c in calls)  # GQA K/V already expanded to 4 heads
    assert all(c[2] == (not isinstance(model, BertModel)) for c in calls)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert model.attention_fn is dense_attention


def test_minilm_matches_sentence_transformers(minilm_dir: Path) -> None:
    """sbert.net's quickstart prints these similarities for all-MiniLM-L6-v2 (docs/sentence_transformer/usage)."""
    from tokenizers import Tokenizer

    folder = minilm_dir
    model = load_model(folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_padding(pad_id=0)
    enc = tok.encode_batch(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    with torch.no_grad():
        out = model(ids, mask)
    emb = mean_pool(out.last_hidden_state, out.mask)
    sim = emb @ emb.T
    expected = torch.tensor([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    torch.testing.assert_close(sim, expected, rtol=0, atol=6e-5)
