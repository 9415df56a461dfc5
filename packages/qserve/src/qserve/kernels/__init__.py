"""QServe's kernels (Lin et al., arXiv 2405.04532, Sec. 5): the W4A8 GEMM and decode attention over a paged KV4
cache, each a Triton kernel with a PyTorch reference (the CPU path).

Importing this package does not import Triton: :mod:`qserve.kernels.dispatch` loads the kernel modules
(:mod:`~qserve.kernels.w4a8_gemm`, :mod:`~qserve.kernels.kv4_attention`) only when a kernel runs. The GEMM's
dispatching entry is :func:`qserve.kernels.dispatch.w4a8_gemm`: it is not re-exported here, where the name
``w4a8_gemm`` is the kernel module's.
"""

from qserve.kernels import dispatch
from qserve.kernels.dispatch import paged_decode_attention, use_triton, w4a8_linear

__all__ = ["dispatch", "paged_decode_attention", "use_triton", "w4a8_linear"]
