"""Transformer workloads of the DOTA evaluation: the matrix products of one encoder layer, times depth.

DOTA / Lightening-Transformer (arXiv:2305.19533), Sec. 5: DeiT-T/S/B at 197 tokens (ImageNet 224x224 with 16x16
patches + class token), BERT-base at 384 and BERT-large at 320 tokens (the reference simulator's
`params/models/*.yaml` and scripts; hw.md 4.3). Model dimensions are the published ones (DeiT: Touvron et al. 2021;
BERT: Devlin et al. 2019).

A product is `[h, N1, D] x [h, D, N2]`: operand 1 (N1 rows) feeds the core's height side, operand 2 (N2 columns) its
width side. Linear layers: tokens x in_features times in_features x out_features (h = 1; operand 2 is the static
weight, fetched from DRAM). Attention: per head, Q K^T (N1 = N2 = tokens, D = head_dim) and P V (D = tokens, N2 =
head_dim), both operands dynamic. Embeddings and the classifier are left out (DeiT's patch embedding is 0.7% of
its MACs, the classifier under 0.01%).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from accel_sims.dota.params import Frozen
from accel_sims.errors import AccelSimsError

MatmulKind = Literal["qkv", "qk", "pv", "proj", "ffn1", "ffn2"]


class Matmul(Frozen):
    """One matrix product `[heads, n1, d] x [heads, d, n2]`, run `count` times per model (once per layer)."""

    name: str
    kind: MatmulKind
    heads: int = Field(ge=1)
    n1: int = Field(ge=1, description="Rows of operand 1 (height side of the core).")
    d: int = Field(ge=1, description="Contraction length.")
    n2: int = Field(ge=1, description="Columns of operand 2 (width side of the core).")
    count: int = Field(1, ge=1, description="How many times the model runs it (its depth).")
    static_operand2: bool = Field(description="Operand 2 is a weight read from DRAM (linear layers).")

    @property
    def macs(self) -> int:
        """Multiply-accumulates of all `count` runs."""
        return self.count * self.heads * self.n1 * self.d * self.n2


class TransformerSpec(Frozen):
    """An encoder: depth, width, heads, MLP ratio and sequence length."""

    name: str = Field(description="Workload name, for reports.")
    depth: int = Field(gt=0, description="Encoder layers.")
    embed_dim: int = Field(gt=0, description="Hidden size.")
    num_heads: int = Field(gt=0, description="Attention heads.")
    mlp_ratio: float = Field(4.0, gt=0, description="FFN hidden size / embed_dim.")
    tokens: int = Field(gt=0, description="Sequence length.")

    @model_validator(mode="after")
    def _check(self) -> TransformerSpec:
        if self.embed_dim % self.num_heads:
            raise AccelSimsError(
                f"TransformerSpec.embed_dim: {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if (self.embed_dim * self.mlp_ratio) % 1:
            raise AccelSimsError(
                f"TransformerSpec.mlp_ratio: embed_dim x mlp_ratio = {self.embed_dim * self.mlp_ratio} is not integral"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @classmethod
    def from_name(cls, name: str, tokens: int | None = None) -> TransformerSpec:
        """A preset (`workload_names()`), optionally at another sequence length."""
        if name not in _PRESETS:
            raise AccelSimsError(f"workload: unknown name {name!r}; expected one of {sorted(_PRESETS)}")
        fields: dict[str, object] = {"name": name, **_PRESETS[name]}
        if tokens is not None:
            fields["tokens"] = tokens
        return cls(**fields)


# depth, embed, heads, mlp ratio, tokens (hw.md 4.3: deit_tiny.yaml depth 12, embed 192, heads 3, mlp_ratio 4)
_PRESETS: dict[str, dict[str, object]] = {
    "deit-t": {"depth": 12, "embed_dim": 192, "num_heads": 3, "mlp_ratio": 4.0, "tokens": 197},
    "deit-s": {"depth": 12, "embed_dim": 384, "num_heads": 6, "mlp_ratio": 4.0, "tokens": 197},
    "deit-b": {"depth": 12, "embed_dim": 768, "num_heads": 12, "mlp_ratio": 4.0, "tokens": 197},
    "bert-b": {"depth": 12, "embed_dim": 768, "num_heads": 12, "mlp_ratio": 4.0, "tokens": 384},
    "bert-l": {"depth": 24, "embed_dim": 1024, "num_heads": 16, "mlp_ratio": 4.0, "tokens": 320},
    # For tests: small enough to count by hand.
    "tiny": {"depth": 1, "embed_dim": 24, "num_heads": 2, "mlp_ratio": 2.0, "tokens": 12},
}


def workload_names() -> tuple[str, ...]:
    """Names accepted by `TransformerSpec.from_name` (the paper's five plus 'tiny')."""
    return tuple(_PRESETS)


def matmuls(spec: TransformerSpec) -> list[Matmul]:
    """The six products of one encoder layer, each with `count = depth`."""
    n, e, h, hd = spec.tokens, spec.embed_dim, spec.num_heads, spec.head_dim
    f = int(e * spec.mlp_ratio)
    c = spec.depth
    return [
        Matmul(name="qkv", kind="qkv", heads=1, n1=n, d=e, n2=3 * e, count=c, static_operand2=True),
        Matmul(name="q@k^T", kind="qk", heads=h, n1=n, d=hd, n2=n, count=c, static_operand2=False),
        Matmul(name="p@v", kind="pv", heads=h, n1=n, d=n, n2=hd, count=c, static_operand2=False),
        Matmul(name="proj", kind="proj", heads=1, n1=n, d=e, n2=e, count=c, static_operand2=True),
        Matmul(name="ffn1", kind="ffn1", heads=1, n1=n, d=e, n2=f, count=c, static_operand2=True),
        Matmul(name="ffn2", kind="ffn2", heads=1, n1=n, d=f, n2=e, count=c, static_operand2=True),
    ]
