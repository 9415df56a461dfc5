"""Sampling parameters and per-request sampling (greedy, temperature, top-p) with reproducible seeds.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 5 (serving system; the API follows vLLM's ``SamplingParams``). The random draw for a request's ``i``-th
output token comes from a generator seeded with ``(seed, i)`` alone, so a request samples the same tokens whatever
batch it runs in, and after a preemption (recomputation) it continues exactly where it stopped.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["SamplingParams", "sample_next"]

_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, step) pairs over the seed space


class SamplingParams(BaseModel):
    """How one request is sampled and when it stops."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(0.0, ge=0.0, description="Softmax temperature; 0 means greedy (argmax).")
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p.",
    )
    max_tokens: int = Field(16, ge=1, description="The most tokens to generate.")
    stop: tuple[str, ...] = Field((), description="Stop strings; generation ends before the first one.")
    stop_token_ids: tuple[int, ...] = Field((), description="Token ids that end generation (kept in the output).")
    seed: int | None = Field(None, ge=0, description="Seed of this request's random draws; None draws one.")
    ignore_eos: bool = Field(False, description="Keep generating past the model's EOS token.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_tuple(cls, v: object) -> object:
        if isinstance(v, str):
            return (v,)
        return tuple(v) if isinstance(v, list) else v

    @field_validator("stop")
    @classmethod
    def _stop_nonempty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must be non-empty, found ''")
        return v

    @field_validator("stop_token_ids", mode="before")
    @classmethod
    def _ids_tuple(cls, v: object) -> object:
        return tuple(v) if isinstance(v, list) else v

    @field_validator("stop_token_ids")
    @classmethod
    def _ids_nonneg(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [i for i in v if i < 0]
        if bad:
            raise ValueError(f"stop_token_ids must be >= 0, found {bad}")
        return v


def _step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * _SEED_MIX + step) % (1 << 63))
    return g


def sample_next(logits: torch.Tensor, params: SamplingParams, seed: int, step: int) -> int:
    """Pick the next token from one row of ``logits`` ``[V]`` (any float dtype).

    ``step`` is the index of the token being generated (0 for the first output token); with ``seed`` it fixes
    the random draw, so the result does not depend on other requests.
    """
    logits = logits.float()
    if params.temperature == 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)  # [V]
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # Keep a token if the mass before it is below top_p (the top token is always kept).
        keep = (torch.cumsum(sorted_p, dim=-1) - sorted_p) < params.top_p
        sorted_p = torch.where(keep, sorted_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    # Inverse-CDF draw with one uniform number: the draw only depends on (seed, step) and the probabilities.
    u = torch.rand((), generator=_step_generator(seed, step, torch.device("cpu"))).item()
    cdf = torch.cumsum(probs.cpu().double(), dim=-1)
    idx = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64), right=True).item())
    return min(idx, probs.shape[0] - 1)
