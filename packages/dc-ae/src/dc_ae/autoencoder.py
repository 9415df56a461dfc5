"""The Deep Compression Autoencoder: encoder, decoder and the ``DCAE`` model.

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion
Models" (ICLR 2025), Sec. 3; module wiring follows the released model zoo so that the official
weights load (see :mod:`dc_ae.layouts`).
"""

from __future__ import annotations

import torch
from torch import nn

from dc_ae.blocks import make_act, make_block
from dc_ae.config import DCAEConfig
from dc_ae.errors import InputError
from dc_ae.lite_mla import make_norm
from dc_ae.residual_autoencoding import (
    Downsample,
    Upsample,
    channel_to_space_duplicate,
    space_to_channel_average,
)

__all__ = ["DCAE", "Encoder", "Decoder"]


def check_tensor(x: torch.Tensor, name: str, channels: int) -> None:
    """Raise :class:`InputError` unless ``x`` is a floating-point ``[B, channels, H>0, W>0]`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise InputError(f"{name} must be 4-D [B, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise InputError(f"{name} must have {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[-2] < 1 or x.shape[-1] < 1:
        raise InputError(f"{name} must have a non-empty spatial size, got {tuple(x.shape[-2:])}")


class EncoderStage(nn.Module):
    def __init__(self, blocks: list[nn.Module], down: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return self.down(x) if self.down is not None else x


class DecoderStage(nn.Module):
    def __init__(self, up: nn.Module | None, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.up = up
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        return self.blocks(x)


class Encoder(nn.Module):
    """[B, 3, H, W] -> [B, c, H/f, W/f]."""

    def __init__(self, cfg: DCAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, d = cfg.width_list, cfg.encoder_depth_list
        n = len(w)
        if d[0] > 0:
            self.conv_in: nn.Module = nn.Conv2d(cfg.in_channels, w[0], 3, padding=1)
        else:  # an empty first stage: conv_in does its 2x downsampling (no shortcut from 3 channels)
            self.conv_in = Downsample(cfg.in_channels, w[1], cfg.downsample_block_type, shortcut=False)
        stages = []
        for i in range(n):
            blocks = [
                make_block(cfg.encoder_block_types[i], w[i], cfg.encoder_norm, cfg.encoder_act, cfg.attention_head_dim)
                for _ in range(d[i])
            ]
            down = None
            if i < n - 1 and d[i] > 0:
                down = Downsample(w[i], w[i + 1], cfg.downsample_block_type, shortcut=True)
            stages.append(EncoderStage(blocks, down))
        self.stages = nn.ModuleList(stages)
        self.conv_out = nn.Conv2d(w[-1], cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for stage in self.stages:
            x = stage(x)
        z = self.conv_out(x)
        if self.cfg.encoder_out_shortcut:
            z = z + space_to_channel_average(x, self.cfg.latent_channels, 1)
        return z.contiguous()  # EfficientViT stages leave channels-last strides behind


class Decoder(nn.Module):
    """[B, c, h, w] -> [B, 3, h*f, w*f]."""

    def __init__(self, cfg: DCAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, d = cfg.decoder_widths, cfg.decoder_depth_list
        n = len(w)
        self.conv_in = nn.Conv2d(cfg.latent_channels, w[-1], 3, padding=1)
        stages = []
        for i in range(n):
            up = None
            if i < n - 1 and d[i] > 0:
                up = Upsample(w[i + 1], w[i], cfg.upsample_block_type, shortcut=True)
            blocks = [
                make_block(
                    cfg.decoder_block_types[i], w[i], cfg.decoder_norms[i], cfg.decoder_acts[i], cfg.attention_head_dim
                )
                for _ in range(d[i])
            ]
            stages.append(DecoderStage(up, blocks))
        self.stages = nn.ModuleList(stages)  # index i is stage i; run from the last to the first
        head_width = w[0] if d[0] > 0 else w[1]
        self.norm_out = make_norm("rms2d", head_width)
        self.act_out = make_act(cfg.decoder_out_act)
        if d[0] > 0:
            self.conv_out: nn.Module = nn.Conv2d(head_width, cfg.in_channels, 3, padding=1)
        else:
            self.conv_out = Upsample(head_width, cfg.in_channels, cfg.upsample_block_type, shortcut=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        if self.cfg.decoder_in_shortcut:
            x = x + channel_to_space_duplicate(z, x.shape[1], 1)
        for stage in reversed(self.stages):
            x = stage(x)
        return self.conv_out(self.act_out(self.norm_out(x))).contiguous()  # see Encoder.forward


class DCAE(nn.Module):
    """Deep Compression Autoencoder.

    ``encode`` maps images ``[B, 3, H, W]`` in ``[-1, 1]`` to unscaled latents
    ``[B, c, H/f, W/f]``; multiply by :attr:`scaling_factor` before diffusion and divide after.
    ``H`` and ``W`` must be multiples of ``f`` unless ``tile_size`` is given (tiled coding pads
    and crops, so any size works, at a memory cost set by the tile size).
    """

    def __init__(self, config: DCAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    @property
    def spatial_compression(self) -> int:
        return self.config.spatial_compression

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    def _param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _check(self, x: torch.Tensor, channels: int, what: str, multiple: int | None) -> None:
        check_tensor(x, what, channels)
        if x.numel() and not torch.isfinite(x).all():
            raise InputError(f"{what} contains NaN or Inf values")
        if multiple is not None and (x.shape[-2] < multiple or x.shape[-1] < multiple):
            raise InputError(
                f"{what} size {tuple(x.shape[-2:])} is smaller than one latent pixel ({multiple}x{multiple})"
            )
        if multiple is not None and (x.shape[-2] % multiple or x.shape[-1] % multiple):
            raise InputError(
                f"{what} size {tuple(x.shape[-2:])} is not a multiple of {multiple}; "
                "pass tile_size=... (or use dc_ae.tiled_encode/tiled_decode) to pad and crop"
            )

    def encode(self, x: torch.Tensor, tile_size: int | None = None, latent_channels: int | None = None) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in ``[-1, 1]`` -> latents ``[B, c, H/f, W/f]`` (unscaled).

        ``tile_size`` (pixels) encodes overlapping tiles and blends them; with it any ``H, W``
        works (the result covers ``ceil(H/f) x ceil(W/f)`` latents). ``latent_channels`` keeps a
        prefix of the channels, for DC-AE 1.5's structured latent space.
        """
        f = self.spatial_compression
        if tile_size is not None:
            from dc_ae.tiling import tiled_encode

            self._check(x, self.config.in_channels, "image", None)
            z = tiled_encode(self, x, tile_size=tile_size)
        else:
            self._check(x, self.config.in_channels, "image", f)
            z = self.encoder(x.to(self._param_dtype()))
        return self._prefix(z, latent_channels)

    def decode(self, z: torch.Tensor, tile_size: int | None = None) -> torch.Tensor:
        """Latents ``[B, c', h, w]`` (unscaled) -> images ``[B, 3, h*f, w*f]`` in about ``[-1, 1]``.

        ``tile_size`` is in latent pixels. For structured-latent (1.5) models ``c' <= c`` front
        channels may be given; the rest are taken as zero.
        """
        z = self._pad_channels(z)
        self._check(z, self.config.latent_channels, "latent", None)
        if tile_size is not None:
            from dc_ae.tiling import tiled_decode

            return tiled_decode(self, z, tile_size=tile_size)
        return self.decoder(z.to(self._param_dtype()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def _prefix(self, z: torch.Tensor, latent_channels: int | None) -> torch.Tensor:
        if latent_channels is None:
            return z
        if not self.config.structured_latent:
            raise InputError(f"latent_channels needs a structured-latent (DC-AE 1.5) model; {self.config.name} is not")
        if not 0 < latent_channels <= self.config.latent_channels:
            raise InputError(f"latent_channels must be in [1, {self.config.latent_channels}], got {latent_channels}")
        return z[:, :latent_channels]

    def _pad_channels(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config.latent_channels
        if self.config.structured_latent and isinstance(z, torch.Tensor) and z.ndim == 4 and 0 < z.shape[1] < c:
            return torch.cat([z, z.new_zeros(z.shape[0], c - z.shape[1], *z.shape[2:])], dim=1)
        return z
