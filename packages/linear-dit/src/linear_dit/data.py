"""Latent data sets for training the Linear DiT, and a synthetic class-conditional one.

SANA (Xie et al., ICLR 2025), Sec. 2 trains the Linear DiT on DC-AE latents of images with the
Gemma-2-2B-IT hidden states of their captions. Both encoders are frozen, so their outputs can be
computed once and stored; training then reads only tensors. This module defines that file:

one safetensors file holding

=====================  ======================  ===============================================
key                    shape, dtype            meaning
=====================  ======================  ===============================================
``latents``            [N,C,H,W] or [N,C,T,H,W]  scaled autoencoder latents (float)
``text_states``        [N,L,D] float           text-encoder hidden states, padded to L
``text_mask``          [N,L] bool              1 keeps a token, 0 is padding (>= 1 kept)
``null_text_states``   [L,D] float             the encoder's output for the empty prompt ""
``null_text_mask``     [L] bool                its mask; replaces a caption for CFG dropout
``labels``             [N] int64 (optional)    class labels (the synthetic set, evaluation)
=====================  ======================  ===============================================

and ``__metadata__`` with ``format`` (``linear_dit_latents/1``), ``num_samples`` and ``metadata``
(a JSON object: where the data came from). Writes are atomic; a truncated file, a missing or
unexpected key, or shapes that disagree are :class:`~linear_dit.errors.InputError` naming the
file and the key. The whole file is read into memory (store ``text_states`` in bfloat16 to halve
it; batches are returned in float32).

Plugging in real encoders (run once, where ``transformers`` and the weights are available; this
package never downloads or runs them)::

    import torch, dc_ae
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from linear_dit.data import LatentDataset, save_latent_dataset

    tok = AutoTokenizer.from_pretrained("/models/gemma-2-2b-it")  # local path
    tok.padding_side = "right"
    gemma = AutoModelForCausalLM.from_pretrained("/models/gemma-2-2b-it", torch_dtype=torch.bfloat16).get_decoder()


    def encode(prompts):  # last hidden state, 2304-d, max length 300 (SANA)
        b = tok(prompts, max_length=300, padding="max_length", truncation=True, return_tensors="pt")
        with torch.no_grad():
            states = gemma(input_ids=b.input_ids, attention_mask=b.attention_mask).last_hidden_state
        return states, b.attention_mask.bool()


    ae = dc_ae.load("/models/dc-ae-f32c32-sana-1.1.safetensors")
    with torch.no_grad():
        z = ae.encode(images) * ae.scaling_factor  # images [N,3,H,W] in [-1, 1]; SANA scales by 0.41407
    states, mask = encode(captions)
    null_states, null_mask = encode([""])
    save_latent_dataset(
        LatentDataset(
            z,
            states.to(torch.bfloat16),
            mask,
            null_states[0],
            null_mask[0],
            metadata={"encoder": "gemma-2-2b-it", "autoencoder": "dc-ae-f32c32-sana-1.1"},
        ),
        "train.safetensors",
    )

(SANA's complex-human-instruction prefix, if wanted, is prepended to the prompt before encoding;
the model only sees the resulting states.)

:func:`make_synthetic_dataset` generates a small class-conditional set with the same layout, for
tests, benchmarks and :mod:`linear_dit.quality`: each class is a distinct structured latent
distribution with a fixed random "caption" embedding.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from linear_dit._io import atomic_output, read_safetensors
from linear_dit.errors import CheckpointError, InputError

__all__ = [
    "DATA_FORMAT",
    "LatentDataset",
    "load_latent_dataset",
    "low_frequency_band",
    "make_synthetic_dataset",
    "save_latent_dataset",
]

DATA_FORMAT = "linear_dit_latents/1"
_REQUIRED = ("latents", "text_states", "text_mask", "null_text_states", "null_text_mask")
_OPTIONAL = ("labels",)


def _shape(t: object) -> object:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def _as_mask(m: torch.Tensor, what: str) -> torch.Tensor:
    if m.dtype == torch.bool:
        return m
    if m.is_floating_point() or m.is_complex():
        raise InputError(f"{what} must be bool or integer 0/1, got dtype {m.dtype}")
    if bool(((m != 0) & (m != 1)).any()):
        raise InputError(f"{what} must hold only 0/1 (1 keeps a token)")
    return m != 0


@dataclass(frozen=True)
class LatentDataset:
    """Latents with their text conditioning, the null (empty-prompt) text, optional labels.

    See the module docstring for the shapes. Construction checks that they agree and that every
    sample (and the null text) keeps at least one token; masks may be given as 0/1 integers and
    are stored as booleans.
    """

    latents: torch.Tensor
    text_states: torch.Tensor
    text_mask: torch.Tensor
    null_text_states: torch.Tensor
    null_text_mask: torch.Tensor
    labels: torch.Tensor | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        z, y = self.latents, self.text_states
        tensors = {
            "latents": z,
            "text_states": y,
            "text_mask": self.text_mask,
            "null_text_states": self.null_text_states,
            "null_text_mask": self.null_text_mask,
        }
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise InputError(f"{name} must be a tensor, got {type(t).__name__}")
        if z.ndim not in (4, 5) or not z.is_floating_point():
            raise InputError(f"latents must be a float [N,C,H,W] or [N,C,T,H,W] tensor, got {z.dtype} {_shape(z)}")
        n = z.shape[0]
        if n == 0:
            raise InputError("a latent data set needs at least one sample, got 0")
        if y.ndim != 3 or y.shape[0] != n or not y.is_floating_point():
            raise InputError(f"text_states must be float [N={n}, L, D], got {y.dtype} {_shape(y)}")
        _, length, dim = y.shape
        if tuple(self.text_mask.shape) != (n, length):
            raise InputError(f"text_mask must be [N, L] = {(n, length)} like text_states, got {_shape(self.text_mask)}")
        if tuple(self.null_text_states.shape) != (length, dim) or not self.null_text_states.is_floating_point():
            raise InputError(
                f"null_text_states must be float [L, D] = {(length, dim)} like one sample's text states, "
                f"got {self.null_text_states.dtype} {_shape(self.null_text_states)}"
            )
        if tuple(self.null_text_mask.shape) != (length,):
            raise InputError(f"null_text_mask must be [L] = ({length},), got {_shape(self.null_text_mask)}")
        mask = _as_mask(self.text_mask, "text_mask")
        null_mask = _as_mask(self.null_text_mask, "null_text_mask")
        empty = (~mask.any(dim=1)).nonzero().flatten()
        if len(empty):
            raise InputError(f"text_mask keeps no token for samples {empty[:5].tolist()}; keep at least one each")
        if not bool(null_mask.any()):
            raise InputError("null_text_mask keeps no token; the empty prompt's states need at least one (e.g. BOS)")
        object.__setattr__(self, "text_mask", mask)
        object.__setattr__(self, "null_text_mask", null_mask)
        if self.labels is not None:
            lab = self.labels
            if not isinstance(lab, torch.Tensor) or lab.shape != (n,) or lab.is_floating_point():
                raise InputError(f"labels must be an integer tensor [N={n}], got {_shape(lab)}")
            if bool((lab < 0).any()):
                raise InputError(f"labels must be >= 0, got min {int(lab.min())}")
            object.__setattr__(self, "labels", lab.long())
        if not isinstance(self.metadata, dict):
            raise InputError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as e:
            raise InputError(f"metadata must be JSON-serialisable: {e}") from None

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent: ``(C, H, W)`` or ``(C, T, H, W)``."""
        return tuple(self.latents.shape[1:])

    @property
    def video(self) -> bool:
        return self.latents.ndim == 5

    @property
    def text_length(self) -> int:
        return int(self.text_states.shape[1])

    @property
    def caption_channels(self) -> int:
        return int(self.text_states.shape[2])

    @property
    def num_classes(self) -> int:
        """``max(label) + 1`` (0 without labels)."""
        return 0 if self.labels is None else int(self.labels.max()) + 1

    def subset(self, indices: torch.Tensor | list[int]) -> LatentDataset:
        """The samples at ``indices`` (in that order), sharing the null text and metadata."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return LatentDataset(
            self.latents[idx],
            self.text_states[idx],
            self.text_mask[idx],
            self.null_text_states,
            self.null_text_mask,
            None if self.labels is None else self.labels[idx],
            dict(self.metadata),
        )

    def split(self, val_fraction: float, seed: int = 0) -> tuple[LatentDataset, LatentDataset]:
        """``(train, validation)`` with a seeded random ``val_fraction`` of the samples held out.

        With labels the split is stratified: each class gives ``round(val_fraction * n_class)``
        samples (at least one when it has two or more), so both parts see every class.
        """
        if not 0.0 < val_fraction < 1.0:
            raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
        g = torch.Generator().manual_seed(seed)
        groups = (
            [torch.arange(len(self))]
            if self.labels is None
            else [(self.labels == c).nonzero().flatten() for c in range(self.num_classes)]
        )
        val: list[torch.Tensor] = []
        train: list[torch.Tensor] = []
        for members in groups:
            if len(members) == 0:
                continue
            perm = members[torch.randperm(len(members), generator=g)]
            k = round(val_fraction * len(perm))
            k = min(max(k, 1 if len(perm) >= 2 else 0), len(perm) - 1)
            val.append(perm[:k])
            train.append(perm[k:])
        tr, va = torch.cat(train).sort().values, torch.cat(val).sort().values
        if len(va) == 0:
            raise InputError(f"val_fraction {val_fraction} of {len(self)} samples holds out nothing")
        return self.subset(tr), self.subset(va)

    def batch(
        self, indices: torch.Tensor, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(latents, text_states, text_mask)`` of ``indices`` in float32 (mask bool) on ``device``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return (
            self.latents[idx].to(device=device, dtype=torch.float32),
            self.text_states[idx].to(device=device, dtype=torch.float32),
            self.text_mask[idx].to(device=device),
        )


def save_latent_dataset(dataset: LatentDataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` to one safetensors file at ``path`` atomically; returns the path."""
    from safetensors.torch import save_file

    tensors = {
        "latents": dataset.latents,
        "text_states": dataset.text_states,
        "text_mask": dataset.text_mask,
        "null_text_states": dataset.null_text_states,
        "null_text_mask": dataset.null_text_mask,
    }
    if dataset.labels is not None:
        tensors["labels"] = dataset.labels
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": DATA_FORMAT, "num_samples": str(len(dataset)), "metadata": json.dumps(dataset.metadata)}
    dest = Path(path)
    with atomic_output(dest) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return dest


def load_latent_dataset(path: str | os.PathLike[str]) -> LatentDataset:
    """Read a file written by :func:`save_latent_dataset` (strict about format, keys and shapes)."""
    src = Path(path)
    if not src.is_file():
        raise InputError(f"latent data set {src} does not exist or is not a file")
    try:
        tensors, meta = read_safetensors(src)
    except CheckpointError as e:
        raise InputError(f"cannot read latent data set {src}: {e}") from None
    fmt = meta.get("format")
    if fmt != DATA_FORMAT:
        raise InputError(f"{src} is not a linear-dit latent data set (format {fmt!r}, expected {DATA_FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in tensors]
    unexpected = sorted(set(tensors) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unexpected:
        raise InputError(f"latent data set {src}: missing keys {missing}, unexpected keys {unexpected}")
    try:
        metadata = json.loads(meta.get("metadata", "{}"))
    except json.JSONDecodeError as e:
        raise InputError(f"latent data set {src}: metadata is not valid JSON ({e})") from None
    stated = meta.get("num_samples")
    if stated is not None and stated != str(tensors["latents"].shape[0]):
        raise InputError(
            f"latent data set {src}: header says {stated} samples, latents hold {tensors['latents'].shape[0]}"
        )
    try:
        return LatentDataset(
            tensors["latents"],
            tensors["text_states"],
            tensors["text_mask"],
            tensors["null_text_states"],
            tensors["null_text_mask"],
            tensors.get("labels"),
            metadata if isinstance(metadata, dict) else {"metadata": metadata},
        )
    except InputError as e:
        raise InputError(f"latent data set {src}: {e}") from None


# ------------------------------------------------------------------------------------------
# synthetic class-conditional latents
# ------------------------------------------------------------------------------------------


def low_frequency_band(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial frequencies ``(u, v)`` (cycles per latent along H and W) of the synthetic gratings.

    The half-plane ``0 <= u <= r``, ``-r <= v <= r`` without the DC term and without duplicates
    ``(0, -v)``, with ``r = 2`` (``1`` for latents smaller than 6 on a side): well below the
    Nyquist limit, so every grating is a clean peak of the 2-D DFT. 12 frequencies for ``r = 2``.
    """
    r = 2 if min(height, width) >= 6 else 1
    return [(u, v) for u in range(r + 1) for v in range(-r, r + 1) if u > 0 or v > 0]


def make_synthetic_dataset(
    *,
    num_classes: int = 4,
    samples_per_class: int = 64,
    channels: int = 4,
    height: int = 8,
    width: int = 8,
    frames: int | None = None,
    caption_channels: int = 24,
    text_length: int = 8,
    noise_std: float = 0.3,
    seed: int = 0,
    class_seed: int | None = None,
) -> LatentDataset:
    """A class-conditional latent data set whose classes are distinct structured distributions.

    Class ``k`` (its parameters drawn from ``class_seed``, default ``seed``) has

    * a colour: a mean per channel, ``N(0, 0.5^2)``;
    * two gratings ``a_j[c] * A_j * cos(2 pi (u_j h / H + v_j w / W) + phi_j)`` at a class-specific
      pair of frequencies from :func:`low_frequency_band` (distinct pairs across classes) with
      class-specific channel loadings ``a_j`` (unit RMS over channels) and amplitudes 1.0 and 0.7;
      for video, each grating also drifts at a class-specific temporal frequency;
    * a caption: a fixed random sequence of ``L_k`` tokens (``L_k`` in ``[L/2, L]``), ``N(0, 1)``.

    Each sample draws its own phases ``phi_j ~ U(0, 2 pi)`` (so the class is a 2-torus of
    images, not one image), amplitude jitter ``x (1 + 0.15 n)``, colour jitter ``0.1 n`` and
    i.i.d. noise ``noise_std * n``; its caption is the class's with up to two trailing tokens
    dropped (variable lengths, masked) plus ``0.1 n`` jitter. The null text (empty prompt) is a
    fixed random sequence of ``min(2, L)`` tokens. Latents have about unit variance, like scaled
    autoencoder latents. Samples are ordered class by class; :meth:`LatentDataset.split` holds
    some out. Two calls with the same ``class_seed`` and different ``seed`` give new samples of
    the same classes (a fresh held-out set).
    """
    h, w = height, width
    band = low_frequency_band(h, w)
    pairs = [(i, j) for i in range(len(band)) for j in range(i + 1, len(band))]
    if num_classes < 1 or num_classes > len(pairs):
        raise InputError(f"num_classes must be in [1, {len(pairs)}] for {h}x{w} latents, got {num_classes}")
    for name, v in {"samples_per_class": samples_per_class, "channels": channels, "text_length": text_length}.items():
        if v < 1:
            raise InputError(f"{name} must be >= 1, got {v}")
    if frames is not None and frames < 1:
        raise InputError(f"frames must be >= 1 or None (images), got {frames}")
    if min(h, w) < 2:
        raise InputError(f"latents must be at least 2x2, got {h}x{w}")

    gc = torch.Generator().manual_seed(seed if class_seed is None else class_seed)
    gs = torch.Generator().manual_seed(seed + 0x9E3779B1)
    order = torch.randperm(len(pairs), generator=gc)[:num_classes]
    t_len = frames or 1
    hh = torch.arange(h, dtype=torch.float64)[:, None] / h
    ww = torch.arange(w, dtype=torch.float64)[None, :] / w
    tt = torch.arange(t_len, dtype=torch.float64)[:, None, None] / t_len
    amps = (1.0, 0.7)
    null_len = min(2, text_length)

    latents, states, masks, labels, classes = [], [], [], [], []
    for k in range(num_classes):
        colour = torch.randn(channels, generator=gc, dtype=torch.float64) * 0.5
        freqs = [band[int(i)] for i in pairs[int(order[k])]]
        loadings = []
        for _ in freqs:
            a = torch.randn(channels, generator=gc, dtype=torch.float64)
            loadings.append(a / a.pow(2).mean().sqrt())
        drift = torch.randint(-1, 2, (2,), generator=gc).tolist() if frames else [0, 0]
        base_len = int(torch.randint(max(1, text_length // 2), text_length + 1, (1,), generator=gc))
        caption = torch.randn(base_len, caption_channels, generator=gc, dtype=torch.float64)
        classes.append({"frequencies": [list(f) for f in freqs], "temporal_drift": drift, "caption_length": base_len})

        n = samples_per_class
        x = colour[None, :, None, None, None] + 0.1 * torch.randn(
            n, channels, 1, 1, 1, generator=gs, dtype=torch.float64
        )
        for (u, v), a, amp, om in zip(freqs, loadings, amps, drift, strict=True):
            phase = torch.rand(n, generator=gs, dtype=torch.float64) * 2 * math.pi
            gain = amp * (1 + 0.15 * torch.randn(n, generator=gs, dtype=torch.float64))
            arg = 2 * math.pi * (u * hh + v * ww + om * tt)  # [T, H, W]
            wave = torch.cos(arg[None] + phase[:, None, None, None])  # [n, T, H, W]
            x = x + gain[:, None, None, None, None] * a[None, :, None, None, None] * wave[:, None]
        x = x + noise_std * torch.randn(x.shape, generator=gs, dtype=torch.float64)
        latents.append(x if frames else x[:, :, 0])

        drop = torch.randint(0, min(2, base_len - 1) + 1, (n,), generator=gs)
        lengths = base_len - drop
        s = torch.zeros(n, text_length, caption_channels, dtype=torch.float64)
        s[:, :base_len] = caption[None] + 0.1 * torch.randn(
            n, base_len, caption_channels, generator=gs, dtype=torch.float64
        )
        m = torch.arange(text_length)[None, :] < lengths[:, None]
        states.append(s * m[..., None])
        masks.append(m)
        labels.append(torch.full((n,), k, dtype=torch.long))

    null_states = torch.zeros(text_length, caption_channels, dtype=torch.float64)
    null_states[:null_len] = torch.randn(null_len, caption_channels, generator=gc, dtype=torch.float64)
    null_mask = torch.arange(text_length) < null_len
    metadata = {
        "generator": "linear_dit.data.make_synthetic_dataset",
        "seed": seed,
        "class_seed": seed if class_seed is None else class_seed,
        "num_classes": num_classes,
        "noise_std": noise_std,
        "classes": classes,
    }
    return LatentDataset(
        torch.cat(latents).float(),
        torch.cat(states).float(),
        torch.cat(masks),
        null_states.float(),
        null_mask,
        torch.cat(labels),
        metadata,
    )
