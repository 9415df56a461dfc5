"""Synthetic SpAtten workloads for BERT-base/large and GPT-2 small/medium, with the paper's kinds of pruning.

SpAtten (arXiv:2012.09852), Sec. 3 (cascade token pruning, cascade head pruning, local value pruning, progressive
quantization) and Sec. 5.1 (benchmarks: BERT on GLUE/SQuAD, GPT-2 on language modelling). These generators stand
in for the paper's 30 benchmarks, whose per-benchmark pruning schedules we could not read. Sources of each setting,
with hw.md's tags:

- [F] from the reference repo's workload file `summary-gpt2-medium-wikitext2-...+topk+quant.csv` (GPT-2-medium,
  WikiText-2): token top-k after layers 1, 2, 4 and 10 leaving 0.91, 0.81, 0.61 and 0.30 of the context; V rows
  fetched = 0.30 of the keys fetched (local value pruning); heads left 13/16 from layer 16 and 10/16 in layers
  22-23 (cascade head pruning); value bits 8; query bits 16; decode contexts start at 993 tokens.
- [F] hw.md Sec. 2.2: progressive quantization with 6 MSB key bits, 4 LSB bits on requant, threshold 0.05.
- [F] spatten_llm (hw.md Sec. 2.2): KV cache of start 4 + important 128 + recent 128 entries (optional here).
- [I] ours: the schedules for the other three models are the GPT-2-medium schedule mapped by relative depth; the
  fraction of heads that requantize (10%) is an assumption (the repo's file has no requant); BERT runs at 384 tokens
  and its pruned tokens also stop issuing queries; GPT-2 generates 32 tokens after a 992-token prompt.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from accel_sims.errors import AccelSimsError
from accel_sims.spatten.workload import HeadRecord, Workload


class ModelShape(BaseModel):
    """Attention shape of a transformer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    generative: bool = Field(description="Decoder-only (generation mode with a KV cache) vs encoder.")


MODELS: dict[str, ModelShape] = {
    "bert-base": ModelShape(layers=12, heads=12, head_dim=64, generative=False),
    "bert-large": ModelShape(layers=24, heads=16, head_dim=64, generative=False),
    "gpt2-small": ModelShape(layers=12, heads=12, head_dim=64, generative=True),
    "gpt2-medium": ModelShape(layers=24, heads=16, head_dim=64, generative=True),
}

# GPT-2-medium reference schedule [F]: (first layer index it applies to, fraction of a 24-layer model) -> keep.
_REF_LAYERS = 24
_REF_TOKEN_STEPS = ((2, 0.91), (3, 0.81), (5, 0.61), (11, 0.30))
_REF_HEAD_STEPS = ((16, 13 / 16), (22, 10 / 16))


def _schedule(layers: int, steps: tuple[tuple[int, float], ...]) -> tuple[float, ...]:
    """Map a 24-layer step schedule to `layers` layers by relative depth: the keep in force at each layer."""
    out = []
    for layer in range(layers):
        keep = 1.0
        for start, value in steps:
            if layer >= math.ceil(start * layers / _REF_LAYERS):
                keep = value
        out.append(keep)
    return tuple(out)


class BenchmarkSettings(BaseModel):
    """SpAtten's pruning and quantization settings for a generated workload (see the module docstring for sources)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_keep: tuple[float, ...] | None = Field(
        default=None, description="Per-layer fraction of the context kept (cumulative); None: reference schedule."
    )
    head_keep: tuple[float, ...] | None = Field(
        default=None, description="Per-layer fraction of heads kept (cumulative); None: reference schedule."
    )
    value_keep: float = Field(default=0.30, gt=0.0, le=1.0, description="V rows fetched / keys fetched [F].")
    key_bits: int = Field(default=6, ge=1, le=16, description="MSB key bits of the first fetch [F].")
    requant_extra_bits: int = Field(default=4, ge=0, le=16, description="LSB bits of the refetch [F].")
    requant_threshold: float = Field(default=0.05, ge=0.0, le=1.0, description="[F]")
    requant_fraction: float = Field(default=0.10, ge=0.0, le=1.0, description="Heads that requantize [I].")
    value_bits: int = Field(default=8, ge=1, le=16, description="[F]")
    query_bits: int = Field(default=16, ge=1, le=16, description="[F]")
    kv_budget: tuple[int, int, int] | None = Field(
        default=None, description="GPT-2 only: (start, important, recent) KV entries kept, as spatten_llm [F]."
    )

    @model_validator(mode="after")
    def _check(self) -> BenchmarkSettings:
        for name in ("token_keep", "head_keep"):
            values = getattr(self, name)
            if values is not None:
                bad = [(i, v) for i, v in enumerate(values) if not 0.0 < v <= 1.0]
                if bad:
                    raise ValueError(f"{name}[{bad[0][0]}] = {bad[0][1]} is outside (0, 1]")
        if self.kv_budget is not None and (min(self.kv_budget) < 0 or sum(self.kv_budget) < 1):
            raise ValueError(f"kv_budget entries must be >= 0 with a positive sum, got {self.kv_budget}")
        return self


def benchmark_names() -> tuple[str, ...]:
    return tuple(MODELS)


def _per_layer(
    values: tuple[float, ...] | None, steps: tuple[tuple[int, float], ...], layers: int, name: str
) -> tuple[float, ...]:  # noqa: E501
    if values is None:
        return _schedule(layers, steps)
    if len(values) != layers:
        raise AccelSimsError(f"settings.{name} has {len(values)} entries, the model has {layers} layers")
    return values


def make_workload(
    name: str,
    settings: BenchmarkSettings | None = None,
    *,
    seq_len: int = 384,
    prompt_len: int = 992,
    generated_tokens: int = 32,
) -> Workload:
    """Head records of one SpAtten run of model `name` (see `benchmark_names()`).

    Encoders (BERT): one pass over `seq_len` tokens. Generative models (GPT-2): `generated_tokens` decode steps
    (iteration i has a context of prompt_len + i + 1 tokens and one query); the prompt pass is not included.
    """
    if name not in MODELS:
        raise AccelSimsError(f"unknown benchmark {name!r}; expected one of {list(MODELS)}")
    if seq_len < 1 or prompt_len < 1 or generated_tokens < 1:
        raise AccelSimsError(
            f"seq_len ({seq_len}), prompt_len ({prompt_len}) and generated_tokens ({generated_tokens}) must be >= 1"
        )
    s = settings if settings is not None else BenchmarkSettings()
    shape = MODELS[name]
    token_keep = _per_layer(s.token_keep, _REF_TOKEN_STEPS, shape.layers, "token_keep")
    head_keep = _per_layer(s.head_keep, _REF_HEAD_STEPS, shape.layers, "head_keep")
    for i in range(1, shape.layers):
        if token_keep[i] > token_keep[i - 1] or head_keep[i] > head_keep[i - 1]:
            raise AccelSimsError(f"settings: keep ratios must not grow with depth (cascade), layer {i}")

    contexts = [seq_len] if not shape.generative else [prompt_len + i + 1 for i in range(generated_tokens)]
    records: list[HeadRecord] = []
    counter = 0
    for it, ctx in enumerate(contexts):
        kept = [max(1, round(ctx * k)) for k in token_keep]
        if shape.generative and s.kv_budget is not None:
            start, important, recent = s.kv_budget
            budget = min(ctx, start + important + recent)
            kept = [budget] * shape.layers
        for layer in range(shape.layers):
            heads = max(1, round(shape.heads * head_keep[layer]))
            keys = kept[layer]
            values = max(1, round(keys * s.value_keep))
            if shape.generative and s.kv_budget is not None:
                # Each step the cache evicts by a top-k of `important` over the middle region (run on the fetched
                # keys here: the record carries no separate candidate count).
                important = s.kv_budget[1]
                has_topk = ctx > keys and 0 < important < keys
                k_next = important
            else:
                has_topk = layer + 1 < shape.layers and kept[layer + 1] < keys
                k_next = kept[layer + 1] if has_topk else 0
            for h in range(heads):
                requant = math.floor((counter + 1) * s.requant_fraction) > math.floor(counter * s.requant_fraction)
                counter += 1
                last = h == heads - 1
                records.append(
                    HeadRecord(
                        iteration_id=it, layer_id=layer, head_id=h, head_dim=shape.head_dim, seq_len=ctx,
                        num_queries=1 if shape.generative else keys, key_fetch_num=keys, key_bits=s.key_bits,
                        query_bits=s.query_bits, requant_threshold=s.requant_threshold,
                        requant=requant and s.requant_extra_bits > 0, requant_extra_bits=s.requant_extra_bits,
                        value_fetch_num=min(values, keys), value_bits=s.value_bits, accumulate_importance=True,
                        topk=bool(has_topk and last), topk_k=k_next if has_topk and last else 0,
                    )
                )  # fmt: skip
    return Workload(model=name, records=tuple(records))
