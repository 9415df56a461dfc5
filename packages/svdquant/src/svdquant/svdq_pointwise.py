"""1x1 convolutions quantized as Linear layers (SANA's Mix-FFN ``inverted_conv`` and ``point_conv``).

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 5.1: SANA's feed-forward network runs most of its FLOPs in pointwise convolutions, which the engine quantizes
as linears. A ``Conv2d`` with a 1x1 kernel, stride 1, no padding and one group computes, at every pixel, the
product of its ``[O, C, 1, 1]`` weight (a ``[O, C]`` matrix) with the pixel's channel vector: exactly a Linear over
the channels (the dilation does not matter for a 1x1 kernel). :class:`SVDQPointwiseConv` is an
:class:`SVDQLinear` (same buffers, so the checkpoint keys are the engine's) whose forward moves the channels of a
``[B, C, H, W]`` (or ``[C, H, W]``) input last, applies the layer, and moves them back.
"""

from __future__ import annotations

from torch import Tensor, nn

from svdquant.config import LayerSettings, SVDQuantConfig
from svdquant.errors import InputError
from svdquant.svdq_linear import SVDQLinear

__all__ = ["SVDQPointwiseConv", "conv_as_linear", "is_pointwise_conv", "pointwise_problem"]


def pointwise_problem(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot be quantized as a Linear (None if it can: a 1x1, stride-1, unpadded, ungrouped Conv2d)."""
    if not isinstance(conv, nn.Conv2d):
        return f"{type(conv).__name__} is not an nn.Conv2d"
    problems = []
    if tuple(conv.kernel_size) != (1, 1):
        problems.append(f"kernel_size={tuple(conv.kernel_size)}")
    if tuple(conv.stride) != (1, 1):
        problems.append(f"stride={tuple(conv.stride)}")
    if conv.padding not in ("valid", (0, 0)):
        problems.append(f"padding={conv.padding}")
    if conv.groups != 1:
        problems.append(f"groups={conv.groups}")
    if not problems:
        return None
    return (
        f"Conv2d({conv.in_channels}, {conv.out_channels}) has {', '.join(problems)}; only pointwise convolutions "
        "(kernel 1x1, stride 1, padding 0, groups 1) compute a Linear over the channels and can be quantized"
    )


def is_pointwise_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and pointwise_problem(module) is None


def conv_as_linear(conv: nn.Conv2d) -> nn.Linear:
    """An ``nn.Linear`` sharing ``conv``'s weight (viewed ``[O, C]``) and bias."""
    problem = pointwise_problem(conv)
    if problem is not None:
        raise InputError(problem)
    lin = nn.Linear(1, 1, bias=conv.bias is not None, device="meta")
    lin.in_features, lin.out_features = conv.in_channels, conv.out_channels
    lin.weight = nn.Parameter(conv.weight.detach().flatten(1), requires_grad=False)
    if conv.bias is not None:
        lin.bias = nn.Parameter(conv.bias.detach(), requires_grad=False)
    return lin


class SVDQPointwiseConv(SVDQLinear):
    """A quantized 1x1 ``nn.Conv2d``: ``in_features``/``out_features`` are its in/out channels. Build it with
    :meth:`from_conv`."""

    def extra_repr(self) -> str:
        return "pointwise conv, " + super().extra_repr()

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_features:
            raise InputError(
                f"SVDQPointwiseConv expects inputs [B, {self.in_features}, H, W] or [{self.in_features}, H, W], "
                f"found shape {tuple(x.shape)}"
            )
        return super().forward(x.movedim(-3, -1)).movedim(-1, -3)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Module,
        calib_x: Tensor | None,
        config: SVDQuantConfig | LayerSettings | None = None,
        *,
        name: str = "",
        channel_range: tuple[Tensor, Tensor] | None = None,
    ) -> SVDQPointwiseConv:
        """Quantize a pointwise ``conv`` as :meth:`SVDQLinear.from_linear` does a Linear; ``calib_x`` holds input
        rows with the channels last (``[..., C]``). Raises :class:`InputError` naming the layer for any other
        module."""
        problem = pointwise_problem(conv)
        if problem is not None:
            raise InputError(f"layer {name!r}: {problem}" if name else problem)
        assert isinstance(conv, nn.Conv2d)
        layer = cls.from_linear(conv_as_linear(conv), calib_x, config, name=name, channel_range=channel_range)
        assert isinstance(layer, SVDQPointwiseConv)
        return layer
