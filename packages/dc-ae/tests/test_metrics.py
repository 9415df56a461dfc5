"""Tests for dc_ae.metrics: PSNR, SSIM (parity with scikit-image), LPIPS and PerceptualLoss."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from dc_ae.data import sample_photographs, to_tensor
from dc_ae.errors import CheckpointError, ConfigError, DCAEError, InputError
from dc_ae.metrics import (
    LPIPS,
    LPIPS_SCALE,
    LPIPS_SHIFT,
    PSNR_MAX_DB,
    PerceptualFallbackWarning,
    PerceptualLoss,
    psnr,
    ssim,
    weight_free_loss,
)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 2 - 1


def _sk_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """scikit-image SSIM of one image pair given as [3,H,W] tensors in [-1,1]."""
    an = ((a.double() + 1) / 2).permute(1, 2, 0).numpy()
    bn = ((b.double() + 1) / 2).permute(1, 2, 0).numpy()
    return float(
        structural_similarity(
            an,
            bn,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1,
            channel_axis=-1,
        )
    )


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return sample_photographs(["chelsea", "coffee", "astronaut"])


# ---------------------------------------------------------------------------------------------
# PSNR
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0.02, 0.1, 0.5])
def test_psnr_constant_offset_is_analytical(offset: float) -> None:
    x = _rand(2, 3, 16, 20) * 0.4
    y = x + offset
    # An offset d on [-1,1] is d/2 on [0,1], so MSE = d^2/4 and PSNR = -20 log10(d/2).
    expected = -20 * math.log10(offset / 2)
    out = psnr(x, y)
    assert out.shape == (2,)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((2,), expected), atol=1e-3, rtol=0)


def test_psnr_identical_is_capped_and_finite() -> None:
    x = _rand(3, 3, 8, 8)
    out = psnr(x, x.clone())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full((3,), PSNR_MAX_DB))


def test_psnr_matches_skimage_per_image() -> None:
    x, y = _rand(2, 3, 24, 17, seed=1), _rand(2, 3, 24, 17, seed=2)
    out = psnr(x, y)
    for i in range(2):
        ref = peak_signal_noise_ratio(
            ((x[i] + 1) / 2).double().numpy(), ((y[i] + 1) / 2).double().numpy(), data_range=1
        )
        assert abs(out[i].item() - ref) < 1e-4


def test_psnr_bf16_input_computes_in_fp32() -> None:
    x, y = _rand(1, 3, 32, 32, seed=3), _rand(1, 3, 32, 32, seed=4)
    xb, yb = x.bfloat16(), y.bfloat16()
    out = psnr(xb, yb)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, psnr(xb.float(), yb.float()))


# ---------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(11, 11), (32, 32), (37, 53), (64, 19)])
def test_ssim_matches_skimage_on_random_images(shape: tuple[int, int]) -> None:
    x = _rand(2, 3, *shape, seed=5)
    # Correlated pairs exercise the whole SSIM range, not just the ~0 of independent noise.
    y = (0.7 * x + 0.3 * _rand(2, 3, *shape, seed=6)).clamp(-1, 1)
    out = ssim(x, y)
    assert out.shape == (2,)
    for i in range(2):
        assert abs(out[i].item() - _sk_ssim(x[i], y[i])) < 1e-4


def test_ssim_matches_skimage_on_photographs(photos: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    for name, img in photos.items():
        noisy = np.clip(img.astype(np.int16) + rng.integers(-25, 26, img.shape), 0, 255)
        x = to_tensor(img)[None]
        y = to_tensor(noisy.astype(np.uint8))[None]
        # A blurred and darkened copy tests luminance/contrast terms as well as structure.
        blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2) * 0.9
        for other in (y, blurred):
            ref = _sk_ssim(x[0], other[0])
            got = ssim(x, other).item()
            assert abs(got - ref) < 1e-4, (name, got, ref)


def test_ssim_identical_is_one() -> None:
    x = _rand(2, 3, 40, 30, seed=7)
    torch.testing.assert_close(ssim(x, x.clone()), torch.ones(2), atol=1e-6, rtol=0)


def test_ssim_rejects_images_smaller_than_window() -> None:
    x = _rand(1, 3, 10, 40)
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(x, x)


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [psnr, ssim], ids=["psnr", "ssim"])
def test_bad_inputs_raise_input_error_naming_problem(fn) -> None:  # noqa: ANN001
    good = _rand(1, 3, 16, 16)
    with pytest.raises(InputError, match="4-D"):
        fn(good[0], good[0])
    with pytest.raises(InputError, match="3 channels"):
        fn(good[:, :1], good[:, :1])
    with pytest.raises(InputError, match="same shape"):
        fn(good, _rand(1, 3, 16, 18))
    nan = good.clone()
    nan[0, 1, 3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        fn(good, nan)
    with pytest.raises(InputError, match="floating-point"):
        fn(good.long(), good.long())
    with pytest.raises(InputError, match="torch.Tensor"):
        fn(good.numpy(), good.numpy())


def test_input_error_is_value_error_and_package_error() -> None:
    with pytest.raises(ValueError):
        psnr(_rand(1, 3, 4, 4), _rand(1, 3, 4, 5))
    with pytest.raises(DCAEError):
        psnr(_rand(1, 3, 4, 4), _rand(1, 3, 4, 5))


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------


class _Boom(nn.Module):
    """A head that must never run: LPIPS stops the backbone after its last requested layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the backbone ran past the last LPIPS layer")


def _tiny_backbone(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # "0": hooked, then mutated by the in-place ReLU
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),  # "3": hooked
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        _Boom(),
    )


LAYERS = ("0", "3")


def _reference_lpips(
    net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, weights: list[torch.Tensor] | None
) -> torch.Tensor:
    """Eq. 1 of Zhang et al. written out by hand for the tiny backbone."""
    shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)

    def feats(inp: torch.Tensor) -> list[torch.Tensor]:
        h = (inp - shift) / scale
        f0 = net[0](h)
        f3 = net[3](net[2](torch.relu(f0)))
        return [f0, f3]

    total = torch.zeros(x.shape[0])
    for i, (fx, fy) in enumerate(zip(feats(x), feats(y), strict=True)):
        nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        d = (nx - ny) ** 2
        w = torch.ones(1, d.shape[1], 1, 1) if weights is None else weights[i]
        total += (d * w).sum(1).mean((1, 2))
    return total


def _lin_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "lin0.model.1.weight": torch.rand(1, 8, 1, 1, generator=g),
        "lin1.model.1.weight": torch.rand(1, 16, 1, 1, generator=g),
    }


def test_lpips_matches_hand_written_equation() -> None:
    net = _tiny_backbone()
    lp = LPIPS(net, LAYERS)
    x, y = _rand(2, 3, 16, 16, seed=1), _rand(2, 3, 16, 16, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(lp(x, y), _reference_lpips(net, x, y, None))
        state = _lin_state()
        lp.load_linear_weights(state)
        torch.testing.assert_close(
            lp(x, y), _reference_lpips(net, x, y, [state["lin0.model.1.weight"], state["lin1.model.1.weight"]])
        )


def test_lpips_zero_for_identical_positive_otherwise_and_symmetric() -> None:
    lp = LPIPS(_tiny_backbone(), LAYERS, _lin_state())
    x, y = _rand(3, 3, 24, 20, seed=3), _rand(3, 3, 24, 20, seed=4)
    d_xx = lp(x, x.clone())
    d_xy, d_yx = lp(x, y), lp(y, x)
    assert d_xx.shape == (3,)
    torch.testing.assert_close(d_xx, torch.zeros(3))
    assert (d_xy > 0).all()
    torch.testing.assert_close(d_xy, d_yx)


def test_lpips_linear_weights_scale_the_distance() -> None:
    x, y = _rand(1, 3, 16, 16, seed=5), _rand(1, 3, 16, 16, seed=6)
    plain = LPIPS(_tiny_backbone(), LAYERS)(x, y)
    ones = {"lin0.model.1.weight": torch.ones(1, 8, 1, 1), "lin1.model.1.weight": torch.ones(1, 16, 1, 1)}
    torch.testing.assert_close(LPIPS(_tiny_backbone(), LAYERS, ones)(x, y), plain)
    twos = {k: 2 * v for k, v in ones.items()}
    torch.testing.assert_close(LPIPS(_tiny_backbone(), LAYERS, twos)(x, y), 2 * plain)
    zeros = {k: 0 * v for k, v in ones.items()}
    torch.testing.assert_close(LPIPS(_tiny_backbone(), LAYERS, zeros)(x, y), torch.zeros(1))


def test_lpips_state_dict_uses_official_lin_keys() -> None:
    lp = LPIPS(_tiny_backbone(), LAYERS, _lin_state())
    keys = set(lp.state_dict())
    assert {"lin0.model.1.weight", "lin1.model.1.weight"} <= keys
    assert all(k.startswith(("backbone.", "lin")) for k in keys)


def test_lpips_bad_linear_weights_raise_checkpoint_error() -> None:
    lp = LPIPS(_tiny_backbone(), LAYERS)
    state = _lin_state()
    with pytest.raises(CheckpointError, match=r"missing keys \['lin1.model.1.weight'\]"):
        lp.load_linear_weights({"lin0.model.1.weight": state["lin0.model.1.weight"]})
    with pytest.raises(CheckpointError, match="unexpected keys"):
        lp.load_linear_weights({**state, "lin2.model.1.weight": torch.ones(1, 4, 1, 1)})
    with pytest.raises(CheckpointError, match=r"lin1.model.1.weight must have shape \[1, C, 1, 1\]"):
        lp.load_linear_weights({**state, "lin1.model.1.weight": torch.ones(16)})
    # Right form, wrong channel count: caught when the features reach it.
    wrong = {**state, "lin1.model.1.weight": torch.ones(1, 5, 1, 1)}
    lp.load_linear_weights(wrong)
    with pytest.raises(CheckpointError, match="expects 5 channels but layer '3' gives 16"):
        lp(_rand(1, 3, 8, 8), _rand(1, 3, 8, 8, seed=1))


def test_lpips_bad_configuration_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="no submodule named 'nope'"):
        LPIPS(_tiny_backbone(), ("0", "nope"))
    with pytest.raises(ConfigError, match="empty"):
        LPIPS(_tiny_backbone(), ())
    with pytest.raises(ConfigError, match="duplicates"):
        LPIPS(_tiny_backbone(), ("0", "0"))


def test_lpips_gradients_reach_input_not_backbone_and_hooks_are_removed() -> None:
    net = _tiny_backbone()
    lp = LPIPS(net, LAYERS, _lin_state())
    x = _rand(2, 3, 16, 16, seed=7).requires_grad_()
    lp(x, _rand(2, 3, 16, 16, seed=8)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in lp.parameters())
    assert all(not m._forward_hooks for m in net.modules())
    lp.train()
    assert not net.training


def test_lpips_bf16_and_deepcopy() -> None:
    lp = LPIPS(_tiny_backbone(), LAYERS, _lin_state())
    x, y = _rand(2, 3, 16, 16, seed=9), _rand(2, 3, 16, 16, seed=10)
    ref = lp(x, y)
    out = lp(x.bfloat16(), y.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=0.05 * ref.abs().max().item(), rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(lp(x, y), ref)
    torch.testing.assert_close(copy.deepcopy(lp)(x, y), ref)


def test_lpips_rejects_bad_inputs() -> None:
    lp = LPIPS(_tiny_backbone(), LAYERS)
    with pytest.raises(InputError, match="3 channels"):
        lp(_rand(1, 4, 8, 8), _rand(1, 4, 8, 8))
    bad = _rand(1, 3, 8, 8)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN or Inf"):
        lp(bad, _rand(1, 3, 8, 8))


# ---------------------------------------------------------------------------------------------
# PerceptualLoss
# ---------------------------------------------------------------------------------------------


def test_perceptual_loss_falls_back_with_warning() -> None:
    with pytest.warns(PerceptualFallbackWarning, match="weight-free"):
        loss = PerceptualLoss.from_local(None)
    assert loss.kind == "weight-free"
    assert "weight-free" in repr(loss)
    x = _rand(2, 3, 64, 64, seed=11)
    assert loss(x, x.clone()).abs().item() < 1e-5
    assert loss(x, _rand(2, 3, 64, 64, seed=12)).item() > 0.1


def test_weight_free_loss_gradients_flow_and_bf16_is_finite() -> None:
    loss = PerceptualLoss()
    target = _rand(2, 3, 48, 40, seed=13)
    x = _rand(2, 3, 48, 40, seed=14).requires_grad_()
    value = loss(x, target)
    assert value.ndim == 0 and value.dtype == torch.float32
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    xb = x.detach().bfloat16().requires_grad_()
    vb = loss(xb, target.bfloat16())
    assert vb.dtype == torch.float32 and torch.isfinite(vb)
    vb.backward()
    assert xb.grad is not None and xb.grad.dtype == torch.bfloat16 and torch.isfinite(xb.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(loss(x.detach(), target), value.detach())


@pytest.mark.parametrize("size", [4, 9, 16, 30, 100])
def test_weight_free_loss_handles_any_size(size: int) -> None:
    x, y = _rand(1, 3, size, size + 3, seed=15), _rand(1, 3, size, size + 3, seed=16)
    out = weight_free_loss(x, y)
    assert out.shape == (1,) and torch.isfinite(out).all() and out.item() > 0


def test_weight_free_loss_prefers_sharp_over_blurred_at_equal_l1(photos: dict[str, np.ndarray]) -> None:
    target = to_tensor(photos["astronaut"])[None, :, :128, :128]
    blurred = torch.nn.functional.avg_pool2d(target, 5, stride=1, padding=2, count_include_pad=False)
    l1 = (blurred - target).abs().mean()
    # A constant brightness shift keeps every edge but costs the same L1 as the blur.
    shifted = target + l1
    assert abs((shifted - target).abs().mean() - l1) < 1e-6
    assert weight_free_loss(shifted, target).item() < weight_free_loss(blurred, target).item()


def test_perceptual_loss_reduction_none_and_validation() -> None:
    loss = PerceptualLoss(reduction="none")
    assert loss(_rand(3, 3, 32, 32), _rand(3, 3, 32, 32, seed=1)).shape == (3,)
    with pytest.raises(InputError, match="same shape"):
        loss(_rand(1, 3, 32, 32), _rand(1, 3, 16, 32))
    with pytest.raises(ConfigError, match="reduction"):
        PerceptualLoss(reduction="sum")  # type: ignore[arg-type]


def test_perceptual_loss_uses_given_lpips_instance() -> None:
    lp = LPIPS(_tiny_backbone(), LAYERS, _lin_state())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = PerceptualLoss.from_local(lp)
    assert loss.kind == "lpips"
    x = _rand(2, 3, 16, 16, seed=1).requires_grad_()
    y = _rand(2, 3, 16, 16, seed=2)
    value = loss(x, y)
    torch.testing.assert_close(value, lp(x, y).mean())
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_perceptual_loss_from_full_safetensors_file(tmp_path: Path) -> None:
    source = LPIPS(_tiny_backbone(seed=1), LAYERS, _lin_state(seed=3))
    path = tmp_path / "lpips_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    # A freshly initialised backbone of the same architecture gets its weights from the file.
    loss = PerceptualLoss.from_local(path, backbone=_tiny_backbone(seed=2), layer_names=LAYERS)
    assert loss.kind == "lpips"
    x, y = _rand(2, 3, 16, 16, seed=1), _rand(2, 3, 16, 16, seed=2)
    torch.testing.assert_close(loss(x, y), source(x, y).mean())


def test_perceptual_loss_from_official_style_lin_file(tmp_path: Path) -> None:
    path = tmp_path / "lin.pth"
    state = _lin_state(seed=4)
    torch.save(state, path)
    net = _tiny_backbone(seed=5)
    loss = PerceptualLoss.from_local(str(path), backbone=net, layer_names=LAYERS)
    x, y = _rand(1, 3, 16, 16, seed=1), _rand(1, 3, 16, 16, seed=2)
    torch.testing.assert_close(loss(x, y), LPIPS(_tiny_backbone(seed=5), LAYERS, state)(x, y).mean())


def test_perceptual_loss_from_local_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no file at"):
        PerceptualLoss.from_local(tmp_path / "missing.pt", backbone=_tiny_backbone(), layer_names=LAYERS)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        PerceptualLoss.from_local(garbage, backbone=_tiny_backbone(), layer_names=LAYERS)
    wrong = tmp_path / "wrong.pt"
    torch.save({"backbone.0.weight": torch.zeros(2, 2, 3, 3)}, wrong)
    with pytest.raises(CheckpointError, match="does not match the backbone"):
        PerceptualLoss.from_local(wrong, backbone=_tiny_backbone(), layer_names=LAYERS)
    with pytest.raises(ConfigError, match="both backbone= and layer_names="):
        PerceptualLoss.from_local(wrong, backbone=_tiny_backbone())
