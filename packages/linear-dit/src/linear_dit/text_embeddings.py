"""Text-embedding files: the conditioning input of sampling, kept apart from any text encoder.

SANA (Xie et al., ICLR 2025), Sec. 2.3 conditions the Linear DiT on the last hidden states of a
decoder-only LLM (Gemma-2-2B-IT, 2304 channels, up to 300 tokens) plus their padding mask. This
package never runs the encoder: users encode prompts once with whatever stack they have and save
the states with :func:`save_text_embeddings`; ``linear-dit sample`` reads them back. A Hugging Face
encoder plugs in like this (run where ``transformers`` and the weights are available)::

    tok = AutoTokenizer.from_pretrained(path)
    enc = AutoModelForCausalLM.from_pretrained(path).model
    batch = tok(prompts, max_length=300, padding="max_length", truncation=True, return_tensors="pt")
    states = enc(**batch).last_hidden_state  # [B, 300, 2304]
    save_text_embeddings(
        "prompts.safetensors", states, batch.attention_mask, negative_hidden_states=..., negative_attention_mask=...
    )  # e.g. the states of ""

The file is one safetensors with ``encoder_hidden_states [B, L, D]``, ``encoder_attention_mask
[B, L]`` and optionally ``negative_hidden_states [1 or B, L', D]`` / ``negative_attention_mask``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from linear_dit.errors import InputError

__all__ = ["TextEmbeddings", "load_text_embeddings", "save_text_embeddings"]

_FORMAT = "linear_dit.text_embeddings/1"
_KEYS = {"encoder_hidden_states", "encoder_attention_mask", "negative_hidden_states", "negative_attention_mask"}


@dataclass(frozen=True)
class TextEmbeddings:
    """Prompt states ``[B, L, D]`` with mask ``[B, L]``, and an optional unconditional (negative) pair."""

    hidden_states: torch.Tensor
    attention_mask: torch.Tensor
    negative_hidden_states: torch.Tensor | None = None
    negative_attention_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check_pair(self.hidden_states, self.attention_mask, "encoder")
        if self.negative_hidden_states is None:
            if self.negative_attention_mask is not None:
                raise InputError("negative_attention_mask given without negative_hidden_states")
            return
        neg_mask = self.negative_attention_mask
        if neg_mask is None:
            neg_mask = torch.ones(self.negative_hidden_states.shape[:2], dtype=torch.long)
            object.__setattr__(self, "negative_attention_mask", neg_mask)
        _check_pair(self.negative_hidden_states, neg_mask, "negative")
        if self.negative_hidden_states.shape[2] != self.hidden_states.shape[2]:
            raise InputError(
                f"negative_hidden_states have width {self.negative_hidden_states.shape[2]}, the prompts "
                f"{self.hidden_states.shape[2]}: both must come from the same text encoder"
            )
        if self.negative_hidden_states.shape[0] not in (1, self.hidden_states.shape[0]):
            raise InputError(
                f"negative_hidden_states must hold 1 or {self.hidden_states.shape[0]} (one per prompt) sequences, "
                f"found {self.negative_hidden_states.shape[0]}"
            )

    @property
    def batch(self) -> int:
        return self.hidden_states.shape[0]

    def negative_for(self, indices: slice) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The negative pair for prompts ``indices``, broadcast from a single shared sequence."""
        if self.negative_hidden_states is None or self.negative_attention_mask is None:
            return None
        n = len(range(*indices.indices(self.batch)))
        if self.negative_hidden_states.shape[0] == 1:
            return (
                self.negative_hidden_states.expand(n, -1, -1),
                self.negative_attention_mask.expand(n, -1),
            )
        return self.negative_hidden_states[indices], self.negative_attention_mask[indices]


def _check_pair(states: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    if states.ndim != 3 or not states.is_floating_point():
        raise InputError(
            f"{what} hidden states must be a float [B, L, D] tensor, found {tuple(states.shape)} {states.dtype}"
        )
    if tuple(mask.shape) != tuple(states.shape[:2]):
        raise InputError(f"{what} attention mask must be [B, L] = {tuple(states.shape[:2])}, found {tuple(mask.shape)}")
    if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
        raise InputError(f"{what} attention mask must hold only 0/1")
    if not bool((mask != 0).any(dim=1).all()):
        raise InputError(f"{what} attention mask masks every token of some sequence")


def save_text_embeddings(
    path: str | os.PathLike[str],
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    negative_hidden_states: torch.Tensor | None = None,
    negative_attention_mask: torch.Tensor | None = None,
) -> Path:
    """Write prompt (and optional negative) states atomically; 2-D ``[L, D]`` states mean one prompt."""
    from safetensors.torch import save_file

    from linear_dit._io import atomic_output

    def batched(t: torch.Tensor | None, dims: int) -> torch.Tensor | None:
        return t.unsqueeze(0) if t is not None and t.ndim == dims - 1 else t

    states = batched(hidden_states, 3)
    assert states is not None
    mask = batched(attention_mask, 2)
    emb = TextEmbeddings(
        states,
        torch.ones(states.shape[:2], dtype=torch.long) if mask is None else mask,
        batched(negative_hidden_states, 3),
        batched(negative_attention_mask, 2),
    )
    tensors = {
        "encoder_hidden_states": emb.hidden_states,
        "encoder_attention_mask": emb.attention_mask.to(torch.int64),
    }
    if emb.negative_hidden_states is not None and emb.negative_attention_mask is not None:
        tensors["negative_hidden_states"] = emb.negative_hidden_states
        tensors["negative_attention_mask"] = emb.negative_attention_mask.to(torch.int64)
    dest = Path(path)
    with atomic_output(dest) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": _FORMAT}
        )
    return dest


def load_text_embeddings(path: str | os.PathLike[str]) -> TextEmbeddings:
    """Read a file written by :func:`save_text_embeddings` (or by hand with the same tensor names)."""
    from linear_dit._io import read_safetensors

    p = Path(path)
    if not p.is_file():
        raise InputError(f"no text-embedding file at {p}")
    tensors, _ = read_safetensors(p, InputError, "text-embedding file")
    unknown = sorted(set(tensors) - _KEYS)
    if "encoder_hidden_states" not in tensors or unknown:
        raise InputError(
            f"text-embedding file {p} must hold 'encoder_hidden_states' (and optionally 'encoder_attention_mask', "
            f"'negative_hidden_states', 'negative_attention_mask'); found {sorted(tensors)}"
        )
    states = tensors["encoder_hidden_states"]
    if states.ndim == 2:
        states = states.unsqueeze(0)
    mask = tensors.get("encoder_attention_mask")
    if mask is None:
        mask = torch.ones(states.shape[:2], dtype=torch.long)
    elif mask.ndim == 1:
        mask = mask.unsqueeze(0)
    neg, neg_mask = tensors.get("negative_hidden_states"), tensors.get("negative_attention_mask")
    if neg is not None and neg.ndim == 2:
        neg = neg.unsqueeze(0)
    if neg_mask is not None and neg_mask.ndim == 1:
        neg_mask = neg_mask.unsqueeze(0)
    try:
        return TextEmbeddings(states, mask, neg, neg_mask)
    except InputError as e:
        raise InputError(f"text-embedding file {p}: {e}") from None
