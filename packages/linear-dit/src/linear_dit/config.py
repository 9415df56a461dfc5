"""Configurations and named presets of the Linear DiT.

Papers: Xie et al., "SANA: Efficient High-Resolution Image Synthesis with Linear Diffusion
Transformers" (ICLR 2025), Sec. 2.2 (Linear DiT: ReLU linear attention, Mix-FFN, no positional
embedding at 1K); Xie et al., "SANA 1.5: Efficient Scaling of Training-Time and Inference-Time
Compute in Linear Diffusion Transformer" (ICML 2025), Sec. 2.1 (RMSNorm on queries and keys).
Architecture numbers follow the released ``SanaMS_*`` model registry of NVlabs/Sana.

A model of width ``hidden_size`` has ``hidden_size / attention_head_dim`` linear-attention heads
(32-dim heads: 36 at width 1152, 70 at 2240) and ``num_cross_attention_heads`` softmax heads for
the text cross-attention.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linear_dit.errors import ConfigError

__all__ = ["LinearDiTConfig", "preset_names"]


class LinearDiTConfig(BaseModel):
    """Architecture of one Linear DiT. Frozen; a typo in a field name is a validation error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("custom", description="Preset name, or 'custom'.")
    in_channels: int = Field(32, gt=0, description="Latent channels (32 for DC-AE f32c32).")
    out_channels: int | None = Field(None, description="Predicted channels; None: in_channels.")
    patch_size: int = Field(1, gt=0, description="Spatial patch size (1 on DC-AE latents).")
    hidden_size: int = Field(gt=0, description="Token width C.")
    depth: int = Field(gt=0, description="Number of Linear DiT blocks.")
    attention_head_dim: int = Field(32, gt=0, description="Head dimension of the ReLU linear self-attention.")
    num_cross_attention_heads: int = Field(gt=0, description="Heads of the softmax cross-attention to the text.")
    caption_channels: int = Field(2304, gt=0, description="Width of the text encoder's hidden states (Gemma-2-2B).")
    mlp_ratio: float = Field(2.5, gt=0, description="Mix-FFN hidden width = int(hidden_size * mlp_ratio).")
    norm_eps: float = Field(1e-6, gt=0, description="eps of the affine-free LayerNorms.")
    linear_attention_eps: float = Field(
        1e-8, gt=0, description="eps of the linear-attention normaliser (Sana blocks: 1e-8; diffusers: 1e-15)."
    )
    qk_norm: bool = Field(False, description="RMSNorm over C on self-attention q and k (SANA-1.5).")
    cross_norm: bool = Field(False, description="RMSNorm over C on cross-attention q and k (SANA-1.5).")
    caption_norm_init: float = Field(0.01, gt=0, description="Initial weight of the caption RMSNorm.")
    sample_size: int = Field(32, gt=0, description="Latent side the model was trained at (sets the PE base).")
    use_pe: bool = Field(False, description="Add a sin-cos positional embedding (2K/4K and video configs).")
    pe_interpolation: float = Field(1.0, gt=0, description="Positions are divided by this (4K: 2.0).")
    video: bool = Field(False, description="Latents are [B,C,T,H,W]; attention and Mix-FFN span time too.")
    max_timestep: float = Field(1000.0, gt=0, description="Timesteps are flow time t in [0,1] times this.")
    flow_shift: float = Field(3.0, gt=0, description="Recommended timestep shift for sampling this model.")
    text_max_length: int = Field(300, gt=0, description="Text tokens used in training (a default, not a limit).")

    @model_validator(mode="after")
    def _check(self) -> LinearDiTConfig:
        c = self.hidden_size
        if c % self.attention_head_dim:
            raise ConfigError(f"hidden_size {c} is not a multiple of attention_head_dim {self.attention_head_dim}")
        if c % self.num_cross_attention_heads:
            raise ConfigError(
                f"hidden_size {c} is not a multiple of num_cross_attention_heads {self.num_cross_attention_heads}"
            )
        if self.out_channels is not None and self.out_channels <= 0:
            raise ConfigError(f"out_channels must be positive, got {self.out_channels}")
        if self.use_pe and c % (6 if self.video else 4):
            need = "6 (video: t, h and w each take a sin/cos pair)" if self.video else "4 (h and w sin/cos)"
            raise ConfigError(f"use_pe needs hidden_size divisible by {need}, got {c}")
        if self.sample_size % self.patch_size:
            raise ConfigError(f"sample_size {self.sample_size} is not a multiple of patch_size {self.patch_size}")
        return self

    @property
    def num_attention_heads(self) -> int:
        """Heads of the linear self-attention."""
        return self.hidden_size // self.attention_head_dim

    @property
    def cross_attention_head_dim(self) -> int:
        return self.hidden_size // self.num_cross_attention_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def output_channels(self) -> int:
        return self.out_channels if self.out_channels is not None else self.in_channels

    @property
    def base_size(self) -> int:
        """Token grid side at training resolution: positions are measured against it."""
        return self.sample_size // self.patch_size

    @classmethod
    def from_name(cls, name: str) -> LinearDiTConfig:
        """A named preset; an unknown name lists the known ones."""
        if name not in _PRESETS:
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(_PRESETS)}")
        return cls.model_validate({**_PRESETS[name], "name": name})


def preset_names() -> list[str]:
    """Names accepted by :meth:`LinearDiTConfig.from_name`."""
    return list(_PRESETS)


# Widths, depths and cross-attention heads of the released SanaMS registry (sana_multi_scale.py);
# sample_size is image side / 32 (DC-AE f32c32 latents).
_SANA_600M: dict[str, object] = {"hidden_size": 1152, "depth": 28, "num_cross_attention_heads": 16}
_SANA_1600M: dict[str, object] = {"hidden_size": 2240, "depth": 20, "num_cross_attention_heads": 20}
# 2K and 4K models add a sin-cos PE; 4K stretches it by 2 and samples with a larger shift.
_RES: dict[str, dict[str, object]] = {
    "512px": {"sample_size": 16},
    "1024px": {"sample_size": 32},
    "2k": {"sample_size": 64, "use_pe": True, "pe_interpolation": 1.0},
    "4k": {"sample_size": 128, "use_pe": True, "pe_interpolation": 2.0, "flow_shift": 6.0},
}
_SANA_15: dict[str, object] = {"qk_norm": True, "cross_norm": True}
_TINY: dict[str, object] = {
    "in_channels": 4,
    "hidden_size": 64,
    "depth": 2,
    "attention_head_dim": 16,
    "num_cross_attention_heads": 2,
    "caption_channels": 24,
    "sample_size": 8,
    "text_max_length": 8,
}

_PRESETS: dict[str, dict[str, object]] = {
    **{f"sana-0.6b-{r}": {**_SANA_600M, **v} for r, v in _RES.items()},
    **{f"sana-1.6b-{r}": {**_SANA_1600M, **v} for r, v in _RES.items()},
    "sana-1.5-1.6b-1024px": {**_SANA_1600M, **_SANA_15, **_RES["1024px"]},
    "sana-1.5-4.8b-1024px": {**_SANA_1600M, **_SANA_15, **_RES["1024px"], "depth": 60},
    # A small spatio-temporal model on DC-AE-V style latents (32 channels, 8 latent frames).
    "linear-dit-video-small": {
        "hidden_size": 768,
        "depth": 12,
        "num_cross_attention_heads": 12,
        "sample_size": 16,
        "use_pe": True,
        "video": True,
    },
    "tiny": _TINY,
    "tiny-1.5": {**_TINY, **_SANA_15},
    "tiny-pe": {**_TINY, "use_pe": True},
    "tiny-patch2": {**_TINY, "patch_size": 2},
    "tiny-video": {**_TINY, "hidden_size": 48, "num_cross_attention_heads": 2, "use_pe": True, "video": True},
}
