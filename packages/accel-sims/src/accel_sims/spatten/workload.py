"""SpAtten workloads: one record per (iteration, layer, head), what the datapath fetches and computes.

SpAtten (arXiv:2012.09852), Sec. 3-4. The algorithms (`accel_sims.spatten.pruning`) emit these records from a real
model run; the simulator (`accel_sims.spatten.simulator`) consumes them. The CSV layout uses the column names of the
reference design's workload files (`hardware/workloads/summary-*.csv` in mit-han-lab/spatten) plus `num_queries`,
so files of either origin read the same way.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from accel_sims.errors import WorkloadError

# Our field name -> the reference CSV's column name.
CSV_COLUMNS: dict[str, str] = {
    "iteration_id": "iteration_id",
    "layer_id": "layer_id",
    "head_id": "head_id",
    "head_dim": "embedding_length_D",
    "seq_len": "sentence_length_L",
    "key_fetch_num": "key_fetch_num",
    "key_bits": "quant_key_bit",
    "query_bits": "quant_query_bit",
    "requant_threshold": "auto_requant_thres",
    "requant": "if_requant",
    "requant_extra_bits": "auto_requant_incre",
    "value_fetch_num": "value_fetch_num",
    "value_bits": "quant_value_bit",
    "accumulate_importance": "if_accumulate_importance",
    "rescale_previous_importance": "if_rescale_previous_importance",
    "topk": "if_topk",
    "topk_k": "topk",
    "num_queries": "num_queries",
}
_BOOL_FIELDS = ("requant", "accumulate_importance", "rescale_previous_importance", "topk")


class HeadRecord(BaseModel):
    """The work of one attention head in one layer at one iteration (a generation step, or 0 for an encoder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iteration_id: int = Field(ge=0, description="Generation step (0 for an encoder or the prompt stage).")
    layer_id: int = Field(ge=0)
    head_id: int = Field(ge=0)
    head_dim: int = Field(ge=1, le=1024, description="D: the query/key/value length of one head.")
    seq_len: int = Field(ge=1, description="L: keys in the context before this layer's pruning.")
    num_queries: int = Field(default=1, ge=1, description="Queries computed in this record (1 per decode step).")
    key_fetch_num: int = Field(ge=1, description="Keys fetched after cascade token pruning (<= seq_len).")
    key_bits: int = Field(ge=1, le=32, description="Bits of the keys' first (MSB) fetch.")
    query_bits: int = Field(ge=1, le=32)
    requant_threshold: float = Field(ge=0.0, le=1.0, description="Refetch LSBs when max probability is below this.")
    requant: bool = Field(description="The LSBs were refetched and the scores recomputed.")
    requant_extra_bits: int = Field(ge=0, le=32, description="Bits of the LSB refetch.")
    value_fetch_num: int = Field(ge=0, description="V rows fetched after local value pruning (<= key_fetch_num).")
    value_bits: int = Field(ge=1, le=32)
    accumulate_importance: bool = Field(description="Token importance is accumulated from this head.")
    rescale_previous_importance: bool = Field(default=False)
    topk: bool = Field(description="A token top-k runs after this head (cascade token pruning).")
    topk_k: int = Field(ge=0, description="k of that top-k (tokens kept), <= key_fetch_num.")

    @model_validator(mode="after")
    def _check(self) -> HeadRecord:
        if self.key_fetch_num > self.seq_len:
            raise ValueError(f"key_fetch_num {self.key_fetch_num} > seq_len {self.seq_len}")
        if self.value_fetch_num > self.key_fetch_num:
            raise ValueError(f"value_fetch_num {self.value_fetch_num} > key_fetch_num {self.key_fetch_num}")
        if self.topk and not 1 <= self.topk_k <= self.key_fetch_num:
            raise ValueError(f"topk_k {self.topk_k} must be in 1..key_fetch_num ({self.key_fetch_num})")
        return self


class Workload(BaseModel):
    """An ordered list of head records, with the model they came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(default="unknown", description="Model name, for reports.")
    records: tuple[HeadRecord, ...]

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if not self.records:
            raise ValueError("a workload needs at least one record")
        return self

    def layers(self) -> dict[tuple[int, int], tuple[HeadRecord, ...]]:
        """(iteration, layer) -> its head records, in order."""
        out: dict[tuple[int, int], list[HeadRecord]] = {}
        for r in self.records:
            out.setdefault((r.iteration_id, r.layer_id), []).append(r)
        return {k: tuple(v) for k, v in out.items()}


def _number(text: str) -> int | float:
    """An int where the text is one, else a float (thresholds such as 0.05 or 1e-05)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _record(row: dict[str, str], where: str) -> HeadRecord:
    by_csv = {v: k for k, v in CSV_COLUMNS.items()}
    values: dict[str, object] = {}
    for col, raw in row.items():
        if col is None:
            raise WorkloadError(f"{where}: more values than header columns")
        name = by_csv.get(col.strip())
        if name is None:
            raise WorkloadError(f"{where}: unknown column {col!r}; expected columns {list(CSV_COLUMNS.values())}")
        text = (raw or "").strip()
        if text == "":
            if name in ("num_queries", "rescale_previous_importance"):
                continue
            raise WorkloadError(f"{where}: field {name} (column {col}) is empty")
        if name in _BOOL_FIELDS and text.lower() in ("true", "false"):
            values[name] = text.lower() == "true"
            continue
        try:
            values[name] = bool(int(text)) if name in _BOOL_FIELDS else _number(text)
        except ValueError:
            raise WorkloadError(f"{where}: field {name} (column {col}) is not a number: {text!r}") from None
    # The reference design's files write -1 for a setting that does not apply (no top-k, no requantization).
    for field, flag, unused in (
        ("topk_k", "topk", 0),
        ("requant_threshold", None, 0.0),
        ("requant_extra_bits", "requant", 0),
    ):
        if values.get(field) == -1 and (flag is None or not values.get(flag)):
            values[field] = unused
    try:
        return HeadRecord.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(map(str, err["loc"])) or "record"
        raise WorkloadError(f"{where}: field {field}: {err['msg']}") from None


def read_csv(source: str | Path | Iterable[str], model: str | None = None) -> Workload:
    """Read a workload CSV (ours or the reference design's columns); errors name the line and the field."""
    name = "<text>"
    if isinstance(source, str | Path) and not (isinstance(source, str) and "\n" in source):
        path = Path(source)
        if not path.is_file():
            raise WorkloadError(f"workload file {path} does not exist")
        name, lines = str(path), path.read_text().splitlines()
    elif isinstance(source, str):
        lines = source.splitlines()
    else:
        lines = list(source)
    lines = [ln for ln in lines if ln.strip()]
    reader = csv.DictReader(lines)
    if not lines or reader.fieldnames is None:
        raise WorkloadError(f"{name}: empty file, expected a header line")
    missing = [
        c for f, c in CSV_COLUMNS.items() if c not in reader.fieldnames and f not in ("num_queries",)
        and f != "rescale_previous_importance"
    ]  # fmt: skip
    if missing:
        raise WorkloadError(f"{name}: missing column(s) {missing}")
    records = [_record(row, f"{name} line {i + 2}") for i, row in enumerate(reader)]
    if not records:
        raise WorkloadError(f"{name}: no records after the header")
    return Workload(model=model or Path(name).stem, records=tuple(records))


def write_csv(workload: Workload | Sequence[HeadRecord], path: str | Path | None = None) -> str:
    """The workload as CSV text (written to `path` if given) with the reference column names."""
    records = workload.records if isinstance(workload, Workload) else tuple(workload)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS.values())
    for r in records:
        w.writerow([int(v) if isinstance(v, bool) else v for v in (getattr(r, f) for f in CSV_COLUMNS)])
    text = buf.getvalue()
    if path is not None:
        Path(path).write_text(text)
    return text
