"""Configurations and named presets of the Deep Compression Autoencoder.

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion
Models" (DC-AE, ICLR 2025), Sec. 3 (residual autoencoding) and the released model zoo; SANA
(Xie et al., 2024) for the ``sana`` variants, DC-AE-Lite and DC-AE 1.5 (Chen et al., ICCV 2025).

A stage list runs from high to low resolution. Stage ``i`` of the encoder holds ``depth[i]``
blocks of width ``width[i]`` and then (for every stage but the last, when it has blocks) a 2x
downsample to ``width[i+1]``. A stage with depth 0 is folded into ``conv_in``/``conv_out``
(which then down/upsample by 2 themselves), so the spatial factor is ``2 ** (stages - 1)``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dc_ae.errors import ConfigError

BlockType = Literal["ResBlock", "EViT_GLU", "EViTS5_GLU"]
NormType = Literal["rms2d", "bn2d"]
ActType = Literal["silu", "relu"]

__all__ = ["DCAEConfig", "preset_names"]


class DCAEConfig(BaseModel):
    """Architecture of one DC-AE. Frozen; a typo in a field name is a validation error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("custom", description="Preset name, or 'custom'.")
    in_channels: int = Field(3, gt=0, description="Image channels.")
    latent_channels: int = Field(gt=0, description="Latent channels c of an f{f}c{c} model.")
    width_list: tuple[int, ...] = Field(description="Encoder stage widths, high to low resolution.")
    encoder_depth_list: tuple[int, ...] = Field(description="Blocks per encoder stage.")
    encoder_block_types: tuple[BlockType, ...] = Field(description="Block type per encoder stage.")
    encoder_norm: NormType = Field("rms2d", description="Norm inside encoder blocks.")
    encoder_act: ActType = Field("silu", description="Activation inside encoder blocks.")
    downsample_block_type: Literal["Conv", "ConvPixelUnshuffle"] = Field(
        "ConvPixelUnshuffle", description="Stride-2 3x3 conv, or 3x3 conv then pixel unshuffle."
    )
    encoder_out_shortcut: bool = Field(True, description="Channel-averaging shortcut around conv_out.")
    decoder_width_list: tuple[int, ...] | None = Field(None, description="Decoder widths; None: width_list.")
    decoder_depth_list: tuple[int, ...] = Field(description="Blocks per decoder stage.")
    decoder_block_types: tuple[BlockType, ...] = Field(description="Block type per decoder stage.")
    decoder_norms: tuple[NormType, ...] = Field(description="Norm per decoder stage (bn2d: BatchNorm).")
    decoder_acts: tuple[ActType, ...] = Field(description="Activation per decoder stage.")
    upsample_block_type: Literal["ConvPixelShuffle", "InterpolateConv"] = Field(
        "ConvPixelShuffle", description="3x3 conv then pixel shuffle, or nearest x2 then 3x3 conv."
    )
    decoder_in_shortcut: bool = Field(True, description="Channel-duplicating shortcut around conv_in.")
    decoder_out_act: ActType = Field("relu", description="Activation between norm_out and conv_out.")
    attention_head_dim: int = Field(32, gt=0, description="Head dimension of the ReLU linear attention.")
    scaling_factor: float = Field(1.0, gt=0, description="Latent scale: z_diffusion = z * scaling_factor.")
    structured_latent: bool = Field(
        False,
        description="DC-AE 1.5: the front latent channels carry structure, so encode/decode may use a prefix.",
    )

    @model_validator(mode="after")
    def _check(self) -> DCAEConfig:
        n = len(self.width_list)
        if n < 2:
            raise ConfigError(f"width_list needs at least 2 stages, got {self.width_list}")
        per_stage = {
            "encoder_depth_list": self.encoder_depth_list,
            "encoder_block_types": self.encoder_block_types,
            "decoder_width_list": self.decoder_widths,
            "decoder_depth_list": self.decoder_depth_list,
            "decoder_block_types": self.decoder_block_types,
            "decoder_norms": self.decoder_norms,
            "decoder_acts": self.decoder_acts,
        }
        for field, value in per_stage.items():
            if len(value) != n:
                raise ConfigError(f"{field} has {len(value)} entries, expected one per stage ({n})")
        for field, depths in (
            ("encoder_depth_list", self.encoder_depth_list),
            ("decoder_depth_list", self.decoder_depth_list),
        ):
            if any(d < 0 for d in depths):
                raise ConfigError(f"{field} must be non-negative, got {depths}")
            if any(d == 0 for d in depths[1:]):
                raise ConfigError(f"{field}: only stage 0 may be empty, got {depths}")
        for field, widths in (("width_list", self.width_list), ("decoder_width_list", self.decoder_widths)):
            if any(w <= 0 for w in widths):
                raise ConfigError(f"{field} must be positive, got {widths}")
        for i, (width, kind) in enumerate(
            list(zip(self.width_list, self.encoder_block_types, strict=True))
            + list(zip(self.decoder_widths, self.decoder_block_types, strict=True))
        ):
            if kind != "ResBlock" and width % self.attention_head_dim:
                raise ConfigError(
                    f"stage width {width} (stage {i % n}) is not a multiple of attention_head_dim "
                    f"{self.attention_head_dim}, which {kind} needs"
                )
        self._check_shortcuts()
        return self

    def _check_shortcuts(self) -> None:
        # The space-to-channel shortcuts group or repeat whole channels, so widths must divide.
        enc, dec, c = self.width_list, self.decoder_widths, self.latent_channels
        for i in range(len(enc) - 1):
            if self.encoder_depth_list[i] > 0 and (4 * enc[i]) % enc[i + 1]:
                raise ConfigError(f"averaging shortcut: 4*{enc[i]} is not a multiple of {enc[i + 1]}")
            if self.decoder_depth_list[i] > 0 and (4 * dec[i]) % dec[i + 1]:
                raise ConfigError(f"duplicating shortcut: 4*{dec[i]} is not a multiple of {dec[i + 1]}")
        if self.encoder_out_shortcut and enc[-1] % c:
            raise ConfigError(f"encoder_out_shortcut: last width {enc[-1]} is not a multiple of latent {c}")
        if self.decoder_in_shortcut and dec[-1] % c:
            raise ConfigError(f"decoder_in_shortcut: last width {dec[-1]} is not a multiple of latent {c}")

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        return self.decoder_width_list if self.decoder_width_list is not None else self.width_list

    @property
    def num_stages(self) -> int:
        return len(self.width_list)

    @property
    def spatial_compression(self) -> int:
        return 2 ** (self.num_stages - 1)

    @classmethod
    def from_name(cls, name: str) -> DCAEConfig:
        """The preset called ``name`` (see :func:`preset_names`)."""
        if name not in _PRESETS:
            raise ConfigError(f"unknown DC-AE preset {name!r}; known presets: {', '.join(preset_names())}")
        return cls.model_validate({**_PRESETS[name], "name": name})


def preset_names() -> list[str]:
    """Names accepted by :meth:`DCAEConfig.from_name`, released models first."""
    return list(_PRESETS)


def _in_mix(latent: int, widths: tuple[int, ...], sf: float) -> dict[str, object]:
    # DC-AE 1.0 ImageNet / mixed-data models: ResBlocks at high resolution, EViT blocks below,
    # BatchNorm+ReLU in the first three decoder stages (run them in eval mode).
    n = len(widths)
    return dict(
        latent_channels=latent,
        width_list=widths,
        encoder_depth_list=(0, 4, 8) + (2,) * (n - 3),
        encoder_block_types=("ResBlock",) * 3 + ("EViT_GLU",) * (n - 3),
        downsample_block_type="ConvPixelUnshuffle",
        decoder_depth_list=(0, 5, 10) + (2,) * (n - 3),
        decoder_block_types=("ResBlock",) * 3 + ("EViT_GLU",) * (n - 3),
        decoder_norms=("bn2d",) * 3 + ("rms2d",) * (n - 3),
        decoder_acts=("relu",) * 3 + ("silu",) * (n - 3),
        upsample_block_type="ConvPixelShuffle",
        scaling_factor=sf,
    )


_W6 = (128, 256, 512, 512, 1024, 1024)
_SANA_ENCODER: dict[str, object] = dict(
    latent_channels=32,
    width_list=_W6,
    encoder_depth_list=(2, 2, 2, 3, 3, 3),
    encoder_block_types=("ResBlock",) * 3 + ("EViTS5_GLU",) * 3,
    downsample_block_type="Conv",
    scaling_factor=0.41407,
)
_SANA = dict(
    _SANA_ENCODER,
    decoder_depth_list=(3, 3, 3, 3, 3, 3),
    decoder_block_types=("ResBlock",) * 3 + ("EViTS5_GLU",) * 3,
    decoder_norms=("rms2d",) * 6,
    decoder_acts=("silu",) * 6,
    upsample_block_type="InterpolateConv",
)


def _v15(latent: int, widths: tuple[int, ...]) -> dict[str, object]:
    # DC-AE 1.5: all ResBlocks, no encoder-out/decoder-in shortcuts, structured latent channels.
    n = len(widths)
    depth = (0, 5, 10) + (4,) * (n - 3)
    return dict(
        latent_channels=latent,
        width_list=widths,
        encoder_depth_list=depth,
        encoder_block_types=("ResBlock",) * n,
        downsample_block_type="ConvPixelUnshuffle",
        encoder_out_shortcut=False,
        decoder_depth_list=depth,
        decoder_block_types=("ResBlock",) * n,
        decoder_norms=("rms2d",) * n,
        decoder_acts=("silu",) * n,
        upsample_block_type="ConvPixelShuffle",
        decoder_in_shortcut=False,
        structured_latent=True,
    )


def _tiny(latent: int, stages: int, attention: bool) -> dict[str, object]:
    # Test presets: the real block types and wiring at a few thousand parameters.
    widths = tuple([8, 16, 32, 32, 64, 64, 64, 64][:stages])
    blocks = tuple("EViTS5_GLU" if attention and i >= 2 else "ResBlock" for i in range(stages))
    return dict(
        latent_channels=latent,
        width_list=widths,
        encoder_depth_list=(1,) * stages,
        encoder_block_types=blocks,
        downsample_block_type="Conv",
        decoder_depth_list=(1,) * stages,
        decoder_block_types=blocks,
        decoder_norms=("bn2d",) + ("rms2d",) * (stages - 1),
        decoder_acts=("relu",) + ("silu",) * (stages - 1),
        upsample_block_type="InterpolateConv",
        attention_head_dim=8,
    )


_PRESETS: dict[str, dict[str, object]] = {
    "dc-ae-f32c32-in-1.0": _in_mix(32, _W6, 0.3189),
    "dc-ae-f32c32-mix-1.0": _in_mix(32, _W6, 0.4552),
    "dc-ae-f64c128-in-1.0": _in_mix(128, _W6 + (2048,), 0.2889),
    "dc-ae-f64c128-mix-1.0": _in_mix(128, _W6 + (2048,), 0.4538),
    "dc-ae-f128c512-in-1.0": _in_mix(512, _W6 + (2048, 2048), 0.4883),
    "dc-ae-f128c512-mix-1.0": _in_mix(512, _W6 + (2048, 2048), 0.3620),
    "dc-ae-f32c32-sana-1.0": _SANA,
    "dc-ae-f32c32-sana-1.1": _SANA,
    # Lite: the SANA encoder with a smaller all-ResBlock decoder (1.8x faster decoding).
    "dc-ae-lite-f32c32-sana-1.1": dict(
        _SANA_ENCODER,
        encoder_out_shortcut=False,
        decoder_depth_list=(0, 3, 5, 4, 4, 4),
        decoder_block_types=("ResBlock",) * 6,
        decoder_norms=("rms2d",) * 6,
        decoder_acts=("silu",) * 6,
        upsample_block_type="ConvPixelShuffle",
        decoder_in_shortcut=False,
        decoder_out_act="silu",
    ),
    "dc-ae-f32c128-1.5": _v15(128, _W6),
    "dc-ae-f64c128-1.5": _v15(128, _W6 + (1024,)),
    # The small f32 model trained on CPU and shipped as the package's embedded default.
    "dc-ae-f32c32-small": dict(
        latent_channels=32,
        width_list=(16, 32, 64, 64, 128, 128),
        encoder_depth_list=(0, 1, 1, 1, 1, 1),
        encoder_block_types=("ResBlock",) * 3 + ("EViT_GLU",) * 3,
        downsample_block_type="ConvPixelUnshuffle",
        decoder_depth_list=(0, 1, 2, 1, 1, 1),
        decoder_block_types=("ResBlock",) * 3 + ("EViT_GLU",) * 3,
        decoder_norms=("rms2d",) * 6,
        decoder_acts=("silu",) * 6,
        upsample_block_type="ConvPixelShuffle",
        attention_head_dim=16,
    ),
    "tiny-f4": _tiny(4, 3, attention=True),
    "tiny-f8": _tiny(8, 4, attention=True),
    "tiny-f4-resblock": _tiny(4, 3, attention=False),
    # The in/mix wiring (empty stage 0, pixel (un)shuffle, EViT without multi-scale) at toy size.
    "tiny-f8-in": dict(
        _in_mix(8, (8, 16, 32, 32), 1.0),
        encoder_depth_list=(0, 1, 1, 1),
        decoder_depth_list=(0, 1, 2, 1),
        attention_head_dim=8,
    ),
}
