"""QoQ number formats with exact integer semantics: progressive W4 (g128), per-channel W4, W8, per-token A8.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 4.1 (progressive group quantization and the protective range) and Sec. 5.2 (the W4A8 GEMM epilogues).
Tensor names follow the QServe checkpoints (``qweight``, ``s1_scales``, ``s1_szeros``, ``s2_scales``,
``s2_zeros``). Weights are ``[N, K]`` (output, input); groups run along K.

**Progressive g128** (:func:`quantize_w4_g128`). Level 0, per output channel: ``s0 = absmax / 119`` (fp16,
stored as ``s1_scales``), ``q8 = clamp(round(W / s0), -119, 119)``. Level 1, per group of 128 inputs of the
int8 ``q8``, over the range ``[lo, hi] = [min(q8_g, 0), max(q8_g, 0)]`` (zero is always inside, so the zero
point needs no clamping and an all-positive group is not crushed; groups that cross zero, i.e. nearly all, are
unaffected): integer scale ``s1 = max(1, ceil((hi - lo) / 15))``, zero ``z = round(-lo / s1)``,
``q4 = clamp(round(q8 / s1) + z, 0, 15)``, and the int8 value the GEMM uses is ``q8_hat = q4 * s1 - z * s1``.
The protective range 119 (:func:`protective_range`) guarantees ``q8_hat`` in [-128, 127] and ``z * s1 <= 127``,
so both are exact in int8. An optional per-group clipping ratio ``r`` shrinks ``[lo, hi]`` to
``[r * lo, r * hi]`` before ``s1`` and ``z`` are taken (the clipping search of QoQ).

**Per-channel W4** (:func:`quantize_w4_channel`): ``s = (hi - lo) / 15`` over the channel (zero included),
fp16; ``z = round(-lo / s)``; ``q4 = clamp(round(W / s) + z, 0, 15)``; ``s1_szeros = z * s`` (fp16, the engine's
pre-scaled zero, from which ``z`` is recovered exactly by rounding), and ``W_hat = (q4 - z) * s``.

**W8** (the W8A8 baseline): per channel ``s = absmax / 127`` (fp16), ``q = clamp(round(W / s), -127, 127)``.

**Activations**: per token ``a_scale = absmax / 127`` (fp16), ``qa = clamp(round(x / a_scale), -127, 127)``.

Every ``round`` is half-to-even; every division uses the *stored* (fp16) scale; a zero scale gives codes 0.

**GEMM** (:func:`w4a8_matmul_ref`), with an exact integer accumulator ``acc[m, n] = sum_k qa[m, k] * w[n, k]``
(``w`` = ``q8_hat``, ``q4`` or the W8 codes; computed in float64, exact since ``|acc| < 2**53``; per channel the
zero is removed in integers with the activation row sums, ``acc -= z[n] * sum_k qa[m, k]``, where
``z = round(s1_szeros / s1_scales)`` is the stored integer zero), then in fp32 as the kernel's epilogue does:
``y = acc * (a_scale[m] * s[n]) + bias``, cast to the output dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from qserve.errors import CheckpointError, InputError
from qserve.quant.kv import FP16_MAX, check_finite, pack_u4, unpack_u4

__all__ = [
    "PROTECTIVE_RANGE",
    "W4A8ChannelWeight",
    "W4A8Weight",
    "W8A8Weight",
    "WeightFormat",
    "channel_zeros",
    "dequantize_weight",
    "fake_quantize_activation",
    "fake_quantize_weight",
    "protective_range",
    "quantize_activation",
    "quantize_w4_channel",
    "quantize_w4_g128",
    "quantize_w8_channel",
    "u4_group_params",
    "w4a8_matmul_ref",
]


def u4_group_params(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Level-1 integer scale and zero for int8 group ranges ``lo <= 0 <= hi`` (any shape, float or int)."""
    s1 = torch.clamp(torch.ceil((hi.double() - lo.double()) / 15), min=1)
    z = torch.round(-lo.double() / s1).clamp(0, 15)
    return s1, z


@cache
def protective_range() -> int:
    """Largest ``p`` such that every int8 group inside ``[-p, p]`` dequantizes inside [-128, 127] (brute force).

    Every group range ``lo <= 0 <= hi`` with integer ends is tried, and every int8 value inside it.
    """
    for p in range(127, 0, -1):
        lo = torch.arange(-p, 1).view(-1, 1, 1)  # [p+1, 1, 1]
        hi = torch.arange(0, p + 1).view(1, -1, 1)  # [1, p+1, 1]
        v = torch.arange(-p, p + 1).view(1, 1, -1)  # [1, 1, 2p+1]
        s1, z = u4_group_params(lo, hi)
        inside = (v >= lo) & (v <= hi)
        q8_hat = (torch.round(v / s1) + z).clamp(0, 15) * s1 - z * s1
        ok = ((q8_hat >= -128) & (q8_hat <= 127)) | ~inside
        if bool(ok.all()) and bool((z * s1 <= 128).all()):
            return p
    raise AssertionError("no protective range exists")  # unreachable: p = 1 always works


PROTECTIVE_RANGE = 119  # checked against protective_range() in the tests


def _check_weight(w: torch.Tensor, group: int) -> None:
    if w.dim() != 2 or not w.dtype.is_floating_point:
        raise InputError(f"weight must be a 2-D float tensor [N, K], found {w.dtype} {tuple(w.shape)}")
    if group > 0 and w.shape[1] % group:
        raise InputError(f"input channels K={w.shape[1]} must be a multiple of the group size {group}")
    if w.shape[1] % 2:
        raise InputError(f"input channels K={w.shape[1]} must be even for UINT4 packing")
    check_finite(w, "weight")
    if w.numel() and float(w.abs().max()) > FP16_MAX:
        raise InputError(f"weight must fit fp16 (|w| <= {FP16_MAX}), found {float(w.abs().max())}")


def _safe_div(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return x / torch.where(s == 0, torch.ones_like(s), s)


@dataclass(frozen=True)
class W4A8Weight:
    """Progressive g128 W4 weight: ``qweight`` uint8 [N, K/2], ``s1_scales`` fp16 [N],
    ``s2_scales`` uint8 [K/G, N], ``s2_zeros`` int8 [K/G, N] (= -z * s1)."""

    qweight: torch.Tensor
    s1_scales: torch.Tensor
    s2_scales: torch.Tensor
    s2_zeros: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.qweight.shape[0], self.qweight.shape[1] * 2

    @property
    def group(self) -> int:
        return self.shape[1] // self.s2_scales.shape[0]

    def int8_weight(self) -> torch.Tensor:
        """The exact int8 weight ``q8_hat = q4 * s1 - z * s1`` [N, K] that the GEMM multiplies."""
        q4 = unpack_u4(self.qweight).to(torch.int16)  # [N, K]
        n, k = self.shape
        s = self.s2_scales.to(torch.int16).t().repeat_interleave(self.group, dim=1)  # [N, K]
        zs = self.s2_zeros.to(torch.int16).t().repeat_interleave(self.group, dim=1)  # [N, K]
        q8 = q4 * s + zs
        assert q8.numel() == 0 or (int(q8.min()) >= -128 and int(q8.max()) <= 127), "protective range violated"
        return q8.to(torch.int8)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "qweight": self.qweight,
            "s1_scales": self.s1_scales,
            "s2_scales": self.s2_scales,
            "s2_zeros": self.s2_zeros,
        }


@dataclass(frozen=True)
class W4A8ChannelWeight:
    """Per-channel W4 weight: ``qweight`` uint8 [N, K/2], ``s1_scales`` fp16 [N], ``s1_szeros`` fp16 [N]."""

    qweight: torch.Tensor
    s1_scales: torch.Tensor
    s1_szeros: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.qweight.shape[0], self.qweight.shape[1] * 2

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"qweight": self.qweight, "s1_scales": self.s1_scales, "s1_szeros": self.s1_szeros}


@dataclass(frozen=True)
class W8A8Weight:
    """Per-channel symmetric INT8 weight: ``qweight`` int8 [N, K], ``s1_scales`` fp16 [N]."""

    qweight: torch.Tensor
    s1_scales: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.qweight.shape[0], self.qweight.shape[1]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"qweight": self.qweight, "s1_scales": self.s1_scales}


WeightFormat = W4A8Weight | W4A8ChannelWeight | W8A8Weight


def weight_from_tensors(tensors: dict[str, torch.Tensor], where: str = "weight") -> WeightFormat:
    """Rebuild a stored weight from its named tensors (checkpoint loading); dtypes and shapes are checked."""
    names = set(tensors) - {"bias"}
    try:
        if names == {"qweight", "s1_scales", "s2_scales", "s2_zeros"}:
            w: WeightFormat = W4A8Weight(
                tensors["qweight"], tensors["s1_scales"], tensors["s2_scales"], tensors["s2_zeros"]
            )
            expected = {
                "qweight": torch.uint8,
                "s1_scales": torch.float16,
                "s2_scales": torch.uint8,
                "s2_zeros": torch.int8,
            }
        elif names == {"qweight", "s1_scales", "s1_szeros"}:
            w = W4A8ChannelWeight(tensors["qweight"], tensors["s1_scales"], tensors["s1_szeros"])
            expected = {"qweight": torch.uint8, "s1_scales": torch.float16, "s1_szeros": torch.float16}
        elif names == {"qweight", "s1_scales"}:
            w = W8A8Weight(tensors["qweight"], tensors["s1_scales"])
            expected = {"qweight": torch.int8, "s1_scales": torch.float16}
        else:
            raise CheckpointError(f"{where}: unknown quantized weight tensors {sorted(names)}")
    except KeyError as e:  # pragma: no cover - guarded by the name sets above
        raise CheckpointError(f"{where}: missing tensor {e}") from e
    for name, dtype in expected.items():
        if tensors[name].dtype != dtype:
            raise CheckpointError(f"{where}.{name}: expected dtype {dtype}, found {tensors[name].dtype}")
    n = tensors["qweight"].shape[0]
    if tensors["s1_scales"].shape != (n,):
        raise CheckpointError(f"{where}.s1_scales: expected shape ({n},), found {tuple(tensors['s1_scales'].shape)}")
    if isinstance(w, W4A8Weight):
        g = w.s2_scales.shape
        if w.s2_zeros.shape != g or len(g) != 2 or g[1] != n or g[0] == 0 or w.shape[1] % g[0]:
            raise CheckpointError(
                f"{where}: group tensors {tuple(g)} / {tuple(w.s2_zeros.shape)} do not fit a weight of shape {w.shape}"
            )
    if isinstance(w, W4A8ChannelWeight) and w.s1_szeros.shape != (n,):
        raise CheckpointError(f"{where}.s1_szeros: expected shape ({n},), found {tuple(w.s1_szeros.shape)}")
    return w


def quantize_w4_g128(w: torch.Tensor, group: int = 128, clip_ratio: torch.Tensor | None = None) -> W4A8Weight:
    """Progressive quantization of ``w`` [N, K]; ``clip_ratio`` [N, K/group] in (0, 1] shrinks each group range."""
    _check_weight(w, group)
    n, k = w.shape
    wf = w.float()
    s0 = (wf.abs().amax(dim=1) / PROTECTIVE_RANGE).to(torch.float16)  # [N]
    q8 = torch.round(_safe_div(wf, s0.float()[:, None])).clamp(-PROTECTIVE_RANGE, PROTECTIVE_RANGE)  # [N, K]
    g = q8.view(n, k // group, group)  # [N, G, group]
    lo = g.amin(dim=2).clamp(max=0)  # [N, G]
    hi = g.amax(dim=2).clamp(min=0)
    if clip_ratio is not None:
        if clip_ratio.shape != lo.shape:
            raise InputError(f"clip_ratio must have shape {tuple(lo.shape)}, found {tuple(clip_ratio.shape)}")
        lo, hi = lo * clip_ratio.float(), hi * clip_ratio.float()
    s1, z = u4_group_params(lo, hi)  # [N, G] float64
    q4 = (torch.round(g.double() / s1[..., None]) + z[..., None]).clamp(0, 15).view(n, k)
    return W4A8Weight(
        qweight=pack_u4(q4.to(torch.uint8)),
        s1_scales=s0,
        s2_scales=s1.t().contiguous().to(torch.uint8),
        s2_zeros=(-z * s1).t().contiguous().to(torch.int8),
    )


def quantize_w4_channel(w: torch.Tensor, clip_ratio: torch.Tensor | None = None) -> W4A8ChannelWeight:
    """Per-channel asymmetric UINT4 of ``w`` [N, K]; ``clip_ratio`` [N] in (0, 1] shrinks each channel range."""
    _check_weight(w, -1)
    wf = w.float()
    lo = wf.amin(dim=1).clamp(max=0)  # [N]
    hi = wf.amax(dim=1).clamp(min=0)
    if clip_ratio is not None:
        if clip_ratio.shape != lo.shape:
            raise InputError(f"clip_ratio must have shape {tuple(lo.shape)}, found {tuple(clip_ratio.shape)}")
        lo, hi = lo * clip_ratio.float(), hi * clip_ratio.float()
    s = ((hi - lo) / 15).to(torch.float16)
    sf = s.float()
    z = torch.round(_safe_div(-lo, sf)).clamp(0, 15)
    z = torch.where(sf == 0, 0.0, z)
    q4 = (torch.round(_safe_div(wf, sf[:, None])) + z[:, None]).clamp(0, 15)
    q4 = torch.where(sf[:, None] == 0, z[:, None], q4)
    return W4A8ChannelWeight(pack_u4(q4.to(torch.uint8)), s, (z * sf).to(torch.float16))


def quantize_w8_channel(w: torch.Tensor) -> W8A8Weight:
    """Per-channel symmetric INT8 of ``w`` [N, K] (the W8A8 baseline)."""
    _check_weight(w, -1)
    wf = w.float()
    s = (wf.abs().amax(dim=1) / 127).to(torch.float16)
    q = torch.round(_safe_div(wf, s.float()[:, None])).clamp(-127, 127)
    return W8A8Weight(q.to(torch.int8), s)


def channel_zeros(weight: W4A8ChannelWeight) -> torch.Tensor:
    """The integer zero points ``round(s1_szeros / s1_scales)`` [N] (float; 0 where the scale is 0)."""
    s = weight.s1_scales.float()
    return torch.where(s == 0, 0.0, torch.round(_safe_div(weight.s1_szeros.float(), s)))


def dequantize_weight(weight: WeightFormat, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float weight [N, K] that the GEMM applies (fp32 products, cast to ``dtype``)."""
    if isinstance(weight, W4A8Weight):
        w = weight.int8_weight().float() * weight.s1_scales.float()[:, None]
    elif isinstance(weight, W4A8ChannelWeight):
        q4 = unpack_u4(weight.qweight).float()
        w = (q4 - channel_zeros(weight)[:, None]) * weight.s1_scales.float()[:, None]
    else:
        w = weight.qweight.float() * weight.s1_scales.float()[:, None]
    return w.to(dtype)


def fake_quantize_weight(w: torch.Tensor, group: int = 128, bits: int = 4) -> torch.Tensor:
    """Quantize-dequantize ``w`` with the g128 (``group`` > 0), per-channel (-1) W4 or the W8 format."""
    if bits == 8:
        q: WeightFormat = quantize_w8_channel(w)
    elif group > 0:
        q = quantize_w4_g128(w, group)
    else:
        q = quantize_w4_channel(w)
    return dequantize_weight(q, w.dtype)


def quantize_activation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric INT8 of ``x`` [..., K] -> (``qa`` int8 [..., K], ``a_scale`` fp16 [...])."""
    if not x.dtype.is_floating_point:
        raise InputError(f"activations must be a float tensor, found dtype {x.dtype}")
    check_finite(x, "activations")
    xf = x.detach().float()
    amax = xf.abs().amax(dim=-1)
    if amax.numel() and float(amax.max()) > 127 * FP16_MAX:
        raise InputError(f"activations must satisfy |x| <= {127 * FP16_MAX}, found {float(amax.max())}")
    a_scale = (amax / 127).to(torch.float16)
    qa = torch.round(_safe_div(xf, a_scale.float()[..., None])).clamp(-127, 127).to(torch.int8)
    return qa, a_scale


def fake_quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """Per-token INT8 quantize-dequantize of ``x`` (same dtype)."""
    qa, a_scale = quantize_activation(x)
    return (qa.float() * a_scale.float()[..., None]).to(x.dtype)


def w4a8_matmul_ref(
    qa: torch.Tensor,
    a_scale: torch.Tensor,
    weight: WeightFormat,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """The W4A8 (or W8A8) GEMM of the module docstring: ``qa`` int8 [M, K], ``a_scale`` fp16 [M] -> [M, N]."""
    n, k = weight.shape
    if qa.dtype != torch.int8 or qa.dim() != 2 or qa.shape[1] != k:
        raise InputError(f"qa must be int8 [M, {k}], found {qa.dtype} {tuple(qa.shape)}")
    if a_scale.shape != qa.shape[:1]:
        raise InputError(f"a_scale must have shape ({qa.shape[0]},), found {tuple(a_scale.shape)}")
    if isinstance(weight, W4A8Weight):
        w = weight.int8_weight()
    elif isinstance(weight, W4A8ChannelWeight):
        w = unpack_u4(weight.qweight)
    else:
        w = weight.qweight
    # float64 products and sums of |int8| values stay exact for K < 2**38
    acc = qa.double() @ w.double().t()  # [M, N]
    if isinstance(weight, W4A8ChannelWeight):
        acc = acc - qa.double().sum(dim=1, keepdim=True) * channel_zeros(weight).double()[None, :]
    y = acc.float() * (a_scale.float()[:, None] * weight.s1_scales.float()[None, :])
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)
