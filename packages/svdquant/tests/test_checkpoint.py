"""save_quantized / load_quantized: one safetensors file with SVDQuant (Li et al., ICLR 2025) layer tensors under
the Nunchaku engine's names and the quantization config in its metadata; exact round trip, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from svdquant.checkpoint import FORMAT, load_quantized, save_quantized
from svdquant.config import SVDQuantConfig
from svdquant.errors import CheckpointError, InputError
from svdquant.quantize import quantize_
from svdquant.svdq_linear import SVDQLinear

FAST = SVDQuantConfig(rank=8, svd="randomized", lowrank_iters=5, num_grids=4, max_calibration_tokens=256)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64, bias=False), nn.LayerNorm(64), nn.Linear(64, 32)
    ).requires_grad_(False)


def _quantized(cfg: SVDQuantConfig) -> nn.Module:
    m = _model()
    x = torch.randn(64, 64)
    x[:, :2] *= 20
    quantize_(m, cfg, calibration=[x])
    return m


@pytest.mark.parametrize(
    "cfg",
    [
        FAST.model_copy(update={"unsigned_act": ("2",), "w4a16": ("4",)}),
        FAST.model_copy(update={"fmt": "nvfp4", "overrides": (("4", {"skip": True}),)}),
    ],
    ids=["int4", "nvfp4"],
)
def test_save_then_load_is_exact(tmp_path: Path, cfg: SVDQuantConfig) -> None:
    cfg = SVDQuantConfig(**cfg.model_dump())
    q = _quantized(cfg)
    path = save_quantized(q, tmp_path / "sub" / "model.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == FORMAT and json.loads(meta["quantization_config"]) == json.loads(cfg.model_dump_json())
    modules = json.loads(meta["modules"])
    assert "0" in modules and modules["0"]["fmt"] == cfg.fmt and modules["0"]["rank"] == 8
    assert {"0.qweight", "0.wscales", "0.smooth_factor", "0.proj_down", "0.proj_up", "0.bias", "3.weight"} <= keys
    assert ("0.wtscale" in keys) == (cfg.fmt == "nvfp4")
    fresh = _model(seed=1)  # different float weights: everything must come from the file
    load_quantized(fresh, path)
    for (k1, v1), (k2, v2) in zip(q.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert (
            k1 == k2
            and v1.dtype == v2.dtype
            and torch.equal(v1.reshape(-1).view(torch.uint8), v2.reshape(-1).view(torch.uint8))
        ), k1
    assert [type(m) for m in q] == [type(m) for m in fresh]
    x = torch.randn(5, 64)
    assert torch.equal(q(x), fresh(x))
    assert fresh.svdquant_config == cfg
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert all(not isinstance(m, SVDQLinear) for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_bad_files_raise_and_leave_the_model_untouched(tmp_path: Path) -> None:
    good = save_quantized(_quantized(FAST), tmp_path / "good.safetensors")
    tensors, raw = load_file(str(good)), good.read_bytes()
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
    model = _model(seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.safetensors.*truncated or corrupt"):
        load_quantized(model, tmp_path / "trunc.safetensors")
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata={**meta, "format": "dc_ae/1"})
    with pytest.raises(CheckpointError, match=r"expected a checkpoint of format 'svdquant/1', found format 'dc_ae/1'"):
        load_quantized(model, tmp_path / "other.safetensors")
    missing = {k: v for k, v in tensors.items() if k != "2.proj_up"}
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"missing \['2\.proj_up'\]"):
        load_quantized(model, tmp_path / "missing.safetensors")
    shaped = {**tensors, "0.proj_down": torch.zeros(64, 9)}
    save_file(shaped, str(tmp_path / "shaped.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"0\.proj_down: expected \(64, 8\)"):
        load_quantized(model, tmp_path / "shaped.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_quantized(model, tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="must be a Linear"):
        load_quantized(nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32)), good)
    _assert_untouched(model, before)


def test_a_failed_save_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = _quantized(FAST)
    path = save_quantized(q, tmp_path / "m.safetensors")
    old = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_quantized(q, path)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    with pytest.raises(InputError, match="holds no SVDQLinear"):
        save_quantized(_model(), tmp_path / "x.safetensors")
