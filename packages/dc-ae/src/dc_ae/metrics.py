"""Image-quality metrics and the perceptual training loss for DC-AE.

The DC-AE paper (Chen et al., 2024, "Deep Compression Autoencoder for Efficient High-Resolution
Diffusion Models", Sec. 4) reports reconstruction quality as PSNR, SSIM and LPIPS, and trains the
autoencoder with L1 + LPIPS (+ GAN) losses. This module implements:

* :func:`psnr` -- peak signal-to-noise ratio on the ``[0, 1]`` range (data range 1).
* :func:`ssim` -- the structural similarity index of Wang, Bovik, Sheikh and Simoncelli,
  "Image Quality Assessment: From Error Visibility to Structural Similarity", IEEE TIP 2004,
  with the paper's 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population
  covariances and "valid" filtering; numerically it matches scikit-image's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1)``.
* :class:`LPIPS` -- the "Learned Perceptual Image Patch Similarity" of Zhang et al., "The
  Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018 (Eq. 1), on any
  user-supplied feature network with local weights.
* :class:`PerceptualLoss` -- LPIPS when a local network is available, otherwise a documented
  weight-free multi-scale structural + gradient loss (see :func:`weight_free_loss`).

All functions take images ``[B, 3, H, W]`` in ``[-1, 1]`` (the DC-AE convention), accept any
floating dtype and device, and compute in fp32 with autocast disabled so bf16/fp16 inputs give the
same finite numbers as fp32 ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dc_ae.errors import CheckpointError, ConfigError, InputError

__all__ = [
    "LPIPS",
    "LPIPS_SCALE",
    "LPIPS_SHIFT",
    "PSNR_MAX_DB",
    "PerceptualFallbackWarning",
    "PerceptualLoss",
    "psnr",
    "ssim",
    "weight_free_loss",
]

#: PSNR of identical images. The MSE is floored at ``10 ** (-PSNR_MAX_DB / 10)`` so a perfect
#: reconstruction yields this finite value instead of ``inf`` (which would poison averages).
PSNR_MAX_DB = 100.0
_MSE_FLOOR = 10.0 ** (-PSNR_MAX_DB / 10.0)

# Wang et al. 2004, Sec. III-C: 11x11 circular-symmetric Gaussian, sigma 1.5, K1=0.01, K2=0.03.
_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 1.0) ** 2
_SSIM_C2 = (0.03 * 1.0) ** 2

#: Input shift and scale of the official ``lpips`` package (``ScalingLayer``); they map
#: ``[-1, 1]`` images to ImageNet-normalised statistics for torchvision backbones.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

_LIN_KEY = re.compile(r"^lin(\d+)\.model\.1\.weight$")


# --------------------------------------------------------------------------------------------
# validation and numerics helpers
# --------------------------------------------------------------------------------------------


def _check_image(x: object, name: str, *, channels: int | None = 3) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, found {type(x).__name__}")
    if x.ndim != 4:
        raise InputError(f"{name}: expected a 4-D tensor [B, 3, H, W], found {x.ndim}-D with shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise InputError(
            f"{name}: expected {channels} channels (RGB) in dim 1, found {x.shape[1]} (shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor in [-1, 1], found {x.dtype}")
    return x


def _check_pair(
    x: object, y: object, what: str, *, check_finite: bool = True, channels: int | None = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    x = _check_image(x, f"{what}: first image", channels=channels)
    y = _check_image(y, f"{what}: second image", channels=channels)
    if x.shape != y.shape:
        raise InputError(
            f"{what}: the two images must have the same shape, found {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise InputError(f"{what}: the two images are on different devices, {x.device} and {y.device}")
    # One fused reduction keeps this to a single host sync for both tensors.
    if check_finite and not bool(torch.isfinite(x).all() & torch.isfinite(y).all()):
        bad = "first" if not bool(torch.isfinite(x).all()) else "second"
        raise InputError(f"{what}: the {bad} image contains NaN or Inf values")
    return x, y


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    # Under a caller's bf16 autocast the convolutions below would silently run in bf16; the
    # metrics are defined in fp32, so autocast is switched off where the backend supports it.
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return (x.float() + 1.0) * 0.5


def _gaussian_1d(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    # Same taps as scipy.ndimage.gaussian_filter with truncate=3.5 (radius 5 for sigma 1.5),
    # which is what scikit-image convolves with before cropping the border.
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    w = torch.exp(-0.5 * (coords / sigma) ** 2)
    return (w / w.sum()).float()


def _separable_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = taps.numel()
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _ssim_per_channel(a: torch.Tensor, b: torch.Tensor, win: int, sigma: float) -> torch.Tensor:
    """Mean SSIM per image and channel, ``[B, C]``, for fp32 inputs on the ``[0, 1]`` range."""
    c = a.shape[1]
    taps = _gaussian_1d(win, sigma, a.device)
    # One grouped convolution filters all five moments at once.
    stats = _separable_valid(torch.cat([a, b, a * a, b * b, a * b], dim=1), taps)
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.split(c, dim=1)
    var_a = e_aa - mu_a * mu_a
    var_b = e_bb - mu_b * mu_b
    cov = e_ab - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_a * mu_a + mu_b * mu_b + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return (num / den).mean(dim=(2, 3))


# --------------------------------------------------------------------------------------------
# PSNR and SSIM
# --------------------------------------------------------------------------------------------


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB between two batches ``[B, 3, H, W]`` in ``[-1, 1]``.

    Both images are mapped to ``[0, 1]`` and compared with data range 1, so
    ``PSNR = -10 log10(MSE)``. The MSE is floored at ``1e-10``: identical images give
    :data:`PSNR_MAX_DB` (100 dB) rather than ``inf``. Values are used as given (no clamping);
    clamp reconstructions to ``[-1, 1]`` first to score the image that would be saved.

    Returns a float32 tensor of shape ``[B]`` on the inputs' device.
    """
    x, y = _check_pair(x, y, "psnr")
    with _no_autocast(x.device):
        mse = (_to_unit(x) - _to_unit(y)).square().mean(dim=(1, 2, 3))
        return -10.0 * torch.log10(mse.clamp_min(_MSE_FLOOR))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) between two batches ``[B, 3, H, W]`` in ``[-1, 1]``.

    Images are mapped to ``[0, 1]`` (data range 1); local statistics use an 11x11 Gaussian
    window with sigma 1.5 and population (not sample) covariances; only positions where the
    window fits inside the image are scored ("valid" filtering); the SSIM map is averaged per
    channel and the three channel means are averaged. This equals scikit-image's
    ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=-1)`` to about 1e-5.

    Raises :class:`~dc_ae.errors.InputError` if an image is smaller than 11x11.
    Returns a float32 tensor of shape ``[B]``.
    """
    x, y = _check_pair(x, y, "ssim")
    h, w = x.shape[-2:]
    if min(h, w) < _SSIM_WIN:
        raise InputError(
            f"ssim: images must be at least {_SSIM_WIN}x{_SSIM_WIN} for the Gaussian window, found {h}x{w}"
        )
    with _no_autocast(x.device):
        return _ssim_per_channel(_to_unit(x), _to_unit(y), _SSIM_WIN, _SSIM_SIGMA).mean(dim=1)


# --------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised from a hook once every requested layer has produced its output."""


class _NetLinLayer(nn.Module):
    """Per-channel 1x1 weighting, laid out as ``lpips.NetLinLayer`` so keys are ``model.1.weight``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # Index 0 is the official package's Dropout; it is a no-op at evaluation time.
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance (Zhang et al., CVPR 2018, Eq. 1) on a user-supplied feature network.

    ``d(x, y) = sum_l mean_hw || w_l * (x̂_l - ŷ_l) ||²`` where ``x̂_l`` are the activations of
    layer ``l`` unit-normalised across channels and ``w_l`` are the learned per-channel "lin"
    weights (all ones when none are given, the paper's "baseline" variant).

    The network is any ``nn.Module``; ``layer_names`` are names of its submodules (as in
    ``named_modules()``) whose outputs are captured with forward hooks. The forward pass stops as
    soon as the last requested layer has run, so heads such as a VGG classifier cost nothing.
    For the official VGG16 LPIPS, pass a torchvision ``vgg16(...).features`` with local weights
    and ``layer_names=("3", "8", "15", "22", "29")`` (relu1_2 ... relu5_3); for AlexNet,
    ``alexnet(...).features`` with ``("1", "4", "7", "9", "11")``. The official "lin" weights
    (``vgg.pth`` / ``alex.pth`` of the ``lpips`` package, keys ``lin{i}.model.1.weight`` of shape
    ``[1, C_i, 1, 1]``) load through ``linear_weights`` or :meth:`load_linear_weights`.

    The backbone and the lin layers are frozen (``requires_grad=False``) and kept in eval mode;
    gradients still flow to the input images, so the module can serve as a training loss.

    Args:
        backbone: the feature network. It is modified in place (frozen, eval mode).
        layer_names: submodules whose outputs are the LPIPS feature maps, in order.
        linear_weights: optional state dict with keys ``lin{i}.model.1.weight``.
        scale_input: apply the official shift/scale (:data:`LPIPS_SHIFT`, :data:`LPIPS_SCALE`)
            to the ``[-1, 1]`` inputs; turn off for networks that take ``[-1, 1]`` directly.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        layer_names: Sequence[str],
        linear_weights: Mapping[str, torch.Tensor] | None = None,
        *,
        scale_input: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"LPIPS: backbone must be an nn.Module, found {type(backbone).__name__}")
        names = tuple(layer_names) if not isinstance(layer_names, str) else (layer_names,)
        if not names:
            raise ConfigError("LPIPS: layer_names is empty; name at least one backbone layer")
        if len(set(names)) != len(names):
            raise ConfigError(f"LPIPS: layer_names has duplicates: {names}")
        available = dict(backbone.named_modules())
        for name in names:
            if name not in available or name == "":
                sample = [n for n in available if n][:12]
                raise ConfigError(f"LPIPS: backbone has no submodule named {name!r}; some available names: {sample}")
        self.backbone = backbone.eval().requires_grad_(False)
        self.layer_names = names
        self.scale_input = scale_input
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.num_linear = 0
        if linear_weights is not None:
            self.load_linear_weights(linear_weights)

    def _make_hook(self, name: str, captured: dict[str, torch.Tensor]) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if name in captured:
                # A module called more than once contributes its first output.
                return
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ConfigError(f"LPIPS: layer {name!r} must output a [N, C, H, W] tensor, found {got}")
            # Clone because a later in-place op (e.g. ReLU(inplace=True) after a hooked conv)
            # would otherwise overwrite the captured activation.
            captured[name] = output.clone()
            if len(captured) == len(self.layer_names):
                raise _StopForward

        return hook

    def load_linear_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """Install the per-layer "lin" weights from an ``lpips``-style state dict.

        Keys must be exactly ``lin0.model.1.weight`` ... ``lin{L-1}.model.1.weight`` for the
        ``L`` layers, each of shape ``[1, C, 1, 1]``; anything else raises
        :class:`~dc_ae.errors.CheckpointError` naming the key.
        """
        n = len(self.layer_names)
        expected = {f"lin{i}.model.1.weight" for i in range(n)}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise CheckpointError(
                f"LPIPS linear weights for {n} layers: missing keys {missing}, unexpected keys {unexpected}"
            )
        layers = []
        for i in range(n):
            key = f"lin{i}.model.1.weight"
            w = state[key]
            if not isinstance(w, torch.Tensor):
                raise CheckpointError(f"LPIPS linear weights: {key} is a {type(w).__name__}, not a tensor")
            if w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1):
                raise CheckpointError(
                    f"LPIPS linear weights: {key} must have shape [1, C, 1, 1], found {tuple(w.shape)}"
                )
            layer = _NetLinLayer(int(w.shape[1]))
            conv = layer.model[1]
            assert isinstance(conv, nn.Conv2d)
            with torch.no_grad():
                conv.weight.copy_(w.float())
            layers.append(layer.requires_grad_(False).eval())
        device = self.shift.device
        for i in range(self.num_linear):
            delattr(self, f"lin{i}")
        for i, layer in enumerate(layers):
            self.add_module(f"lin{i}", layer.to(device))
        self.num_linear = n

    def _linear(self, i: int) -> _NetLinLayer | None:
        return getattr(self, f"lin{i}") if self.num_linear else None

    def train(self, mode: bool = True) -> LPIPS:
        """Switch the module's mode; the backbone always stays in eval mode (frozen statistics)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        param = next(self.backbone.parameters(), None)
        if param is not None and param.is_floating_point():
            # A bf16/fp16 backbone runs in its own dtype; the distance itself stays fp32.
            x = x.to(dtype=param.dtype)
        # Hooks live only for this call, so the user's network is untouched between calls and
        # the module deep-copies and pickles like any other.
        captured: dict[str, torch.Tensor] = {}
        modules = dict(self.backbone.named_modules())
        handles = [modules[name].register_forward_hook(self._make_hook(name, captured)) for name in self.layer_names]
        try:
            self.backbone(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [n for n in self.layer_names if n not in captured]
        if missing:
            raise ConfigError(f"LPIPS: layers {missing} never ran during the backbone's forward pass")
        return [captured[n].float() for n in self.layer_names]

    def forward(self, x: torch.Tensor, y: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
        """LPIPS distance per image, ``[B]`` float32, between batches ``[B, 3, H, W]`` in ``[-1, 1]``."""
        x, y = _check_pair(x, y, "LPIPS", check_finite=check_finite)
        b = x.shape[0]
        with _no_autocast(x.device):
            inp = torch.cat([x, y]).float()
            if self.scale_input:
                inp = (inp - self.shift.to(inp.device)) / self.scale.to(inp.device)
            total = inp.new_zeros(b)
            for i, feat in enumerate(self._features(inp)):
                fx, fy = feat[:b], feat[b:]
                # Official lpips.normalize_tensor: divide by the channel L2 norm plus 1e-10.
                nx = fx / (fx.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                ny = fy / (fy.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                diff = (nx - ny).square()
                lin = self._linear(i)
                if lin is None:
                    d = diff.sum(dim=1, keepdim=True)
                else:
                    if lin.model[1].in_channels != diff.shape[1]:
                        raise CheckpointError(
                            f"LPIPS: lin{i}.model.1.weight expects {lin.model[1].in_channels} "
                            f"channels but layer {self.layer_names[i]!r} gives {diff.shape[1]}"
                        )
                    d = lin(diff)
                total = total + d.mean(dim=(1, 2, 3))
            return total


# --------------------------------------------------------------------------------------------
# weight-free fallback and the training loss
# --------------------------------------------------------------------------------------------


class PerceptualFallbackWarning(UserWarning):
    """Emitted when :meth:`PerceptualLoss.from_local` finds no LPIPS network and falls back."""


_SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = x.shape[1]
    # Divided by 8 so the response is a per-pixel intensity slope on the [0, 1] range.
    kx = torch.tensor(_SOBEL_X, dtype=x.dtype, device=x.device) / 8.0
    ky = kx.t()
    gx = F.conv2d(x, kx.view(1, 1, 3, 3).expand(c, 1, 3, 3), groups=c)
    gy = F.conv2d(x, ky.reshape(1, 1, 3, 3).expand(c, 1, 3, 3), groups=c)
    return gx, gy


def _scales(a: torch.Tensor, b: torch.Tensor, scales: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    yield a, b
    for _ in range(scales - 1):
        # Stop early on small crops rather than scoring a window wider than the image.
        if min(a.shape[-2:]) < 2 * _SSIM_WIN:
            return
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        yield a, b


def weight_free_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    scales: int = 3,
    ssim_weight: float = 1.0,
    gradient_weight: float = 1.0,
) -> torch.Tensor:
    """Weight-free perceptual loss per image, ``[B]`` float32, for batches in ``[-1, 1]``.

    ``ssim_weight * (1 - mean_s SSIM_s) + gradient_weight * mean_s L1(Sobel(x_s), Sobel(y_s))``
    over ``scales`` dyadic scales ``s`` (2x2 average pooling between scales), on the ``[0, 1]``
    range. The structural term is an MS-SSIM-style average of SSIM (Wang et al. 2004, same
    window and constants as :func:`ssim`, "valid" filtering); the gradient term is the L1
    distance between horizontal and vertical Sobel responses (normalised by 8, i.e. per-pixel
    slopes). Both reward matching edges and texture, which a plain pixel L1 loss blurs away, and
    neither needs pretrained weights. Scales whose image would be smaller than twice the 11-px
    window are skipped; on images smaller than 11 px the window shrinks to the image (odd size,
    sigma scaled with it).
    """
    if scales < 1:
        raise ConfigError(f"weight_free_loss: scales must be >= 1, found {scales}")
    x, y = _check_pair(x, y, "weight_free_loss", check_finite=False)
    with _no_autocast(x.device):
        a, b = _to_unit(x), _to_unit(y)
        ssim_terms: list[torch.Tensor] = []
        grad_terms: list[torch.Tensor] = []
        for a_s, b_s in _scales(a, b, scales):
            side = min(a_s.shape[-2:])
            win = _SSIM_WIN if side >= _SSIM_WIN else max(1, side - (1 - side % 2))
            sigma = _SSIM_SIGMA * win / _SSIM_WIN
            ssim_terms.append(_ssim_per_channel(a_s, b_s, win, sigma).mean(dim=1))
            if side >= 3:
                gxa, gya = _sobel(a_s)
                gxb, gyb = _sobel(b_s)
                grad_terms.append(((gxa - gxb).abs().mean(dim=(1, 2, 3)) + (gya - gyb).abs().mean(dim=(1, 2, 3))) * 0.5)
        loss = ssim_weight * (1.0 - torch.stack(ssim_terms).mean(dim=0))
        if grad_terms:
            loss = loss + gradient_weight * torch.stack(grad_terms).mean(dim=0)
        return loss


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"perceptual network weights: no file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path), device="cpu")
        else:
            # weights_only: a weight file must never be able to run code on load.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unusable
        raise CheckpointError(f"perceptual network weights: cannot read {path}: {exc}") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"perceptual network weights: {path} does not hold a flat state dict of tensors")
    return dict(state)


class PerceptualLoss(nn.Module):
    """Perceptual training loss: LPIPS when a local network is given, else a weight-free loss.

    ``kind`` is ``"lpips"`` or ``"weight-free"``. The forward pass returns the batch mean (a
    scalar) or, with ``reduction="none"``, one value per image. It is differentiable with respect
    to both inputs, computes in fp32 (autocast disabled) and does not check for NaN, so it adds no
    host synchronisation to a training step.

    Build it with :meth:`from_local`; constructing it directly with ``lpips=None`` selects the
    weight-free loss (:func:`weight_free_loss`) without a warning.
    """

    def __init__(
        self,
        lpips: LPIPS | None = None,
        *,
        scales: int = 3,
        ssim_weight: float = 1.0,
        gradient_weight: float = 1.0,
        reduction: Literal["mean", "none"] = "mean",
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ConfigError(f"PerceptualLoss: reduction must be 'mean' or 'none', found {reduction!r}")
        if lpips is not None and not isinstance(lpips, LPIPS):
            raise ConfigError(f"PerceptualLoss: lpips must be an LPIPS module, found {type(lpips).__name__}")
        if scales < 1:
            raise ConfigError(f"PerceptualLoss: scales must be >= 1, found {scales}")
        self.lpips = lpips
        self.scales = scales
        self.ssim_weight = ssim_weight
        self.gradient_weight = gradient_weight
        self.reduction = reduction

    @property
    def kind(self) -> Literal["lpips", "weight-free"]:
        """``"lpips"`` when an LPIPS network is in use, ``"weight-free"`` otherwise."""
        return "lpips" if self.lpips is not None else "weight-free"

    @classmethod
    def from_local(
        cls,
        path: str | os.PathLike[str] | LPIPS | None = None,
        *,
        backbone: nn.Module | None = None,
        layer_names: Sequence[str] | None = None,
        scale_input: bool = True,
        scales: int = 3,
        ssim_weight: float = 1.0,
        gradient_weight: float = 1.0,
        reduction: Literal["mean", "none"] = "mean",
    ) -> PerceptualLoss:
        """Build the loss from local resources only; never downloads anything.

        * ``path`` is an :class:`LPIPS` instance: it is used as is.
        * ``path`` is a ``.safetensors`` or ``.pt``/``.pth`` state dict: ``backbone`` and
          ``layer_names`` say which module it belongs to. Keys ``lin{i}.model.1.weight`` become
          the LPIPS lin weights; the remaining keys (with an optional ``backbone.`` prefix, as
          written by ``LPIPS.state_dict()``) are loaded strictly into ``backbone``. A file with
          only lin keys (the official ``vgg.pth``) leaves the backbone's own weights in place.
        * ``path`` is ``None`` but ``backbone`` and ``layer_names`` are given: LPIPS on that
          network without lin weights.
        * nothing given: the weight-free loss, with a :class:`PerceptualFallbackWarning`.

        A missing, unreadable or mismatched file raises :class:`~dc_ae.errors.CheckpointError`
        rather than falling back silently.
        """
        opts: dict[str, Any] = {
            "scales": scales,
            "ssim_weight": ssim_weight,
            "gradient_weight": gradient_weight,
            "reduction": reduction,
        }
        if isinstance(path, LPIPS):
            return cls(path, **opts)
        if (backbone is None) != (layer_names is None):
            raise ConfigError("PerceptualLoss.from_local: pass both backbone= and layer_names= (or neither)")
        if path is None and backbone is None:
            warnings.warn(
                "PerceptualLoss: no local LPIPS network was given, so the weight-free "
                "multi-scale SSIM + Sobel-gradient loss is used instead of LPIPS (kind="
                "'weight-free'). Pass an LPIPS module or a local weight file to use LPIPS.",
                PerceptualFallbackWarning,
                stacklevel=2,
            )
            return cls(None, **opts)
        assert backbone is not None and layer_names is not None
        if path is None:
            return cls(LPIPS(backbone, layer_names, scale_input=scale_input), **opts)

        file = Path(os.fspath(path))
        state = _read_state_dict(file)
        lin = {k: v for k, v in state.items() if _LIN_KEY.match(k)}
        rest = {k.removeprefix("backbone."): v for k, v in state.items() if not _LIN_KEY.match(k)}
        if rest:
            try:
                backbone.load_state_dict(rest, strict=True)
            except RuntimeError as exc:
                raise CheckpointError(f"perceptual network weights: {file} does not match the backbone: {exc}") from exc
        if not lin and not rest:
            raise CheckpointError(f"perceptual network weights: {file} holds no tensors")
        try:
            model = LPIPS(backbone, layer_names, lin or None, scale_input=scale_input)
        except CheckpointError as exc:
            raise CheckpointError(f"{file}: {exc}") from exc
        return cls(model, **opts)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss between reconstructions ``x`` and targets ``y``, ``[B, 3, H, W]`` in ``[-1, 1]``."""
        if self.lpips is not None:
            per_image = self.lpips(x, y, check_finite=False)
        else:
            per_image = weight_free_loss(
                x,
                y,
                scales=self.scales,
                ssim_weight=self.ssim_weight,
                gradient_weight=self.gradient_weight,
            )
        return per_image.mean() if self.reduction == "mean" else per_image

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, reduction={self.reduction!r}"
