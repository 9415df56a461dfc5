"""Quantized checkpoints (format qserve/1): save then load is exact; wrong or damaged files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from qs_testing import tiny_model
from safetensors import safe_open
from safetensors.torch import save_file

from qserve.errors import CheckpointError
from qserve.model import LlamaForCausalLM
from qserve.qoq import QoQConfig, quantize_
from qserve.quant.w4a8_linear import W4A8Linear, W8A8Linear
from qserve.quant_checkpoint import load_quantized, save_quantized


def tiny(tied: bool) -> LlamaForCausalLM:
    return tiny_model(61, tie_word_embeddings=tied)


def calib() -> torch.Tensor:
    return torch.randint(0, 61, (4, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "preset,tied,dtype",
    [
        ("qoq", True, torch.float32),
        ("rtn-w4a8kv4", True, torch.float32),
        ("qoq-gchn", False, torch.float32),
        ("w8a8", False, torch.float16),
    ],
)
def test_save_load_exact(tmp_path: Path, preset: str, tied: bool, dtype: torch.dtype) -> None:
    m = tiny(tied)
    quantize_(m, QoQConfig.preset(preset), calib())
    m.to(dtype)
    path = tmp_path / "q.safetensors"
    save_quantized(m, path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "qserve/1"
    assert json.loads(meta["quantization_config"])["method"] == QoQConfig.preset(preset).method
    back = load_quantized(path)
    sd, sd2 = m.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(sd[k].dtype == sd2[k].dtype and torch.equal(sd[k], sd2[k]) for k in sd)
    assert back.embeddings_tied == m.embeddings_tied
    assert back.quantization_config == m.quantization_config
    assert (back.kv_quant is None) == (m.kv_quant is None)
    kind = W8A8Linear if preset == "w8a8" else W4A8Linear
    assert isinstance(back.model.layers[1].self_attn.o_proj, kind)
    x = calib()[:2, :8]
    with torch.no_grad():
        assert torch.equal(m(x), back(x))


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no QoQConfig"):
        save_quantized(tiny(False), tmp_path / "float.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_quantized(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_quantized(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="qserve/1"):
        load_quantized(tmp_path / "other.safetensors")
    m = tiny(False)
    quantize_(m, QoQConfig.preset("rtn-w4a8kv4"))
    path = tmp_path / "q.safetensors"
    save_quantized(m, path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    damaged = dict(tensors)
    del damaged["model.layers.1.mlp.up_proj.s2_zeros"]
    save_file(damaged, str(tmp_path / "d1.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"layers\.1\.mlp\.up_proj"):
        load_quantized(tmp_path / "d1.safetensors")
    damaged = dict(tensors)
    del damaged["model.norm.weight"]
    save_file(damaged, str(tmp_path / "d2.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        load_quantized(tmp_path / "d2.safetensors")
    save_file(tensors, str(tmp_path / "d3.safetensors"), metadata=dict(meta, model_config="{}"))
    with pytest.raises(CheckpointError, match="metadata"):
        load_quantized(tmp_path / "d3.safetensors")
