"""Tests of dc_ae.evaluate: whole-image reconstruction of any size and folder evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import dc_ae
from dc_ae.data import load_image, save_image
from dc_ae.errors import InputError
from dc_ae.evaluate import EvalResult, compression_ratio, evaluate_folder, latent_shape, reconstruct_image
from dc_ae.metrics import LPIPS, psnr, ssim


@pytest.fixture(scope="module")
def model() -> dc_ae.DCAE:
    torch.manual_seed(0)
    return dc_ae.DCAE(dc_ae.DCAEConfig.from_name("tiny-f4")).eval()


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    gen = torch.Generator().manual_seed(1)
    root = tmp_path / "images"
    # Odd sizes, not multiples of f=4, one in a subfolder.
    for name, (h, w) in {"b.png": (23, 37), "a.png": (16, 16), "sub/c.png": (13, 29)}.items():
        save_image(torch.rand(3, h, w, generator=gen) * 2 - 1, root / name)
    return root


def test_compression_ratios_name_spatial_and_element_compression() -> None:
    cfg = dc_ae.DCAEConfig.from_name("dc-ae-f32c32-small")
    assert cfg.spatial_compression == 32
    assert compression_ratio(cfg) == 96.0  # 32*32*3 / 32
    assert compression_ratio(dc_ae.DCAEConfig.from_name("dc-ae-f64c128-in-1.0")) == 96.0
    assert compression_ratio(dc_ae.DCAEConfig.from_name("tiny-f4")) == 12.0
    assert latent_shape(cfg, 300, 451) == (32, 10, 15)
    assert latent_shape(cfg, 64, 32) == (32, 2, 1)


@pytest.mark.parametrize("size", [(16, 16), (23, 37), (5, 4)])
def test_reconstruct_image_keeps_any_size(model: dc_ae.DCAE, size: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *size) * 2 - 1
    y = reconstruct_image(model, x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.abs().max()) <= 1.0


def test_reconstruct_image_is_decode_of_encode_when_size_divides(model: dc_ae.DCAE) -> None:
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.inference_mode():
        expected = model.decode(model.encode(x)).clamp(-1, 1)
    torch.testing.assert_close(reconstruct_image(model, x), expected)


def test_reconstruct_image_tiled_matches_shape(model: dc_ae.DCAE) -> None:
    x = torch.rand(1, 3, 21, 45) * 2 - 1
    assert reconstruct_image(model, x, tile_size=16).shape == x.shape


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
        (torch.zeros(1, 4, 16, 16), r"\[B, 3, H, W\]"),
        (torch.zeros(3, 16, 16), r"\[B, 3, H, W\]"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "floating-point"),
        (torch.zeros(1, 3, 3, 16), "smaller than one latent pixel"),
    ],
    ids=["nan", "channels", "no-batch", "dtype", "too-small"],
)
def test_reconstruct_image_rejects_bad_input(model: dc_ae.DCAE, x: torch.Tensor, match: str) -> None:
    with pytest.raises(InputError, match=match):
        reconstruct_image(model, x)


def test_evaluate_folder_scores_every_image(model: dc_ae.DCAE, folder: Path) -> None:
    result = evaluate_folder(model, folder, progress=False)
    assert [r.name for r in result.records] == ["a.png", "b.png", "sub/c.png"]
    assert [(r.height, r.width) for r in result.records] == [(16, 16), (23, 37), (13, 29)]
    assert result.mean_psnr == pytest.approx(sum(r.psnr for r in result.records) / 3)
    assert result.mean_ssim == pytest.approx(sum(r.ssim for r in result.records) / 3)
    assert all(r.lpips is None for r in result.records) and result.mean_lpips is None
    assert result.model == "tiny-f4" and result.spatial_compression == 4 and result.compression_ratio == 12.0
    # Each record is the metric of that file's reconstruction, not of something else.
    x = load_image(folder / "b.png")
    y = reconstruct_image(model, x)
    assert result.records[1].psnr == pytest.approx(float(psnr(y, x)[0]), abs=1e-4)
    assert result.records[1].ssim == pytest.approx(float(ssim(y, x)[0]), abs=1e-5)
    assert EvalResult.model_validate_json(result.model_dump_json()) == result


def test_evaluate_folder_scores_a_perfect_reconstruction_as_perfect(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lossless stand-in for the autoencoder: the scores must compare the image with itself.
    class Identity(nn.Module):
        config = dc_ae.DCAEConfig.from_name("tiny-f4")

        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

    from dc_ae import tiling

    monkeypatch.setattr(tiling, "reconstruct", lambda m, x, tile_size=None: x.clone())
    result = evaluate_folder(Identity(), folder, progress=False)  # type: ignore[arg-type]
    assert result.mean_psnr == pytest.approx(100.0)
    assert result.mean_ssim == pytest.approx(1.0, abs=1e-5)


def test_evaluate_folder_lpips_column_only_when_given(model: dc_ae.DCAE, folder: Path) -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    lpips = LPIPS(backbone, ("1", "3"))
    result = evaluate_folder(model, folder, lpips=lpips, progress=False)
    values = [r.lpips for r in result.records]
    assert all(v is not None and math.isfinite(v) and v > 0 for v in values)
    assert result.mean_lpips == pytest.approx(sum(values) / len(values))  # type: ignore[arg-type]
    x = load_image(folder / "a.png")
    with torch.inference_mode():
        assert result.records[0].lpips == pytest.approx(float(lpips(reconstruct_image(model, x), x)[0]), rel=1e-5)


def test_evaluate_folder_names_the_bad_file(model: dc_ae.DCAE, folder: Path) -> None:
    save_image(torch.zeros(3, 2, 30), folder / "thin.png")
    with pytest.raises(InputError, match=r"thin\.png.*smaller than one latent pixel"):
        evaluate_folder(model, folder, progress=False)
    (folder / "thin.png").unlink()
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match=r"broken\.png"):
        evaluate_folder(model, folder, progress=False)


def test_evaluate_folder_rejects_missing_or_empty_folder(model: dc_ae.DCAE, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        evaluate_folder(model, tmp_path / "nowhere", progress=False)
    with pytest.raises(InputError, match="no images"):
        evaluate_folder(model, tmp_path, progress=False)
