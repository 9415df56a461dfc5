"""The SpAtten algorithm configuration: cascade token/head keep ratios, local value pruning, progressive quantization.

SpAtten (Wang, Zhang, Han; HPCA 2021, arXiv:2012.09852), Sec. 3. Named `PruningConfig` so it does not clash with the
simulator's hardware `SpAttenConfig`. Keep ratios are fractions of the *original* tokens / heads a layer still works
on; the cascade means they can only shrink from one layer to the next. A layer that has no accumulated importance yet
(layer 0 of an encoder) has nothing to rank by and computes every token and head whatever its ratio.

Defaults follow the reference design's workload files (`hardware/workloads/summary-*.csv` of mit-han-lab/spatten):
12-bit keys, 16-bit queries, 8-bit values without quantization; MSB-first 6-bit keys, +4 LSB bits on refetch,
threshold 0.05 with it. The KV-cache split (start 4) is `spatten_llm/kv_cache_token_pruning.py`'s.
"""

from __future__ import annotations

import math
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from accel_sims.errors import AccelSimsError

Ratios = tuple[float, ...]


def _check_ratios(name: str, ratios: Ratios) -> None:
    if not ratios:
        raise ValueError(f"{name}: expected at least one keep ratio")
    for i, r in enumerate(ratios):
        if not (0.0 < r <= 1.0) or math.isnan(r):
            raise ValueError(f"{name}[{i}] (layer {i}) = {r}: a keep ratio must be in (0, 1]")
    for i in range(1, len(ratios)):
        if ratios[i] > ratios[i - 1]:
            raise ValueError(
                f"{name}[{i}] (layer {i}) = {ratios[i]} > layer {i - 1}'s {ratios[i - 1]}: the cascade never brings "
                "pruned tokens or heads back, so keep ratios cannot grow with depth"
            )


class PruningConfig(BaseModel):
    """What SpAtten prunes and quantizes. Per-layer tuples have one entry per layer, or one entry for all layers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_keep_ratios: Ratios = Field(
        default=(1.0,),
        description="Per layer: fraction of the original tokens the layer works on (encoder: queries, keys and values; "
        "decoder: the KV cache budget of that layer, at least start_size + recent_size).",
    )
    head_keep_ratios: Ratios = Field(
        default=(1.0,), description="Per layer: fraction of the heads computed (cascade head pruning)."
    )
    value_keep_ratio: float = Field(
        default=1.0, description="Local value pruning: fraction of each query's keys whose V rows are fetched."
    )
    quantize: bool = Field(default=False, description="Progressive quantization of keys and values on or off.")
    key_bits: int = Field(default=12, ge=2, le=16, description="Key bits without progressive quantization.")
    query_bits: int = Field(default=16, ge=2, le=32, description="Query bits (queries are not pruned or requantized).")
    value_bits: int = Field(default=8, ge=2, le=16, description="Value bits without progressive quantization.")
    key_msb_bits: int = Field(default=6, ge=2, le=16, description="Bits of the first, MSB-only key fetch.")
    value_msb_bits: int = Field(default=8, ge=2, le=16, description="Bits of the first, MSB-only value fetch.")
    requant_extra_bits: int = Field(default=4, ge=1, le=16, description="LSB bits refetched on a requantization.")
    requant_threshold: float = Field(
        default=0.05, description="Refetch LSBs and recompute when a query's max probability is below this."
    )
    start_size: int = Field(default=4, ge=0, description="Decoder KV cache: first tokens never pruned.")
    recent_size: int = Field(default=128, ge=0, description="Decoder KV cache: most recent tokens never pruned.")
    important_size: int | None = Field(
        default=None,
        ge=0,
        description="Decoder KV cache: tokens kept by accumulated importance between start and recent; None derives "
        "it from token_keep_ratios.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_ratios("token_keep_ratios", self.token_keep_ratios)
        _check_ratios("head_keep_ratios", self.head_keep_ratios)
        if not (0.0 < self.value_keep_ratio <= 1.0):
            raise ValueError(f"value_keep_ratio = {self.value_keep_ratio}: a keep ratio must be in (0, 1]")
        if not (0.0 <= self.requant_threshold <= 1.0):
            raise ValueError(f"requant_threshold = {self.requant_threshold}: a probability threshold is in [0, 1]")
        return self

    @classmethod
    def create(cls, **fields: Any) -> PruningConfig:
        """Validate `fields`; a bad value is an AccelSimsError naming the field (pydantic's error re-raised)."""
        try:
            return cls.model_validate(fields)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(map(str, err["loc"])) or "PruningConfig"
            raise AccelSimsError(f"PruningConfig.{field}: {err['msg']}") from None

    @classmethod
    def from_name(cls, name: str, num_layers: int) -> PruningConfig:
        """Presets: `dense` (nothing pruned), `spatten` (cascade to 0.5 tokens and 0.75 heads, value keep 0.5,
        progressive quantization) and `tokens-<r>` (cascade token pruning only, ending at keep ratio r)."""
        if name == "dense":
            return cls()
        if name == "spatten":
            return cls.create(
                token_keep_ratios=cascade_schedule(num_layers, 0.5),
                head_keep_ratios=cascade_schedule(num_layers, 0.75),
                value_keep_ratio=0.5,
                quantize=True,
            )
        if name.startswith("tokens-"):
            try:
                final = float(name.removeprefix("tokens-"))
            except ValueError:
                final = -1.0
            return cls.create(token_keep_ratios=cascade_schedule(num_layers, final))
        raise AccelSimsError(f"PruningConfig preset {name!r} unknown; expected 'dense', 'spatten' or 'tokens-<ratio>'")

    def per_layer(self, field: str, num_layers: int) -> Ratios:
        """The per-layer tuple `field` expanded to `num_layers` entries; a length mismatch names the field."""
        values: Ratios = getattr(self, field)
        if len(values) == 1:
            return values * num_layers
        if len(values) != num_layers:
            raise AccelSimsError(
                f"PruningConfig.{field} has {len(values)} entries but the model has {num_layers} layers "
                "(give one entry per layer, or one for all)"
            )
        return values


def cascade_schedule(num_layers: int, final_ratio: float, first_pruned_layer: int = 1) -> Ratios:
    """Keep ratios that stay 1.0 before `first_pruned_layer`, then shrink geometrically to `final_ratio` at the last
    layer: the cascade removes a similar share of the surviving tokens at every layer."""
    if num_layers < 1:
        raise AccelSimsError(f"cascade_schedule: num_layers = {num_layers}, expected >= 1")
    if not (0.0 < final_ratio <= 1.0):
        raise AccelSimsError(f"cascade_schedule: final_ratio = {final_ratio}, a keep ratio must be in (0, 1]")
    if not (1 <= first_pruned_layer):
        raise AccelSimsError(f"cascade_schedule: first_pruned_layer = {first_pruned_layer}, expected >= 1")
    steps = num_layers - first_pruned_layer
    out = []
    for i in range(num_layers):
        if i < first_pruned_layer:
            out.append(1.0)
        else:
            out.append(final_ratio ** ((i - first_pruned_layer + 1) / steps) if steps > 0 else final_ratio)
    return tuple(out)


def keep_count(ratio: float, total: int) -> int:
    """Items kept by `ratio` out of `total` (at least one of a non-empty set)."""
    return 0 if total <= 0 else max(1, min(total, math.ceil(ratio * total - 1e-9)))
