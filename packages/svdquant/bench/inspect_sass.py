"""The fused W4A4 GEMM's Hopper machine code, read without a GPU: what the per-group rescaling costs.

Li et al., "SVDQuant" (ICLR 2025), Sec. 4.3: INT4 weights and activations in groups of 64 with 16-bit scales, so
every group's int32 partial product must be converted to fp32, multiplied by ``ascale[m, g] * wscale[g, n]`` and
added into an fp32 accumulator. This script compiles :mod:`svdquant.kernels.gemm_w4a4` ahead of time for sm_90a
(Triton's bundled ptxas; the compile and disassembly helpers are qserve's ``bench/inspect_sass.py``, the same tool
for the sibling W4A8 kernel) and counts, in the main loop (one group of 64 per step, per warp):

- ``scale``: the rescaling instructions ``I2FP`` (int32 -> fp32), ``FMUL`` (the scale product) and ``FFMA`` (the
  accumulation); one each per output element per group;
- all instructions, and the step's INT8 ``wgmma`` (``IGMMA``).

From those, at 4 warp-instructions per clock per SM and the H100's dense rates (INT8: 4096, bf16: 2048
multiply-adds per clock per SM): ``scale_clk`` (the rescaling alone), ``alu_clk`` (the whole loop body),
``mma_clk`` (the INT8 wgmma) and ``bf16_clk`` (the same tile step as a bf16 GEMM). ``bf16_clk / scale_clk`` is an
upper bound on the speedup over bf16 that any kernel with this format and one rescale per element per group can
reach on the FP32 pipes, however well everything else overlaps.

    python packages/svdquant/bench/inspect_sass.py --json out.json
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

_QSERVE_BENCH = Path(__file__).resolve().parents[2] / "qserve" / "bench" / "inspect_sass.py"

# (block_m, block_n, swap, num_warps, num_stages): pick_gemm_config's large-M shape and the sweep's others.
SHAPES: tuple[tuple[int, int, bool, int, int], ...] = (
    (128, 128, True, 8, 3),
    (128, 128, False, 8, 3),
    (128, 256, False, 8, 3),
    (64, 128, True, 4, 4),
)
GROUP = 64


@functools.cache
def _sass_tools() -> Any:
    spec = importlib.util.spec_from_file_location("qserve_inspect_sass", _QSERVE_BENCH)
    if spec is None or spec.loader is None or not _QSERVE_BENCH.exists():
        raise FileNotFoundError(f"needs qserve's bench/inspect_sass.py at {_QSERVE_BENCH} (a checkout of the repo)")
    sys.path.insert(0, str(_QSERVE_BENCH.parent))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def inspect(
    block_m: int, block_n: int, swap: bool, num_warps: int, num_stages: int, packed: bool = False
) -> dict[str, Any]:
    from svdquant.kernels.gemm_w4a4 import _gemm_w4a4_kernel

    tools = _sass_tools()
    consts = dict(
        GROUP=GROUP,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_R=32,
        GROUP_M=8,
        SWAP=swap,
        EVEN_M=True,
        EVEN_N=True,
        ATOMIC=False,
        HAS_LORA=True,
        HAS_BIAS=False,
        IEEE_DOT=False,
        PACKED=packed,
    )
    ptrs = {
        "a_ptr": "*i8",
        "as_ptr": "*fp16",
        "w_ptr": "*u8",
        "ws_ptr": "*fp16",
        "lora_ptr": "*fp32",
        "pu_ptr": "*bf16",
        "bias_ptr": "*bf16",
        "y_ptr": "*bf16",
    }
    compiled = tools.compile_for_sm90(_gemm_w4a4_kernel, consts, ptrs, num_warps, num_stages)
    stats = tools.machine_code_stats(compiled, num_warps)
    ops = stats["ops"]
    scale = sum(ops.get(op, 0) for op in ("I2FP", "I2F", "FMUL", "FFMA"))
    elements_per_thread = block_m * block_n // (32 * num_warps)
    stats.update(
        config=f"{block_m}x{block_n} swap={swap} warps={num_warps} stages={num_stages}",
        packed_unpack=packed,
        scale_instructions=scale,
        elements_per_thread=elements_per_thread,
        scale_clk=scale * num_warps / 4,
        mma_clk=block_m * block_n * GROUP / 4096,
        bf16_clk=block_m * block_n * GROUP / 2048,
    )
    stats["ceiling_vs_bf16"] = stats["bf16_clk"] / stats["scale_clk"]
    return stats


def main(argv: list[str] | None = None) -> int:
    return int(
        _sass_tools().table_main(
            argv,
            __doc__ or "",
            lambda: [inspect(*shape, packed=packed) for shape in SHAPES for packed in (False, True)],
            [
                ("config", "config", "38s"),
                ("packed", "packed_unpack", ""),
                ("instr", "instructions", "d"),
                ("scale", "scale_instructions", "d"),
                ("alu_clk", "alu_clk", ".0f"),
                ("scale_clk", "scale_clk", ".0f"),
                ("mma_clk", "mma_clk", ".0f"),
                ("bf16_clk", "bf16_clk", ".0f"),
                ("ceiling", "ceiling_vs_bf16", ".2f"),
                ("regs", "registers", "d"),
                ("ctas", "ctas", "d"),
            ],
            {"group_size": GROUP},
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
