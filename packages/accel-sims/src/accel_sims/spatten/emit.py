"""Workload records from a real model run with SpAtten on, for the simulator.

SpAtten (arXiv:2012.09852), Sec. 4: the accelerator's work per (layer, head) is the keys it fetches after cascade token
pruning, the V rows after local value pruning, the bit-widths of the fetches and whether the LSBs were refetched. Each
computed head of each layer (pruned heads cost nothing and get no record) becomes one `HeadRecord`; the last computed
head of a layer after which the cascade's top-k removes tokens carries `topk` with k = the tokens kept.

Counting rules, so the simulator reads the numbers the way they were meant:
- `seq_len`: an encoder's original real tokens; a decoder's context length (KV cache entries before pruning).
- `key_fetch_num`: keys the layer attends to after token pruning (one fetch serves all `num_queries` queries).
- `value_fetch_num`: V rows one query fetches (rounded-up mean over the queries of the record).
- `requant`: at least one query of the head refetched LSBs (the keys' LSBs are then fetched once for the head).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from accel_sims.errors import AccelSimsError, ModelLoadError
from accel_sims.models import BertModel, GPT2Model, LlamaModel, Model, load_model
from accel_sims.models.loading import read_config
from accel_sims.spatten.attention import LayerStats, SpAttenAttention, apply
from accel_sims.spatten.pruning import PruningConfig, cascade_schedule
from accel_sims.spatten.workload import HeadRecord, Workload


def records_from_stats(stats: Sequence[LayerStats], config: PruningConfig, row: int = 0) -> list[HeadRecord]:
    """One record per computed (iteration, layer, head) of batch row `row`."""
    if not stats:
        raise AccelSimsError("records_from_stats: no statistics (was the model run with SpAtten on?)")
    q = config.quantize
    token_pruning = any(r < 1.0 for r in config.token_keep_ratios) or config.important_size is not None
    out: list[HeadRecord] = []
    for s in stats:
        if not 0 <= row < s.seq_len.shape[0]:
            raise AccelSimsError(f"records_from_stats: row {row} outside the batch of {s.seq_len.shape[0]}")
        heads = [int(h) for h in s.head_alive[row].nonzero().flatten()]
        key_fetch = int(s.key_fetch[row])
        topk_k = 0 if s.topk_k is None else int(s.topk_k[row])
        for h in heads:
            last = h == heads[-1]
            out.append(
                HeadRecord(
                    iteration_id=s.iteration,
                    layer_id=s.layer,
                    head_id=h,
                    head_dim=s.head_dim,
                    seq_len=max(int(s.seq_len[row]), key_fetch),
                    num_queries=max(1, int(s.num_queries[row])),
                    key_fetch_num=key_fetch,
                    key_bits=config.key_msb_bits if q else config.key_bits,
                    query_bits=config.query_bits,
                    requant_threshold=config.requant_threshold if q else 0.0,
                    requant=bool(s.requant[row, h]) if q else False,
                    requant_extra_bits=config.requant_extra_bits if q else 0,
                    value_fetch_num=min(int(s.value_fetch[row, h]), key_fetch),
                    value_bits=config.value_msb_bits if q else config.value_bits,
                    accumulate_importance=token_pruning,
                    topk=last and topk_k > 0,
                    topk_k=topk_k if last else 0,
                )
            )
    return out


def workload_from_stats(
    stats: Sequence[LayerStats], config: PruningConfig, model: str = "unknown", row: int = 0
) -> Workload:
    """The `Workload` of batch row `row` of a run."""
    return Workload(model=model, records=tuple(records_from_stats(stats, config, row)))


def prune(
    folder: str | Path,
    config: PruningConfig,
    text: str | None = None,
    input_ids: Sequence[int] | None = None,
    generate: int = 0,
    max_tokens: int = 512,
) -> tuple[Workload, SpAttenAttention]:
    """Run the local Hugging Face model in `folder` on one input with SpAtten on and return its workload.

    The input is `input_ids`, or `text` tokenized with the folder's `tokenizer.json`. A decoder (GPT-2, Llama) then
    generates `generate` tokens greedily, one iteration each (iteration 0 is the prompt). Returns the workload and the
    attention object (its `.stats` hold the per-layer details).
    """
    model = load_model(folder)
    ids = _input_ids(folder, text, input_ids, max_tokens)
    if isinstance(model, BertModel) and generate:
        raise AccelSimsError(f"prune: generate={generate} but {folder} holds an encoder (BERT); use generate=0")
    with apply(model, config) as fn, torch.no_grad():
        _run(model, ids, generate)
    name = Path(folder).resolve().name
    return workload_from_stats(fn.stats, config, model=name), fn


def _run(model: Model, ids: torch.Tensor, generate: int) -> None:
    if isinstance(model, BertModel):
        model(ids)
        return
    assert isinstance(model, GPT2Model | LlamaModel)
    out = model(ids)
    for _ in range(generate):
        nxt = out.logits[:, -1:].argmax(-1)
        out = model(nxt, out.past_key_values)


def _input_ids(folder: str | Path, text: str | None, input_ids: Sequence[int] | None, max_tokens: int) -> torch.Tensor:
    if (text is None) == (input_ids is None):
        raise AccelSimsError("prune: give exactly one of text or input_ids")
    if input_ids is not None:
        ids = list(input_ids)
    else:
        tok_path = Path(folder) / "tokenizer.json"
        if not tok_path.is_file():
            raise ModelLoadError(f"{folder}: no tokenizer.json to tokenize the text; pass input_ids instead")
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(tok_path)).encode(text or "").ids
    if not ids:
        raise AccelSimsError("prune: the input is empty (no tokens)")
    if len(ids) > max_tokens:
        raise AccelSimsError(f"prune: the input has {len(ids)} tokens, more than max_tokens={max_tokens}")
    return torch.tensor([ids], dtype=torch.long)


def model_layers(folder: str | Path) -> int:
    """Number of layers of the model in `folder`, from its config.json (for building per-layer keep ratios)."""
    raw = read_config(folder)
    for key in ("num_hidden_layers", "n_layer"):
        if isinstance(raw.get(key), int) and raw[key] >= 1:
            return int(raw[key])
    raise ModelLoadError(f"{Path(folder) / 'config.json'}: no num_hidden_layers / n_layer")


def parse_ratios(spec: str, num_layers: int, name: str = "keep ratio") -> tuple[float, ...]:
    """A command-line keep-ratio spec: one number r (a cascade from 1.0 at layer 0 down to r at the last layer,
    `cascade_schedule`) or one comma-separated ratio per layer. Errors name `name` and the bad entry."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise AccelSimsError(f"{name}: empty; expected a ratio in (0, 1] or one per layer, comma-separated")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise AccelSimsError(f"{name}: {spec!r} is not a number or a comma-separated list of numbers") from None
    for i, v in enumerate(values):
        if not 0.0 < v <= 1.0:
            raise AccelSimsError(f"{name}: entry {i} = {v}; a keep ratio must be in (0, 1]")
    if len(values) == 1:
        return cascade_schedule(num_layers, values[0])
    if len(values) != num_layers:
        raise AccelSimsError(f"{name}: {len(values)} ratios given, the model has {num_layers} layers")
    return values
