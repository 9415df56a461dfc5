"""Exception types of lego_hw: each says what was expected, what was found, and what to change."""

from __future__ import annotations


class LegoError(ValueError):
    """Base class for invalid input to lego_hw (workloads, mappings, arrays, clock targets)."""


class NonAffineAccessError(LegoError):
    """A tensor index is not an affine function of the loop iterators."""


class IllegalMappingError(LegoError):
    """A space-time mapping is not a bijection on the bounded domain or sends a dependence backward in time."""


class ArrayTooLargeError(LegoError):
    """The PE array has more PEs along an axis than the loop mapped to that axis has iterations."""


class InfeasibleClockError(LegoError):
    """No register placement meets the target clock period (a single primitive is slower than the clock)."""


class ToolNotFoundError(RuntimeError):
    """An external EDA tool (iverilog, vvp, yosys, verilator) is not on PATH."""


class ToolFailedError(RuntimeError):
    """An external EDA tool ran and failed; the message carries its output."""


class SimulationMismatchError(RuntimeError):
    """The RTL simulation's result differs from the numpy reference."""
