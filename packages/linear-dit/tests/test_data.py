"""Tests of the latent data set file and the synthetic class-conditional latents (linear_dit.data),
the training input of SANA-style flow matching (Xie et al., ICLR 2025, Sec. 2.3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linear_dit.data import (
    DATA_FORMAT,
    LatentDataset,
    load_latent_dataset,
    low_frequency_band,
    make_synthetic_dataset,
    save_latent_dataset,
)
from linear_dit.errors import InputError


def _small(**kw: object) -> LatentDataset:
    base: dict[str, object] = dict(num_classes=3, samples_per_class=5, height=6, width=10, seed=0)
    base.update(kw)
    return make_synthetic_dataset(**base)  # type: ignore[arg-type]


def _equal(a: LatentDataset, b: LatentDataset) -> bool:
    same = all(
        torch.equal(getattr(a, k), getattr(b, k))
        for k in ("latents", "text_states", "text_mask", "null_text_states", "null_text_mask")
    )
    labels = (a.labels is None and b.labels is None) or (
        a.labels is not None and b.labels is not None and torch.equal(a.labels, b.labels)
    )
    return same and labels and a.metadata == b.metadata


# ------------------------------------------------------------------------------------------
# file format
# ------------------------------------------------------------------------------------------


def test_round_trip_keeps_every_tensor_dtype_and_metadata(tmp_path: Path) -> None:
    data = _small()
    data = LatentDataset(
        data.latents,
        data.text_states.to(torch.bfloat16),  # the recommended storage for real encoder states
        data.text_mask.to(torch.uint8),  # 0/1 masks are accepted and stored as bool
        data.null_text_states,
        data.null_text_mask,
        data.labels,
        {**data.metadata, "note": "ünïcode"},
    )
    path = save_latent_dataset(data, tmp_path / "d.safetensors")
    back = load_latent_dataset(path)
    assert _equal(data, back)
    assert back.text_states.dtype == torch.bfloat16 and back.text_mask.dtype == torch.bool
    x, y, m = back.batch(torch.tensor([4, 0]))
    assert x.dtype == y.dtype == torch.float32 and m.dtype == torch.bool
    assert torch.equal(x, data.latents[[4, 0]])
    assert not list(tmp_path.glob("*.tmp"))


def test_round_trip_without_labels_and_video(tmp_path: Path) -> None:
    video = _small(frames=3)
    assert video.latents.shape == (15, 4, 3, 6, 10) and video.video
    unlabelled = LatentDataset(
        video.latents, video.text_states, video.text_mask, video.null_text_states, video.null_text_mask
    )
    back = load_latent_dataset(save_latent_dataset(unlabelled, tmp_path / "v.safetensors"))
    assert back.labels is None and back.num_classes == 0 and _equal(unlabelled, back)


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_latent_dataset(_small(), tmp_path / "d.safetensors")
    before = path.read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_latent_dataset(_small(seed=1), path)
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name != "d.safetensors"]


def test_truncated_or_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    path = save_latent_dataset(_small(), tmp_path / "d.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut.safetensors.*truncated or corrupt"):
        load_latent_dataset(cut)
    with pytest.raises(InputError, match="does not exist"):
        load_latent_dataset(tmp_path / "missing.safetensors")

    from safetensors.torch import save_file

    save_file({"latents": torch.zeros(1, 2, 2, 2)}, str(tmp_path / "other.safetensors"), metadata={"format": "x/1"})
    with pytest.raises(InputError, match=f"not a linear-dit latent data set.*{DATA_FORMAT}"):
        load_latent_dataset(tmp_path / "other.safetensors")


def _write_raw(path: Path, tensors: dict[str, torch.Tensor], **meta: str) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": DATA_FORMAT, "metadata": "{}", **meta})
    return path


def _raw(n: int = 3, length: int = 4, dim: int = 6) -> dict[str, torch.Tensor]:
    return {
        "latents": torch.randn(n, 2, 4, 4),
        "text_states": torch.randn(n, length, dim),
        "text_mask": torch.ones(n, length, dtype=torch.bool),
        "null_text_states": torch.randn(length, dim),
        "null_text_mask": torch.ones(length, dtype=torch.bool),
    }


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"text_states": torch.randn(2, 4, 6)}, r"text_states must be float \[N=3, L, D\]"),
        ({"text_mask": torch.ones(3, 5, dtype=torch.bool)}, r"text_mask must be \[N, L\] = \(3, 4\)"),
        ({"null_text_states": torch.randn(4, 7)}, r"null_text_states must be float \[L, D\] = \(4, 6\)"),
        ({"null_text_mask": torch.zeros(4, dtype=torch.bool)}, "null_text_mask keeps no token"),
        ({"text_mask": torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)}, r"samples \[1\]"),
        ({"latents": torch.randn(3, 2, 4)}, r"latents must be a float \[N,C,H,W\]"),
        ({"labels": torch.zeros(3, 1, dtype=torch.long)}, r"labels must be an integer tensor \[N=3\]"),
        ({"labels": torch.tensor([0.0, 1.0, 1.0])}, "labels must be an integer"),
        ({"extra": torch.zeros(1)}, r"unexpected keys \['extra'\]"),
    ],
)
def test_shape_mismatches_name_the_key(tmp_path: Path, change: dict[str, torch.Tensor], match: str) -> None:
    path = _write_raw(tmp_path / "bad.safetensors", {**_raw(), **change})
    with pytest.raises(InputError, match=match) as info:
        load_latent_dataset(path)
    assert "bad.safetensors" in str(info.value)


def test_missing_key_and_sample_count(tmp_path: Path) -> None:
    raw = _raw()
    del raw["null_text_mask"]
    with pytest.raises(InputError, match=r"missing keys \['null_text_mask'\]"):
        load_latent_dataset(_write_raw(tmp_path / "a.safetensors", raw))
    with pytest.raises(InputError, match="header says 5 samples, latents hold 3"):
        load_latent_dataset(_write_raw(tmp_path / "b.safetensors", _raw(), num_samples="5"))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), length=st.integers(1, 5), dim=st.integers(1, 4), cut=st.integers(0, 4))
def test_constructor_accepts_consistent_shapes_and_rejects_a_wrong_length(
    n: int, length: int, dim: int, cut: int
) -> None:
    raw = _raw(n, length, dim)
    data = LatentDataset(
        *(raw[k] for k in ("latents", "text_states", "text_mask", "null_text_states", "null_text_mask"))
    )
    assert len(data) == n and data.text_length == length and data.caption_channels == dim
    other = length + cut + 1
    with pytest.raises(InputError):
        LatentDataset(raw["latents"], raw["text_states"], raw["text_mask"], torch.randn(other, dim), torch.ones(other))


# ------------------------------------------------------------------------------------------
# synthetic data
# ------------------------------------------------------------------------------------------


def test_synthetic_set_is_seeded_labelled_and_near_unit_variance() -> None:
    a, b = _small(), _small()
    assert _equal(a, b)
    assert not torch.equal(a.latents, _small(seed=1).latents)
    assert a.labels is not None and a.labels.bincount().tolist() == [5, 5, 5]
    assert a.latents.shape == (15, 4, 6, 10) and a.text_states.shape == (15, 8, 24)
    assert 0.6 < float(a.latents.std()) < 1.6
    lengths = a.text_mask.sum(1)
    assert int(lengths.min()) >= 1 and len(lengths.unique()) > 1  # variable caption lengths
    assert torch.equal(a.text_states[~a.text_mask], torch.zeros_like(a.text_states[~a.text_mask]))
    assert int(a.null_text_mask.sum()) == 2
    json.dumps(a.metadata)


def test_classes_share_a_caption_and_differ_in_structure() -> None:
    data = make_synthetic_dataset(num_classes=4, samples_per_class=40, seed=3)
    assert data.labels is not None
    freqs = [tuple(map(tuple, c["frequencies"])) for c in data.metadata["classes"]]
    assert len(set(freqs)) == 4
    band = low_frequency_band(8, 8)
    assert len(band) == 12 and all(tuple(f) in band for pair in freqs for f in pair)
    spectrum = torch.fft.fft2(data.latents).abs().pow(2).sum(1)  # [N, H, W]
    for k, pair in enumerate(freqs):
        mine = spectrum[data.labels == k].mean(0)
        # Each class's own gratings carry far more energy than a frequency no class of this set uses.
        unused = [f for f in band if all(f not in p for p in freqs)]
        for u, v in pair:
            assert mine[u % 8, v % 8] > 20 * max(mine[uu % 8, vv % 8] for uu, vv in unused)
    # Captions: within a class, one base sequence plus small jitter; across classes, unrelated.
    first = [data.text_states[data.labels == k][:, 0] for k in range(4)]
    within = (first[0][0] - first[0][1]).norm()
    across = (first[0][0] - first[1][0]).norm()
    assert within < 0.3 * across


def test_same_classes_with_a_new_seed_give_fresh_samples() -> None:
    a = make_synthetic_dataset(num_classes=3, samples_per_class=4, seed=0, class_seed=7)
    b = make_synthetic_dataset(num_classes=3, samples_per_class=4, seed=1, class_seed=7)
    assert a.metadata["classes"] == b.metadata["classes"]
    assert torch.equal(a.null_text_states, b.null_text_states)
    assert not torch.equal(a.latents, b.latents)


def test_synthetic_rejects_impossible_settings() -> None:
    with pytest.raises(InputError, match="num_classes must be in"):
        make_synthetic_dataset(num_classes=100)
    with pytest.raises(InputError, match="samples_per_class"):
        make_synthetic_dataset(samples_per_class=0)


def test_split_is_stratified_disjoint_and_seeded() -> None:
    data = _small(samples_per_class=10)
    train, val = data.split(0.2, seed=4)
    assert len(train) + len(val) == len(data)
    assert val.labels is not None and val.labels.bincount().tolist() == [2, 2, 2]
    rows = {tuple(x.flatten().tolist()) for x in train.latents} & {tuple(x.flatten().tolist()) for x in val.latents}
    assert not rows
    again, _ = data.split(0.2, seed=4)
    assert torch.equal(again.latents, train.latents)
    with pytest.raises(InputError, match="val_fraction"):
        data.split(1.0)
