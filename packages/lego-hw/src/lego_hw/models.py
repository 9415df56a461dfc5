"""Layer lists of the evaluation models as workloads: ResNet-50 and a BERT-base-like transformer block.

These are the GEMM and conv layers the LEGO paper's Gemmini comparison runs (Sec. VI; arXiv:2509.12053).
A layer is `(name, workload, count)`; identical layers of repeated blocks appear once with their count.
Convolutions with padding are written on the padded input (the workload reads `I[.., stride*y + r, ..]`
with no bounds check), so their MACs equal the framework's. Pooling, normalisation, softmax and
element-wise ops are not spatial-array work and are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from lego_hw.errors import LegoError
from lego_hw.workload import Workload, attention_pv, attention_qk, conv2d, gemm


@dataclass(frozen=True)
class Layer:
    """One layer: a name, its workload and how many identical copies the model has."""

    name: str
    workload: Workload
    count: int = 1

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as `name, workload, count`."""
        return iter((self.name, self.workload, self.count))


def _ident(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")


def _conv(name: str, k: int, c: int, out: int, r: int, stride: int, batch: int) -> Layer:
    return Layer(name, conv2d(k, c, out, out, r, r, stride=stride, batch=batch, name=_ident(name)), 1)


def resnet50(batch: int = 1, image: int = 224) -> list[Layer]:
    """Every conv of torchvision's ResNet-50 (v1.5: stride on the 3x3) plus the fc, at `image` x `image`.

    Downsample 1x1 convs are included. 53 convs + 1 fc = 54 layers before grouping repeated blocks.
    """
    if image % 32 != 0:
        raise LegoError(f"ResNet-50 needs an image size divisible by 32, got {image}")
    layers = [_conv("conv1", 64, 3, image // 2, 7, 2, batch)]
    size = image // 4  # after the stride-2 stem conv and the stride-2 max-pool
    c_in = 64
    for stage, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1):
        c_out = 4 * width
        out = size // stride
        first = f"layer{stage}.0"
        layers += [
            _conv(f"{first}.conv1", width, c_in, size, 1, 1, batch),
            _conv(f"{first}.conv2", width, width, out, 3, stride, batch),
            _conv(f"{first}.conv3", c_out, width, out, 1, 1, batch),
            _conv(f"{first}.downsample", c_out, c_in, out, 1, stride, batch),
        ]
        rest = f"layer{stage}.1-{blocks - 1}"
        for conv, (k, c, r) in (
            ("conv1", (width, c_out, 1)),
            ("conv2", (width, width, 3)),
            ("conv3", (c_out, width, 1)),
        ):
            lay = _conv(f"{rest}.{conv}", k, c, out, r, 1, batch)
            layers.append(replace(lay, count=blocks - 1))
        size, c_in = out, c_out
    layers.append(Layer("fc", gemm(batch, 1000, 2048, name="fc"), 1))
    return layers


def transformer_block(
    seq: int = 512, d_model: int = 768, heads: int = 12, d_ff: int = 3072, batch: int = 1
) -> list[Layer]:
    """The GEMMs of one BERT-base-like encoder block (defaults: d = 768, 12 heads, FFN 3072, seq 512).

    Linear layers are `gemm(M = tokens, N = out features, K = in features)` (B holds the weights);
    attention is QK^T and PV per head (the batch folds into the head loop).
    """
    if d_model % heads != 0:
        raise LegoError(f"d_model {d_model} is not divisible by {heads} heads; pick a multiple")
    tokens, hd, bh = batch * seq, d_model // heads, batch * heads
    return [
        Layer("qkv_proj", gemm(tokens, d_model, d_model, name="qkv_proj"), 3),
        Layer("attn_qk", attention_qk(bh, seq, seq, hd, name="attn_qk"), 1),
        Layer("attn_pv", attention_pv(bh, seq, seq, hd, name="attn_pv"), 1),
        Layer("out_proj", gemm(tokens, d_model, d_model, name="out_proj"), 1),
        Layer("ffn1", gemm(tokens, d_ff, d_model, name="ffn1"), 1),
        Layer("ffn2", gemm(tokens, d_model, d_ff, name="ffn2"), 1),
    ]


MODELS: dict[str, Callable[..., list[Layer]]] = {"resnet50": resnet50, "transformer": transformer_block}


def model_layers(name: str, **kwargs: int) -> list[Layer]:
    """Layers of a model by name (`resnet50`, `transformer`); keyword arguments go to its builder."""
    if name not in MODELS:
        raise LegoError(f"unknown model {name!r}; choose one of {tuple(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as e:
        raise LegoError(f"model {name}: bad arguments {kwargs}: {e}") from None


def total_macs(layers: list[Layer]) -> int:
    return sum(lay.workload.macs * lay.count for lay in layers)
