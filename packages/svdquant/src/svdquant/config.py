"""Configuration of a whole-model SVDQuant run: format, rank, smoothing search, which layers and how.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 4.2 (smoothing and low-rank branch) and Sec. 5.1 (settings: rank 32, INT4 in groups of 64, NVFP4 in groups
of 16; embedders and the final layer kept in 16 bits, adaLN modulation at W4A16, post-GELU inputs unsigned).

:class:`SVDQuantConfig` holds the defaults of every layer plus name filters (``fnmatch`` patterns matched against
the module names of ``model.named_modules()``, case-sensitive) and per-module overrides;
:meth:`SVDQuantConfig.layer` resolves the :class:`LayerSettings` of one module.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from svdquant.errors import ConfigError

__all__ = ["LayerSettings", "SVDQuantConfig"]

_DEFAULT_GROUP = {"int4": 64, "nvfp4": 16}
# Fields an override may set for the modules it matches (the filters and calibration budget are global).
_OVERRIDABLE = frozenset(
    {"fmt", "group_size", "rank", "lowrank_iters", "svd", "smoothing", "num_grids", "skip", "w4a16", "act_unsigned"}
)


class LayerSettings(BaseModel):
    """The resolved settings of one module (what :meth:`SVDQuantConfig.layer` returns)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fmt: Literal["int4", "nvfp4"]
    group_size: int = Field(gt=0, description="Elements per scale along in_features.")
    rank: int = Field(ge=1, description="Rank of the 16-bit low-rank branch.")
    lowrank_iters: int = Field(ge=0, description="Refinement rounds L <- SVD_r(W - Q(W - L)) (early stopping).")
    svd: Literal["exact", "randomized"]
    smoothing: bool = Field(description="Search the smoothing (alpha, beta) when calibration inputs exist.")
    num_grids: int = Field(ge=1, description="Grid resolution of the (alpha, beta) search.")
    skip: bool = Field(description="Keep the module in 16 bits.")
    w4a16: bool = Field(description="4-bit weights, 16-bit activations (modulation layers).")
    act_unsigned: bool = Field(description="Shift the input to be non-negative and quantize it unsigned (INT4).")


class SVDQuantConfig(BaseModel):
    """Settings of :func:`svdquant.quantize_`; frozen, unknown fields are errors.

    ``overrides`` maps a module name or ``fnmatch`` pattern to a partial dict of :class:`LayerSettings` fields
    (``fmt``, ``group_size``, ``rank``, ``lowrank_iters``, ``svd``, ``smoothing``, ``num_grids``, ``skip``,
    ``w4a16``, ``act_unsigned``); later entries win over earlier ones, and explicit overrides win over the
    pattern filters. Each override is validated when the config is built.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fmt: Literal["int4", "nvfp4"] = Field("int4", description="4-bit format: INT4 (groups of 64) or NVFP4 (16).")
    group_size: int | None = Field(
        None, description="Elements per scale along in_features; None: 64 for INT4, 16 for NVFP4 (NVFP4 needs 16)."
    )
    rank: int = Field(32, description="Rank of the 16-bit low-rank branch.")
    lowrank_iters: int = Field(100, description="Maximum refinement rounds of the low-rank branch (early stopping).")
    svd: Literal["exact", "randomized"] = Field(
        "exact", description="Full float64 SVD, or a randomized range finder (torch.svd_lowrank), much faster."
    )
    smoothing: bool = Field(True, description="Search the SVD-aware smoothing (alpha, beta) per layer.")
    num_grids: int = Field(20, description="Grid resolution of the smoothing search (2 * num_grids - 1 candidates).")
    skip: tuple[str, ...] = Field(
        ("*embed*", "*embedder*", "*final_layer*", "*proj_out*", "*norm_out*", "*lm_head*"),
        description="Patterns of modules kept in 16 bits (embedders, final layers).",
    )
    w4a16: tuple[str, ...] = Field(
        ("*t_block*", "*adaLN*", "*adaln*", "*norm.linear*", "*norm1.linear*", "*norm1_context.linear*"),
        description="Patterns of modules quantized weight-only (adaLN modulation).",
    )
    unsigned_act: tuple[str, ...] = Field(
        ("*fc2", "*ff.net.2", "*mlp.fc2"),
        description="Patterns of modules whose input follows a GELU: shifted and quantized unsigned (INT4 only; "
        "ignored for NVFP4, which has no unsigned variant).",
    )
    overrides: tuple[tuple[str, dict[str, Any]], ...] = Field(
        (), description="(module name or pattern, partial LayerSettings) pairs; a mapping is accepted too."
    )
    max_calibration_tokens: int = Field(
        4096, description="Input rows kept per layer (uniform subsample over all calibration batches)."
    )
    seed: int = Field(0, description="Seed of the token subsampling and the randomized SVD.")
    calibration_mode: Literal["whole", "blocks"] = Field(
        "whole",
        description="'whole': one pass of the float model with hooks on every targeted layer. 'blocks': cache "
        "the inputs of the first block of `blocks`, then calibrate, quantize and run one block at a time, so only "
        "one block's inputs are held and each block is calibrated on the output of the quantized blocks before it.",
    )
    blocks: str | None = Field(
        None,
        description="Name of the nn.ModuleList of repeated blocks streamed in 'blocks' mode; None picks the "
        "ModuleList holding the most targeted layers.",
    )
    offload_block_inputs: bool = Field(
        True, description="In 'blocks' mode, keep the cached block inputs on the CPU between block runs."
    )
    share_inputs: bool = Field(
        True,
        description="Give sibling layers (children of one module) that read the very same input tensor in every "
        "calibration call (q/k/v) one smoothing and one low-rank down-projection, computed once per input.",
    )
    shared_groups: tuple[tuple[str, ...], ...] = Field(
        (),
        description="Explicit groups of module names sharing one input (each overrides detection for its "
        "members); honoured without calibration data too.",
    )
    allowed_linear_subclasses: tuple[str, ...] = Field(
        ("linear_dit.linear_attention.FusedQKV",),
        description="Qualified class names of nn.Linear subclasses with their own forward that may be replaced; "
        "the replacement returns the plain product x W^T + b. Any other such subclass is an error unless skipped.",
    )

    @field_validator("overrides", mode="before")
    @classmethod
    def _overrides_from_mapping(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return tuple((str(k), dict(d)) for k, d in v.items())
        return v

    @model_validator(mode="after")
    def _check(self) -> SVDQuantConfig:
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, found {self.rank}")
        if self.group_size is not None and self.group_size <= 0:
            raise ValueError(f"group_size must be a positive integer or None, found {self.group_size}")
        if self.fmt == "nvfp4" and self.group_size not in (None, 16):
            raise ValueError(
                f"NVFP4 uses one E4M3 scale per 16 elements: group_size must be 16, found {self.group_size}"
            )
        if self.lowrank_iters < 0:
            raise ValueError(f"lowrank_iters must be >= 0, found {self.lowrank_iters}")
        if self.num_grids < 1:
            raise ValueError(f"num_grids must be >= 1, found {self.num_grids}")
        if self.max_calibration_tokens < 1:
            raise ValueError(f"max_calibration_tokens must be >= 1, found {self.max_calibration_tokens}")
        if self.blocks is not None and not self.blocks.strip():
            raise ValueError("blocks must be a module name or None, found an empty string")
        seen: set[str] = set()
        for group in self.shared_groups:
            if len(group) < 2 or len(set(group)) != len(group):
                raise ValueError(f"each shared group needs at least two distinct module names, found {group!r}")
            again = sorted(seen & set(group))
            if again:
                raise ValueError(f"module(s) {again} appear in more than one shared group")
            seen |= set(group)
        for pattern, update in self.overrides:
            unknown = sorted(set(update) - _OVERRIDABLE)
            if unknown:
                raise ValueError(
                    f"override {pattern!r}: unknown field(s) {unknown}; overridable fields are {sorted(_OVERRIDABLE)}"
                )
        # Resolving one name per override validates each override's values against the base settings.
        for pattern, _ in self.overrides:
            self.layer(pattern)
        return self

    def __init__(self, **data: Any) -> None:
        # Re-raise pydantic's error as the package's ConfigError (still a ValueError), keeping its message.
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(f"invalid SVDQuantConfig: {e}") from e

    @property
    def resolved_group_size(self) -> int:
        return _DEFAULT_GROUP[self.fmt] if self.group_size is None else self.group_size

    def layer(self, name: str) -> LayerSettings:
        """The settings of the module called ``name``: the defaults, then the filters, then the overrides."""
        values: dict[str, Any] = {
            "fmt": self.fmt,
            "group_size": self.group_size,
            "rank": self.rank,
            "lowrank_iters": self.lowrank_iters,
            "svd": self.svd,
            "smoothing": self.smoothing,
            "num_grids": self.num_grids,
            "skip": any(fnmatchcase(name, p) for p in self.skip),
            "w4a16": any(fnmatchcase(name, p) for p in self.w4a16),
            "act_unsigned": any(fnmatchcase(name, p) for p in self.unsigned_act),
        }
        explicit_unsigned = False
        for pattern, update in self.overrides:
            if name == pattern or fnmatchcase(name, pattern):
                values.update(update)
                explicit_unsigned = explicit_unsigned or "act_unsigned" in update
        if values["fmt"] == "nvfp4":
            if values["act_unsigned"] and explicit_unsigned:
                raise ConfigError(f"module {name!r}: act_unsigned exists for INT4 only, found fmt='nvfp4'")
            values["act_unsigned"] = False
            if values["group_size"] not in (None, 16):
                raise ConfigError(f"module {name!r}: NVFP4 needs group_size 16, found {values['group_size']}")
        if values["group_size"] is None:
            values["group_size"] = _DEFAULT_GROUP[values["fmt"]]
        if values["w4a16"]:
            values["act_unsigned"] = False  # weight-only layers keep their input in 16 bits
        try:
            return LayerSettings(**values)
        except ValidationError as e:
            raise ConfigError(f"module {name!r}: invalid settings after overrides: {e}") from e
