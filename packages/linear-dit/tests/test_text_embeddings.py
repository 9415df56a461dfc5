"""Text-embedding files: round trip, broadcasting of a shared negative, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from linear_dit import InputError
from linear_dit.text_embeddings import TextEmbeddings, load_text_embeddings, save_text_embeddings


def test_round_trip_with_shared_negative(tmp_path: Path) -> None:
    states, mask = torch.randn(3, 7, 16), torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    neg = torch.randn(5, 16)  # one [L, D] sequence for every prompt
    path = save_text_embeddings(tmp_path / "p.safetensors", states, mask, negative_hidden_states=neg)
    emb = load_text_embeddings(path)
    assert torch.equal(emb.hidden_states, states) and torch.equal(emb.attention_mask, mask)
    assert emb.negative_hidden_states is not None and emb.negative_hidden_states.shape == (1, 5, 16)
    pair = emb.negative_for(slice(1, 3))
    assert pair is not None and pair[0].shape == (2, 5, 16) and bool(pair[1].all())


def test_single_prompt_without_mask(tmp_path: Path) -> None:
    emb = load_text_embeddings(save_text_embeddings(tmp_path / "one.safetensors", torch.randn(4, 8)))
    assert emb.batch == 1 and emb.attention_mask.shape == (1, 4) and emb.negative_for(slice(0, 1)) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attention_mask": torch.ones(2, 6)}, r"mask must be \[B, L\] = \(2, 5\)"),
        ({"attention_mask": torch.zeros(2, 5)}, "masks every token"),
        ({"attention_mask": torch.full((2, 5), 3)}, "only 0/1"),
        ({"negative_hidden_states": torch.randn(1, 5, 9)}, "same text encoder"),
        ({"negative_hidden_states": torch.randn(3, 5, 8)}, "1 or 2"),
        ({"negative_attention_mask": torch.ones(1, 5)}, "without negative_hidden_states"),
    ],
)
def test_bad_embeddings(kwargs: dict[str, torch.Tensor], message: str) -> None:
    args = {"hidden_states": torch.randn(2, 5, 8), "attention_mask": torch.ones(2, 5)} | kwargs
    with pytest.raises(InputError, match=message):
        TextEmbeddings(**args)


def test_bad_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(InputError, match="no text-embedding file"):
        load_text_embeddings(tmp_path / "missing.safetensors")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"prompt": torch.randn(2, 3)}, str(wrong))
    with pytest.raises(InputError, match="must hold 'encoder_hidden_states'"):
        load_text_embeddings(wrong)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="corrupt"):
        load_text_embeddings(corrupt)
