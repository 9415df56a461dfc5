"""Design specifications: what `lego-hw generate` writes next to the Verilog so every later step can rebuild it.

A `DesignSpec` is the whole input of the generator (workload, one or more dataflows fused into one array,
the array, optional tile extents) as one JSON file. `simulate`, `synth`, `estimate` and `report` read it back
instead of parsing Verilog, and regenerating from it is deterministic.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lego_hw import workload as wl_mod
from lego_hw.dataflow import ArraySpec, Dataflow, Mapping, map_workload
from lego_hw.errors import LegoError
from lego_hw.workload import Workload

FORMAT: Literal["lego_hw.design/1"] = "lego_hw.design/1"
SPEC_FILE = "design.json"

# Workload presets reachable by name from the CLI ("gemm:m=64,n=64,k=32").
WORKLOAD_PRESETS: dict[str, Callable[..., Workload]] = {
    "gemm": wl_mod.gemm,
    "batched_gemm": wl_mod.batched_gemm,
    "conv2d": wl_mod.conv2d,
    "depthwise_conv2d": wl_mod.depthwise_conv2d,
    "attention_qk": wl_mod.attention_qk,
    "attention_pv": wl_mod.attention_pv,
    "mttkrp": wl_mod.mttkrp,
}


class DesignSpec(BaseModel):
    """Everything `generate` needs: one workload, the dataflows the array runs, and the array."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["lego_hw.design/1"] = Field(default=FORMAT, description="File format tag.")
    name: str = Field(description="Top-level Verilog module name.")
    workload: Workload
    dataflows: tuple[Dataflow, ...] = Field(description="One dataflow, or several fused into one array.")
    array: ArraySpec
    tile: tuple[tuple[str, int], ...] | None = Field(default=None, description="Tile extents per loop, if set.")
    share_links: bool = Field(default=False, description="Select fused modes' links jointly (more sharing).")

    @model_validator(mode="after")
    def _check(self) -> DesignSpec:
        if not self.dataflows:
            raise LegoError("a design needs at least one dataflow")
        names = [d.name for d in self.dataflows]
        if len(set(names)) != len(names):
            raise LegoError(f"dataflow names repeat in one design: {names}")
        return self

    def mappings(self) -> list[Mapping]:
        """One legal mapping per dataflow (raises on an illegal one, naming it)."""
        tile = dict(self.tile) if self.tile else None
        return [map_workload(self.workload, df, self.array, tile) for df in self.dataflows]

    def save(self, path: str | Path) -> Path:
        """Write the spec as JSON atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".design-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.model_dump_json(indent=2))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> DesignSpec:
        """Read a spec written by `save` (or the design folder holding design.json)."""
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE
        if not path.is_file():
            raise LegoError(f"no design spec at {path}; run `lego-hw generate` first or pass its {SPEC_FILE}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise LegoError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LegoError(f"{path} is not a lego-hw design spec (format {found!r}, expected {FORMAT!r})")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise LegoError(f"{path}: invalid design spec: {e}") from None


def parse_workload(text: str) -> Workload:
    """A workload from `preset:key=value,...`, from `Out[..] += In[..] * In[..] @ i=4,j=4`, or a JSON file.

    Examples: `gemm:m=13,n=10,k=7`, `conv2d:k=8,c=4,oh=5,ow=6,r=3,s=3,stride=2`,
    `"C[i,j] += A[i,k] * B[k,j] @ i=8,j=8,k=8"`, `workload.json` (a dumped Workload).
    """
    if "+=" in text:
        expr, sep, sizes = text.partition("@")
        if not sep:
            raise LegoError(f"an expression workload needs loop bounds after '@', e.g. '{expr.strip()} @ i=4,j=4,k=4'")
        return Workload.from_expr(expr, _key_values(sizes, text), name="custom")
    p = Path(text)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise LegoError(f"workload file {p} does not exist")
        try:
            return Workload.model_validate_json(p.read_text())
        except ValidationError as e:
            raise LegoError(f"{p}: invalid workload: {e}") from None
    name, _, args = text.partition(":")
    fn = WORKLOAD_PRESETS.get(name.strip())
    if fn is None:
        raise LegoError(
            f"unknown workload {name!r}; choose one of {sorted(WORKLOAD_PRESETS)}, an expression, or a file"
        )
    params = inspect.signature(fn).parameters
    kwargs = _key_values(args, text) if args.strip() else {}
    unknown = set(kwargs) - set(params)
    if unknown:
        raise LegoError(f"workload {name}: unknown size(s) {sorted(unknown)}; it takes {list(params)[:-1]}")
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in kwargs]
    if missing:
        raise LegoError(
            f"workload {name}: missing size(s) {missing} (e.g. {name}:{','.join(f'{m}=8' for m in missing)})"
        )
    return fn(**kwargs)


def _key_values(text: str, whole: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in text.split(","):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise LegoError(f"expected key=value pairs separated by commas in {whole!r}, found {item.strip()!r}")
        try:
            out[key.strip()] = int(val)
        except ValueError:
            raise LegoError(f"size {key.strip()}={val.strip()!r} in {whole!r} is not an integer") from None
    return out


def default_loops(workload: Workload) -> tuple[str, str, str]:
    """(row, column, reduction) loops for a preset: the two longest output loops and the longest reduction loop."""
    red = workload.reduction_loops()
    out = [lp for lp in workload.loops if lp not in red]
    if len(out) < 2 or not red:
        raise LegoError(
            f"workload {workload.name} needs two output loops and one reduction loop for a 2-D array; "
            f"it has output loops {out} and reduction loops {list(red)}: pass --loops explicitly"
        )
    by_len = sorted(out, key=lambda lp: -workload.bound(lp))[:2]
    rows, cols = sorted(by_len, key=workload.loops.index)
    reduction = max(red, key=workload.bound)
    return rows, cols, reduction
