"""Train the "small" Llama-layout model on the stdlib English text, on the CPU, for the QoQ demonstration.

Lin et al., "QServe" (arXiv 2405.04532), Sec. 6.2 compares W4A8KV4 perplexity against FP16; with no downloads we
first need a model trained on real text. This script trains a byte-level BPE (vocab of the "small" preset) and
the model with AdamW (linear warm-up, cosine decay) on the train split of :mod:`qserve.text_data`, evaluates the
validation and test perplexity (non-overlapping windows) against the add-one unigram baseline, and saves the HF
layout folder (config.json, model.safetensors, tokenizer.json) to ``--out``. A folder that is already there is
reused (evaluated, not retrained) unless ``--force``. Seeded and single-process, so reruns give the same weights.

    python packages/qserve/bench/train_tiny_llama.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qserve.config import LlamaConfig
from qserve.evaluation import perplexity, unigram_perplexity
from qserve.loading import load_model, save_model
from qserve.model import LlamaForCausalLM
from qserve.text_data import stdlib_splits
from qserve.tokenizer import Tokenizer, load_tokenizer, train_bpe_tokenizer

DEFAULT_OUT = Path(tempfile.gettempdir()) / "qserve-bench" / "small-llama"
RESULTS = Path(__file__).parent / "results" / "train_tiny_llama.json"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder (reused when present)")
    p.add_argument("--force", action="store_true", help="retrain even if --out holds a model")
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op (OMP) threads")
    p.add_argument("--eval-seq-len", type=int, default=128)
    p.add_argument("--json", type=Path, default=RESULTS, help="where to write the results JSON")
    return p.parse_args()


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))  # cosine down to 10%


def train(args: argparse.Namespace, tok: Tokenizer, train_ids: torch.Tensor, val_ids: torch.Tensor) -> LlamaForCausalLM:
    base = LlamaConfig.from_name(args.preset)
    config = base.model_copy(
        update={"vocab_size": tok.vocab_size, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    )
    config = LlamaConfig(**config.model_dump())  # re-validate the updated fields
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(args.seed)
    n = train_ids.numel() - args.seq_len - 1
    t0 = time.perf_counter()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        starts = torch.randint(0, n, (args.batch_size,), generator=gen)
        x = torch.stack([train_ids[s : s + args.seq_len + 1] for s in starts.tolist()])  # [B, T + 1]
        logits = model(x[:, :-1])  # [B, T, V]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            msg = f"step {step:4d}  loss {loss.item():.3f}  lr {lr_at(step, args):.2e}  {time.perf_counter() - t0:.0f}s"
            if step % 100 == 0 and step:
                msg += f"  val ppl (8 windows) {perplexity(model, val_ids, args.eval_seq_len, max_windows=8):.1f}"
            print(msg, flush=True)
    return model.eval()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    splits = stdlib_splits()
    out: Path = args.out
    reused = (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file() and not args.force
    if reused:
        tok = load_tokenizer(out)
    else:
        vocab = LlamaConfig.from_name(args.preset).vocab_size
        tok = train_bpe_tokenizer(splits.train, vocab)
    ids = {s: torch.tensor(tok.encode(splits.text(s)), dtype=torch.long) for s in ("train", "validation", "test")}
    print({s: v.numel() for s, v in ids.items()}, "tokens", flush=True)
    uni_val = unigram_perplexity(ids["train"], ids["validation"], tok.vocab_size)
    uni_test = unigram_perplexity(ids["train"], ids["test"], tok.vocab_size)
    print(f"unigram ppl: validation {uni_val:.1f}, test {uni_test:.1f}", flush=True)
    t_train = time.perf_counter()
    if reused:
        model = load_model(out)
    else:
        model = train(args, tok, ids["train"], ids["validation"])
        save_model(model, out, extra_files={"tokenizer.json": tok.to_json()})
    train_s = time.perf_counter() - t_train
    val_ppl = perplexity(model, ids["validation"], args.eval_seq_len)
    test_ppl = perplexity(model, ids["test"], args.eval_seq_len)
    print(f"model ppl (seq_len {args.eval_seq_len}): validation {val_ppl:.2f}, test {test_ppl:.2f}", flush=True)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
        },
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "reused_existing_model": reused,
        "out": str(out),
        "config": model.config.to_hf(),
        "num_parameters": model.config.num_parameters(),
        "hyperparameters": {
            k: getattr(args, k) for k in ("steps", "batch_size", "seq_len", "lr", "weight_decay", "warmup", "seed")
        },
        "corpus_chars": {s: len(splits.text(s)) for s in ("train", "validation", "test")},
        "corpus_tokens": {s: int(v.numel()) for s, v in ids.items()},
        "eval_seq_len": args.eval_seq_len,
        "unigram_ppl": {"validation": uni_val, "test": uni_test},
        "model_ppl": {"validation": val_ppl, "test": test_ppl},
        "train_wall_s": None if reused else round(train_s, 1),
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
