"""Tokenizers from a Hugging Face ``tokenizer.json`` (via the ``tokenizers`` library), and byte-level BPE training.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 6: perplexity and serving run on the models' own tokenizers, which HF folders ship as ``tokenizer.json``.
The special-token ids come from ``config.json`` when it names them, else from ``tokenizer_config.json``.
:func:`train_bpe_tokenizer` builds the byte-level BPE of our small demonstration model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from qserve.errors import CheckpointError, InputError

__all__ = ["Tokenizer", "load_tokenizer", "train_bpe_tokenizer"]

TOKENIZER_NAME = "tokenizer.json"
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = ("<unk>", "<s>", "</s>")


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with the model's bos/eos ids."""

    def __init__(self, inner: HFTokenizer, bos_token_id: int | None = None, eos_token_id: int | None = None) -> None:
        self.inner = inner
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return int(self.inner.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text`` (no special tokens, the bos id first when ``add_bos``)."""
        ids = list(self.inner.encode(text, add_special_tokens=False).ids)
        if add_bos:
            if self.bos_token_id is None:
                raise InputError("add_bos=True but this tokenizer has no bos token")
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        return str(self.inner.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token`` or None."""
        tid = self.inner.token_to_id(token)
        return None if tid is None else int(tid)

    def to_json(self) -> str:
        """The ``tokenizer.json`` content."""
        return str(self.inner.to_str())

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/tokenizer.json``."""
        path = Path(folder) / TOKENIZER_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path


def _token_content(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return str(entry["content"])
    return None


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """Load ``folder/tokenizer.json``; bos/eos ids from ``config.json``, else from ``tokenizer_config.json``."""
    folder = Path(folder)
    path = folder / TOKENIZER_NAME
    if not path.is_file():
        raise CheckpointError(f"tokenizer folder {folder} has no {TOKENIZER_NAME}")
    try:
        inner = HFTokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a plain Exception for malformed files
        raise CheckpointError(f"{path} is not a valid tokenizers file: {e}") from e
    tok = Tokenizer(inner)
    tc_path = folder / "tokenizer_config.json"
    if tc_path.is_file():
        tc = json.loads(tc_path.read_text())
        for attr, key in (("bos_token_id", "bos_token"), ("eos_token_id", "eos_token")):
            content = _token_content(tc.get(key))
            tid = None if content is None else inner.token_to_id(content)
            if tid is not None:
                setattr(tok, attr, int(tid))
    cfg_path = folder / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        if isinstance(cfg.get("bos_token_id"), int):
            tok.bos_token_id = cfg["bos_token_id"]
        eos = cfg.get("eos_token_id")
        if isinstance(eos, list) and eos:
            eos = eos[0]
        if isinstance(eos, int):
            tok.eos_token_id = eos
    return tok


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS
) -> Tokenizer:
    """Train a byte-level BPE of ``vocab_size`` ids on ``texts`` (special tokens first: ids 0, 1, 2, ...).

    With the default special tokens ``<s>`` is bos (1) and ``</s>`` eos (2). Every byte is in the base alphabet,
    so any text encodes and decodes back exactly.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(special_tokens):
        raise InputError(
            f"vocab_size must cover the {len(alphabet)} bytes and {len(special_tokens)} special tokens, "
            f"found {vocab_size}"
        )
    inner = HFTokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(special_tokens), initial_alphabet=alphabet, show_progress=False
    )
    inner.train_from_iterator(texts, trainer=trainer)
    bos = inner.token_to_id("<s>")
    eos = inner.token_to_id("</s>")
    return Tokenizer(inner, None if bos is None else int(bos), None if eos is None else int(eos))
