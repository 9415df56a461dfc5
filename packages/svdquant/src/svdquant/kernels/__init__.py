"""Triton kernels of SVDQuant's INT4 W4A4 path and their dispatch (Li et al., ICLR 2025, Sec. 4.3).

Importing this package does not import Triton: :mod:`svdquant.kernels.dispatch` loads the kernel modules
(:mod:`~svdquant.kernels.quantize_act`, :mod:`~svdquant.kernels.gemm_w4a4`) only when a kernel runs.
"""

from svdquant.kernels.dispatch import fused_forward, quantize_act, use_triton, w4a4_gemm

__all__ = ["fused_forward", "quantize_act", "use_triton", "w4a4_gemm"]
