"""`generate`: mappings -> a verified-ready RTL design (LEGO Sec. IV, architecture generation).

One Mapping gives one dataflow array; several Mappings on the same ArraySpec give ONE fused array with a
`mode` input (mode i runs mappings[i]). The architecture is derived from the analyses only (reuse ->
interconnect -> plan -> fusion -> Verilog), never from per-dataflow templates:

    d = generate([map_workload(wl, os_df, arr), map_workload(wl, ws_df, arr)], name="gemm_fused")
    d.verilog(); d.write("out/"); d.testbench(inputs, mode=1)

Three modules per design: the core `<name>` (PE array, control, address generators; what `synthesize`
counts by default), `<name>_buffers` (the banked on-chip buffers of `memory_banks`, `lego_hw.rtl.buffers`)
and `<name>_system` (both wired together, with host load/readback ports), which the testbench simulates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lego_hw.dataflow import Mapping
from lego_hw.errors import LegoError
from lego_hw.fusion import FusedArray, FusionStats, fuse, plan_modes
from lego_hw.memory import Banking, plan_banks, verify_conflict_free
from lego_hw.rtl.buffers import BufferLayout, buffer_layouts, emit_buffers, emit_system
from lego_hw.rtl.testbench import emit_testbench
from lego_hw.rtl.verilog import emit_core, index_width
from lego_hw.schedule import total_cycles


@dataclass
class Design:
    """A generated core: its mappings (one per mode), the fused plan and the Verilog text."""

    name: str
    mappings: tuple[Mapping, ...]
    fused: FusedArray
    _verilog: str = field(default="", repr=False)
    # Bank plan per mode for the buffers; None = `memory_banks(mode)` (verified). Tests override it.
    banking: tuple[dict[str, Banking], ...] | None = field(default=None, repr=False)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(m.dataflow.name for m in self.mappings)

    @property
    def index_width(self) -> int:
        return index_width(self.fused)

    def mode_index(self, mode: int | str) -> int:
        if isinstance(mode, str):
            if mode not in self.modes:
                raise LegoError(f"design {self.name} has no mode {mode!r}; its modes are {self.modes}")
            return self.modes.index(mode)
        if not 0 <= mode < len(self.mappings):
            raise LegoError(f"design {self.name} has modes 0..{len(self.mappings) - 1}, got {mode}")
        return mode

    def verilog(self) -> str:
        """Synthesizable Verilog-2005 of the core module (named `self.name`)."""
        if not self._verilog:
            self._verilog = emit_core(self.fused, self.name)
        return self._verilog

    def buffer_layouts(self) -> dict[str, BufferLayout]:
        """Per tensor: banks, depth and width of its buffer (the most any mode's bank plan needs)."""
        # Not enumerated here (seconds on big arrays): `simulate(check=True)` runs `memory_banks(verify=True)`
        # and the simulated buffers flag any conflict themselves.
        banks = self.banking or tuple(self.memory_banks(m, verify=False) for m in range(len(self.mappings)))
        return buffer_layouts(self.fused, banks)

    def buffers_verilog(self) -> str:
        """Synthesizable Verilog-2005 of `<name>_buffers`: the banked buffers and their bank/address decoders."""
        return emit_buffers(self.fused, self.name, self.index_width, self.buffer_layouts())

    def system_verilog(self) -> str:
        """Verilog-2005 of `<name>_system`: the core and `<name>_buffers` connected, host ports outside."""
        return emit_system(self.fused, self.name, self.index_width)

    def expected_cycles(self, mode: int | str = 0) -> int:
        """Cycles start -> done of `mode` per the schedule (`lego_hw.schedule.total_cycles`)."""
        return total_cycles(self.mappings[self.mode_index(mode)])

    def testbench(self, inputs: MappingABC[str, np.ndarray], mode: int | str = 0) -> str:
        """Verilog testbench `tb`: runs `mode` of `<name>_system` on `inputs`, prints outputs, cycles, conflicts."""
        m = self.mode_index(mode)
        limit = 2 * self.expected_cycles(m) + 100
        return emit_testbench(self.fused, self.name, self.index_width, m, inputs, limit)

    def write(self, directory: str | Path) -> list[Path]:
        """Write `<name>.v`, `<name>_buffers.v`, `<name>_system.v` into `directory`; returns the paths (core first)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = []
        for suffix, text in (
            ("", self.verilog()),
            ("_buffers", self.buffers_verilog()),
            ("_system", self.system_verilog()),
        ):
            p = d / f"{self.name}{suffix}.v"
            p.write_text(text)
            out.append(p)
        return out

    def describe(self) -> dict[str, object]:
        """Summary for reports and the CLI: modes, array, ports, fusion counts, cycles per mode."""
        arr = self.mappings[0].array
        st = self.fusion_stats()
        return {
            "name": self.name,
            "modes": list(self.modes),
            "pe_shape": list(self.fused.pe_shape),
            "data_width": arr.data_width,
            "acc_width": arr.acc_width,
            "index_width": self.index_width,
            "read_ports": {t: self.fused.read_ports(t) for t in self.fused.inputs},
            "write_ports": self.fused.write_ports,
            "shared_links": st.shared_links,
            "muxes": st.muxes,
            "cycles": {m.dataflow.name: total_cycles(m) for m in self.mappings},
            "buffers": {
                n: {"banks": la.banks, "depth": la.depth, "width": la.width} for n, la in self.buffer_layouts().items()
            },
        }

    def fusion_stats(self) -> FusionStats:
        return self.fused.stats()

    def memory_banks(self, mode: int | str = 0, verify: bool = True) -> dict[str, Banking]:
        """Bank function of each tensor's buffer in `mode`; with verify, enumerate every tile and cycle.

        Raises LegoError on a bank conflict (two ports, one bank, different elements in one cycle).
        """
        plan = self.fused.modes[self.mode_index(mode)]
        out: dict[str, Banking] = {}
        groups = {n: list(plan.in_ports[n]) for n in plan.inputs}
        groups[plan.output] = list(plan.out_ports)
        for n, ports in groups.items():
            streams = [p.stream for p in ports]
            bank = plan_banks(n, streams)
            if verify:
                phase = ports[0].phase
                cycles = {"preload": plan.preload, "drain": plan.drain}.get(phase, plan.compute)
                verify_conflict_free(plan.mapping, n, streams, cycles, bank)
            out[n] = bank
        return out


def generate(mappings: Mapping | Sequence[Mapping], name: str | None = None, share_links: bool = False) -> Design:
    """Generate the RTL design of one mapping, or one fused array running several (same ArraySpec).

    share_links: select the fused modes' links jointly (`lego_hw.fusion.select_links`, LEGO's heuristic)
    and align their buffer-port numbering, to cut muxes; off, each mode keeps its own min-cost links.
    """
    maps = (mappings,) if isinstance(mappings, Mapping) else tuple(mappings)
    if not maps:
        raise LegoError("generate: need at least one Mapping")
    for m in maps:
        n_in = len(m.workload.inputs)
        if m.array.acc_width <= n_in * m.array.data_width:
            raise LegoError(
                f"acc_width {m.array.acc_width} must exceed the product width {n_in} x {m.array.data_width} "
                f"of {m.workload.name}; raise ArraySpec.acc_width"
            )
    if name is None:
        name = maps[0].workload.name + "_" + "_".join(m.dataflow.name for m in maps)
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not re.match(r"[A-Za-z_]", name):
        name = "m_" + name
    fused = fuse(plan_modes(maps, share_links))
    return Design(name=name, mappings=maps, fused=fused)
