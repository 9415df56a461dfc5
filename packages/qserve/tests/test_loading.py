"""Tests of HF-layout loading and saving (single file, sharded, tied) with strict key checks, and of the
tokenizer (training, round trip, special ids)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qserve.config import LlamaConfig
from qserve.errors import CheckpointError
from qserve.loading import INDEX_NAME, WEIGHTS_NAME, load_model, save_model
from qserve.model import LlamaForCausalLM
from qserve.tokenizer import load_tokenizer, train_bpe_tokenizer


def make_model(**update: object) -> LlamaForCausalLM:
    config = LlamaConfig(**{**LlamaConfig.from_name("tiny").model_dump(), **update})
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def assert_same_model(a: LlamaForCausalLM, b: LlamaForCausalLM) -> None:
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(a(ids), b(ids))


@pytest.mark.parametrize(
    "update", [{}, {"tie_word_embeddings": True}, {"architecture": "Qwen2ForCausalLM", "attention_bias": True}]
)
def test_save_load_round_trip_single_file(tmp_path: Path, update: dict[str, object]) -> None:
    model = make_model(**update)
    folder = save_model(model, tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", WEIGHTS_NAME]
    keys = set(load_file(str(folder / WEIGHTS_NAME)))
    assert ("lm_head.weight" in keys) != model.config.tie_word_embeddings
    loaded = load_model(folder)
    assert_same_model(model, loaded)
    assert loaded.embeddings_tied == model.config.tie_word_embeddings
    assert json.loads((folder / "config.json").read_text())["architectures"] == [model.config.architecture]


def test_save_load_round_trip_sharded_and_dtype(tmp_path: Path) -> None:
    model = make_model()
    folder = save_model(model, tmp_path / "m", max_shard_bytes=40_000)
    index = json.loads((folder / INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (folder / WEIGHTS_NAME).exists()
    assert index["metadata"]["total_size"] == sum(p.numel() * 4 for p in model.state_dict().values())
    assert_same_model(model, load_model(folder))
    half = load_model(folder, dtype=torch.float16)
    assert half.model.embed_tokens.weight.dtype == torch.float16
    assert torch.equal(half.lm_head.weight, model.lm_head.weight.half())


def test_save_replaces_existing_folder_atomically(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    save_model(make_model(), folder, max_shard_bytes=40_000, extra_files={"stale.txt": "old"})
    model = make_model(tie_word_embeddings=True)
    save_model(model, folder, extra_files={"tokenizer.json": "{}", "blob.bin": b"\x00\x01"})
    assert sorted(p.name for p in folder.iterdir()) == ["blob.bin", "config.json", WEIGHTS_NAME, "tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or backup folder left
    assert_same_model(model, load_model(folder))
    with pytest.raises(CheckpointError, match="plain file names"):
        save_model(model, folder, extra_files={"../escape.txt": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert_same_model(model, load_model(folder))  # a failed save leaves the previous folder intact


def rewrite_weights(folder: Path, edit: object) -> None:
    tensors = load_file(str(folder / WEIGHTS_NAME))
    edit(tensors)  # type: ignore[operator]
    save_file(tensors, str(folder / WEIGHTS_NAME))


def test_missing_unexpected_and_misshaped_keys(tmp_path: Path) -> None:
    folder = save_model(make_model(), tmp_path / "m")
    rewrite_weights(folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \['model.layers.1.mlp.up_proj.weight'\]"):
        load_model(folder)
    folder = save_model(make_model(), tmp_path / "m")
    rewrite_weights(folder, lambda t: t.update({"model.layers.0.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['model.layers.0.extra.weight'\]"):
        load_model(folder)
    folder = save_model(make_model(), tmp_path / "m")
    rewrite_weights(folder, lambda t: t.update({"model.norm.weight": torch.ones(63)}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor model.norm.weight has shape \(63,\)"):
        load_model(folder)
    # the rotary buffers old HF Llama checkpoints carry are ignored
    folder = save_model(make_model(), tmp_path / "m")
    rewrite_weights(folder, lambda t: t.update({"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}))
    load_model(folder)


def test_tied_checkpoint_with_a_different_head_is_refused(tmp_path: Path) -> None:
    model = make_model(tie_word_embeddings=True)
    folder = save_model(model, tmp_path / "m")
    same = model.lm_head.weight.detach().clone()
    rewrite_weights(folder, lambda t: t.update({"lm_head.weight": same}))
    assert_same_model(model, load_model(folder))  # a redundant, identical head is accepted
    rewrite_weights(folder, lambda t: t.update({"lm_head.weight": same + 1}))
    with pytest.raises(CheckpointError, match="ties the embeddings"):
        load_model(folder)


def test_missing_files_and_other_architectures(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    folder = save_model(make_model(), tmp_path / "m", max_shard_bytes=40_000)
    next(folder.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match=r"lists shard model-00002-of-\d+\.safetensors, which is missing"):
        load_model(folder)
    folder = save_model(make_model(), tmp_path / "m")
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="has neither model.safetensors nor"):
        load_model(folder)
    folder = save_model(make_model(), tmp_path / "m")
    (folder / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(folder)
    folder = save_model(make_model(), tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(CheckpointError, match=r"config.json: unsupported architecture \['GPT2LMHeadModel'\]"):
        load_model(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_model(folder)


def test_save_refuses_a_model_with_swapped_modules(tmp_path: Path) -> None:
    model = make_model()
    model.get_submodule("model.layers.0.self_attn.q_proj").register_buffer("qweight", torch.zeros(2, dtype=torch.uint8))
    with pytest.raises(CheckpointError, match="unexpected tensors"):
        save_model(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Return the number of items in a container.",
    "Quantization maps floating-point weights to small integers, e.g. 4-bit codes.",
    "Ünïcödé and emoji 🚀 survive byte-level BPE.",
] * 5


def test_tokenizer_train_save_load_round_trip(tmp_path: Path) -> None:
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    assert tok.vocab_size <= 300 and (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    for text in [*TEXTS[:4], "unseen wörds: 3.14159 {x: [y]}"]:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert len(tok.encode(TEXTS[0])) < len(TEXTS[0].encode())  # merges were learned
    assert tok.encode("fox", add_bos=True)[0] == 1
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.encode(TEXTS[2]) == tok.encode(TEXTS[2])
    assert (loaded.bos_token_id, loaded.eos_token_id) == (None, None)  # no config files to name them
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": {"content": "<s>"}, "eos_token": "</s>"}))
    assert (load_tokenizer(tmp_path).bos_token_id, load_tokenizer(tmp_path).eos_token_id) == (1, 2)
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": [2, 1]}))
    assert (load_tokenizer(tmp_path).bos_token_id, load_tokenizer(tmp_path).eos_token_id) == (0, 2)


def test_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid tokenizers file"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocab_size must cover"):
        train_bpe_tokenizer(TEXTS, vocab_size=100)
