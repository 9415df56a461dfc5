"""``SVDQLinear``: a Linear layer as SVDQuant stores and runs it (4-bit residual plus a 16-bit low-rank branch).

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 4.2: the layer computes ``y = Q(x / s) Q(W s - L)^T + (x / s) L^T + b``, where ``s`` is the smoothing
vector and ``L = L1 L2`` the rank-r branch fitted on the smoothed weight. The buffers carry the Nunchaku engine's
names, so they are the checkpoint keys: ``qweight`` uint8 ``[N, K/2]``, ``wscales`` ``[K/G, N]`` (16-bit for a
16-bit model's INT4, float8_e4m3fn for NVFP4), ``wtscale`` and optional ``wcscales`` (NVFP4), ``smooth_factor``
``[K]``, ``proj_down`` ``[K, R]`` acting on the *raw* input (the smoothing is folded in), ``proj_up`` ``[N, R]``,
``bias`` ``[N]`` and, for post-GELU inputs quantized unsigned, the scalar ``act_shift``.

The reference forward (the CPU path, and what the kernels are tested against) runs in float32:
``Q_x((x + c) / s) dequant(qweight)^T - ((c / s) dequant(qweight)^T) + (x proj_down) proj_up^T + bias`` with
``c = act_shift`` (0 for signed inputs). The activation is rounded to the input's dtype before its dynamic
quantization, so a bf16 model gets 16-bit activation scales as in the engine. The subtraction removes the shift's
contribution exactly (the engine folds it into the bias instead). ``R`` is read from the buffers' current shapes,
so a LoRA merged by rank concatenation needs no other change.

Note that ``module.to(dtype)`` would also cast the float8 ``wscales`` and the fp32 ``wtscale``/``act_shift``:
convert the float model's dtype before quantizing it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from svdquant.config import LayerSettings, SVDQuantConfig
from svdquant.errors import InputError
from svdquant.formats import QuantizedWeight, fake_quantize_activation, fake_quantize_weight, quantize_weight
from svdquant.low_rank import check_finite, low_rank_branch
from svdquant.smoothing import search_smoothing

__all__ = ["SVDQLinear"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class SVDQLinear(nn.Module):
    """An SVDQuant layer. Build it with :meth:`from_linear`; the constructor makes an empty (zero) layer of the
    given shapes, which :func:`svdquant.load_quantized` fills from a checkpoint."""

    qweight: Tensor
    wscales: Tensor
    smooth_factor: Tensor
    proj_down: Tensor
    proj_up: Tensor
    bias: Tensor | None
    wtscale: Tensor | None
    wcscales: Tensor | None
    act_shift: Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        *,
        fmt: str = "int4",
        group_size: int | None = None,
        bias: bool = True,
        act_unsigned: bool = False,
        w4a16: bool = False,
        dtype: torch.dtype = torch.float32,
        wcscales: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if fmt not in ("int4", "nvfp4"):
            raise InputError(f"fmt must be 'int4' or 'nvfp4', found {fmt!r}")
        g = (64 if fmt == "int4" else 16) if group_size is None else group_size
        if in_features <= 0 or out_features <= 0:
            raise InputError(f"in_features and out_features must be positive, found {in_features}, {out_features}")
        if g <= 0 or in_features % g != 0 or in_features % 2 != 0:
            raise InputError(
                f"in_features={in_features} must be even and a multiple of the group size {g} (4-bit packing)"
            )
        if rank < 0:
            raise InputError(f"rank must be >= 0, found {rank}")
        if dtype not in _FLOAT_DTYPES:
            raise InputError(f"dtype must be float32, float16 or bfloat16, found {dtype}")
        if act_unsigned and (fmt != "int4" or w4a16):
            raise InputError("act_unsigned needs fmt='int4' with 4-bit activations (w4a16=False)")
        self.in_features, self.out_features = in_features, out_features
        self.fmt, self.group_size = fmt, g
        self.act_unsigned, self.w4a16 = act_unsigned, w4a16
        n, k = out_features, in_features
        dev = torch.device(device) if device is not None else None
        self.register_buffer("qweight", torch.zeros(n, k // 2, dtype=torch.uint8, device=dev))
        scale_dtype = dtype if fmt == "int4" else torch.float8_e4m3fn
        self.register_buffer("wscales", torch.zeros(k // g, n, device=dev).to(scale_dtype))
        self.register_buffer("wtscale", torch.ones(1, dtype=torch.float32, device=dev) if fmt == "nvfp4" else None)
        self.register_buffer(
            "wcscales", torch.ones(n, dtype=dtype, device=dev) if fmt == "nvfp4" and wcscales else None
        )
        self.register_buffer("smooth_factor", torch.ones(k, dtype=dtype, device=dev))
        self.register_buffer("proj_down", torch.zeros(k, rank, dtype=dtype, device=dev))
        self.register_buffer("proj_up", torch.zeros(n, rank, dtype=dtype, device=dev))
        self.register_buffer("bias", torch.zeros(n, dtype=dtype, device=dev) if bias else None)
        self.register_buffer("act_shift", torch.zeros((), dtype=torch.float32, device=dev) if act_unsigned else None)

    @property
    def rank(self) -> int:
        return int(self.proj_down.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """The 16-bit (or fp32) dtype of the branch, the smoothing and the output of the stored layer."""
        return self.proj_up.dtype

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, fmt={self.fmt}, "
            f"group_size={self.group_size}, act_unsigned={self.act_unsigned}, w4a16={self.w4a16}"
        )

    def quantized_weight(self) -> QuantizedWeight:
        return QuantizedWeight(self.fmt, self.qweight, self.wscales, torch.float32, self.wtscale, self.wcscales)  # type: ignore[arg-type]

    def dequantized_weight(self) -> Tensor:
        """The 4-bit residual weight ``[N, K]`` (of the smoothed input) as float32."""
        return self.quantized_weight().dequantize()

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise InputError(f"SVDQLinear expects inputs [..., {self.in_features}], found shape {tuple(x.shape)}")
        # INT4 W4A4 on CUDA (with Triton) runs the fused kernels; everything else is the fp32 reference below.
        from svdquant.kernels.dispatch import fused_forward

        fused = fused_forward(self, x)
        if fused is not None:
            return fused
        x32 = x.float()
        s = self.smooth_factor.float()
        w = self.dequantized_weight()
        if self.w4a16:
            y = (x32 / s) @ w.T
        else:
            c = self.act_shift.float() if self.act_shift is not None else None
            xs = x32 / s if c is None else (x32 + c) / s
            # Quantize in the input's dtype so that a 16-bit model gets 16-bit activation scales, as the engine.
            xq = fake_quantize_activation(xs.to(x.dtype), self.fmt, self.group_size, self.act_unsigned).float()  # type: ignore[arg-type]
            y = xq @ w.T
            if c is not None:
                y = y - (c / s) @ w.T
        y = y + (x32 @ self.proj_down.float()) @ self.proj_up.float().T
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Module,
        calib_x: Tensor | None,
        config: SVDQuantConfig | LayerSettings | None = None,
        *,
        name: str = "",
        channel_range: tuple[Tensor, Tensor] | None = None,
    ) -> SVDQLinear:
        """Quantize ``linear`` (an ``nn.Linear`` ``[N, K]``): smoothing search, low-rank branch, 4-bit residual.

        ``calib_x`` ``[..., K]`` are the layer's calibration inputs, or None: then no smoothing (ones) and the
        branch minimises the weight error instead of the output error. ``config`` is a whole-model config (the
        settings of the module ``name`` are used, its skip filter ignored) or one layer's settings; default
        :class:`SVDQuantConfig()`. ``channel_range`` gives per-channel (min, max) over a larger calibration set
        than ``calib_x`` (what :func:`quantize_` tracks over every token it saw); it sets the smoothing spans and
        the unsigned shift. ``name`` only labels error messages.

        Raises :class:`InputError` (naming the layer) for a non-Linear module, in_features not a multiple of the
        group size, a rank above min(N, K), or NaN/Inf in the weight, bias or calibration inputs.
        """
        label = f"layer {name!r}" if name else "layer"
        if not isinstance(linear, nn.Linear):
            raise InputError(f"{label}: SVDQLinear.from_linear needs an nn.Linear, found {type(linear).__name__}")
        cfg = config if config is not None else SVDQuantConfig()
        st = cfg.layer(name) if isinstance(cfg, SVDQuantConfig) else cfg
        seed = cfg.seed if isinstance(cfg, SVDQuantConfig) else 0
        w = linear.weight.detach()
        n, k = w.shape
        dtype = w.dtype
        if dtype not in _FLOAT_DTYPES:
            raise InputError(f"{label}: weight dtype must be float32, float16 or bfloat16, found {dtype}")
        g = st.group_size
        if k % g != 0 or k % 2 != 0:
            raise InputError(
                f"{label}: in_features={k} is not a multiple of the group size {g} (out_features={n}); "
                "keep the layer in 16 bits (add it to `skip`) or choose a group size that divides in_features"
            )
        if st.rank > min(n, k):
            raise InputError(f"{label}: rank {st.rank} exceeds min(out_features, in_features) = min({n}, {k})")
        _finite(label, "weight", w)
        if linear.bias is not None:
            _finite(label, "bias", linear.bias.detach())
        w32 = w.float()

        def quantize_w(r: Tensor) -> Tensor:
            # Quantize in the model's dtype, so the scales the search sees are the ones stored.
            return fake_quantize_weight(r.to(dtype), st.fmt, g).float()

        unsigned = st.act_unsigned and not st.w4a16

        def quantize_x(xs: Tensor) -> Tensor:
            if st.w4a16:
                return xs
            return fake_quantize_activation(xs.to(dtype), st.fmt, g, unsigned).float()

        x2: Tensor | None = None
        shift = 0.0
        s = torch.ones(k, dtype=torch.float32, device=w.device)
        if calib_x is not None:
            if calib_x.shape[-1] != k or calib_x.numel() == 0:
                raise InputError(
                    f"{label}: calibration inputs must be non-empty [..., {k}], found {tuple(calib_x.shape)}"
                )
            x2 = calib_x.detach().reshape(-1, k).float().to(w.device)
            _finite(label, "calibration inputs", x2)
            lo, hi = channel_range if channel_range is not None else (x2.amin(0), x2.amax(0))
            lo, hi = lo.float().to(w.device), hi.float().to(w.device)
            if unsigned:
                # Post-GELU inputs are bounded below (about -0.17): shift them to be non-negative.
                shift = max(0.0, -float(lo.min()))
            if st.smoothing:
                x_absmax = torch.maximum((lo + shift).abs(), (hi + shift).abs())
                found = search_smoothing(
                    x2 + shift,
                    w32,
                    quantize_w,
                    quantize_x,
                    st.rank,
                    num_grids=st.num_grids,
                    svd=st.svd,
                    seed=seed,
                    x_absmax=x_absmax,
                )
                # Round the smoothing to its stored dtype first, so every later step uses the stored value.
                finfo = torch.finfo(dtype)
                s = found.scale.clamp(min=finfo.tiny, max=finfo.max).to(dtype).float()
        elif unsigned:
            shift = 0.17  # GELU's minimum is about -0.16997
        branch = low_rank_branch(
            w32 * s,
            st.rank,
            quantize_w,
            iters=st.lowrank_iters,
            svd=st.svd,
            seed=seed,
            x=None if x2 is None else x2 / s,
        )
        proj_down = (branch.down / s).T.contiguous().to(dtype)  # [K, R], acts on the raw input
        proj_up = branch.up.contiguous().to(dtype)  # [N, R]
        # Quantize what the *stored* branch misses, so rounding the branch to 16 bits is compensated.
        effective = proj_up.float() @ (proj_down.float().T * s)
        qw = quantize_weight((w32 * s - effective).to(dtype), st.fmt, g)
        out = cls(
            k,
            n,
            st.rank,
            fmt=st.fmt,
            group_size=g,
            bias=linear.bias is not None,
            act_unsigned=unsigned,
            w4a16=st.w4a16,
            dtype=dtype,
            wcscales=qw.wcscales is not None,
            device=w.device,
        )
        with torch.no_grad():
            out.qweight.copy_(qw.qweight)
            out.wscales.copy_(qw.wscales)
            if qw.wtscale is not None and out.wtscale is not None:
                out.wtscale.copy_(qw.wtscale.float().reshape(1))
            out.smooth_factor.copy_(s.to(dtype))
            out.proj_down.copy_(proj_down)
            out.proj_up.copy_(proj_up)
            if out.bias is not None and linear.bias is not None:
                out.bias.copy_(linear.bias.detach())
            if out.act_shift is not None:
                out.act_shift.fill_(shift)
        return out


def _finite(label: str, what: str, t: Tensor) -> None:
    try:
        check_finite(what, t)
    except InputError as e:
        raise InputError(f"{label}: {e}") from e
