"""Sample quality of a text-conditioned Linear DiT on class-structured latents.

Image metrics such as FID (Heusel et al., NeurIPS 2017) and GenEval, which SANA (Xie et al.,
ICLR 2025, Sec. 4) reports, need decoded images and pretrained networks. For latents whose
class structure is known -- the synthetic set of :func:`linear_dit.data.make_synthetic_dataset`,
or any labelled latent set -- this module measures the same two things directly on the latents:

1. **Conditional accuracy** -- does a sample belong to the class its caption asked for? A
   nearest-class-mean classifier is fitted on real held-out latents and applied to samples
   generated from the captions of other real held-out latents; the score is the share classified
   as the caption's class (chance: ``1 / K``).
2. **Fréchet distance** -- is the distribution of samples that of real latents? FID's Gaussian
   Fréchet distance ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between generated and
   real held-out features, over all samples (``fd``) and averaged over per-class pairs
   (``class_fd``, the conditional version).

Both work in one fixed, low-dimensional feature space, :func:`latent_features`, chosen to
cover exactly the factors the synthetic classes differ in while ignoring per-sample nuisance:

* per-channel spatial mean (the class "colour");
* per-channel spatial standard deviation (contrast, grating amplitude and noise level);
* the amplitude of the 2-D DFT at the low frequencies of
  :func:`~linear_dit.data.low_frequency_band`, pooled over channels (texture: which gratings
  are present). Amplitudes are invariant to the per-sample random phase.

Every feature is in the latent's own units (a mean, a standard deviation or a normalised DFT
amplitude), so the features are used as they are: standardising each by its spread over real data
would let a feature that is nearly constant in real data (the amplitude at a frequency no class
uses) dominate both measures through a tiny denominator.

Finite samples make both measures noisy, so :func:`evaluate_quality` reports them next to their
**noise floor**: the same scores for real held-out latents against the reference (real-vs-real
accuracy is the best a sampler can reach; real-vs-real distance is what a perfect model would
get with this many samples). A random-initialised model gives the opposite end
(``bench/train_synthetic.py`` prints both). Samples come from the package sampler
(:func:`linear_dit.sampling.sample`) with classifier-free guidance against the data set's null
text, exactly as inference runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from linear_dit.data import LatentDataset, low_frequency_band
from linear_dit.errors import InputError

__all__ = [
    "QualityReport",
    "QualityScores",
    "evaluate_quality",
    "frechet_distance",
    "generate_for_captions",
    "latent_features",
    "score_samples",
]


def latent_features(latents: torch.Tensor) -> torch.Tensor:
    """Fixed features ``[N, 2C + F]`` of latents ``[N, C, H, W]`` (or ``[N, C, T, H, W]``), float64.

    Channel means (C), channel standard deviations (C) and the channel-pooled DFT amplitude at
    each of the ``F`` frequencies of :func:`~linear_dit.data.low_frequency_band` (see the module
    docstring). Video latents are described frame by frame and the features averaged over time.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim not in (4, 5) or not latents.is_floating_point():
        raise InputError(
            f"latents must be a float [N,C,H,W] or [N,C,T,H,W] tensor, got {getattr(latents, 'shape', latents)}"
        )
    x = latents.detach().to("cpu", torch.float64)
    n = x.shape[0]
    if x.ndim == 5:
        frames = x.shape[2]
        return latent_features(x.transpose(1, 2).flatten(0, 1)).reshape(n, frames, -1).mean(1)
    _, _, h, w = x.shape
    mean = x.mean(dim=(-2, -1))
    std = x.std(dim=(-2, -1), correction=0)
    spec = torch.fft.fft2(x) / (h * w)  # [N, C, H, W]
    amps = [spec[:, :, u % h, v % w].abs().pow(2).sum(1).sqrt() for u, v in low_frequency_band(h, w)]
    return torch.cat([mean, std, torch.stack(amps, dim=1)], dim=1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a [N, F]`` and ``b [M, F]``.

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^(1/2) S_b S_a^(1/2))^(1/2))``, in float64
    with symmetric eigendecompositions (the middle product is symmetric PSD, so its square root
    is exact up to rounding; tiny negative eigenvalues from rounding are clipped to 0).
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"feature sets must be [N, F] with the same F, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise InputError(
            f"each feature set needs at least 2 samples for a covariance, got {a.shape[0]} and {b.shape[0]}"
        )
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    ev, vec = torch.linalg.eigh(cov_a)
    root_a = (vec * ev.clamp_min(0).sqrt()) @ vec.T
    mid = root_a @ cov_b @ root_a
    mid = (mid + mid.T) / 2
    tr_root = torch.linalg.eigvalsh(mid).clamp_min(0).sqrt().sum()
    fd = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_root
    return float(fd.clamp_min(0))


@dataclass(frozen=True)
class QualityScores:
    """Scores of one sample set against the real reference."""

    accuracy: float  # share of samples the nearest-class-mean classifier assigns to their caption's class
    fd: float  # Fréchet distance of all samples to all reference latents (standardised features)
    class_fd: float  # mean over classes of the per-class Fréchet distance


def score_samples(samples: torch.Tensor, labels: torch.Tensor, reference: LatentDataset) -> QualityScores:
    """Score ``samples`` (intended classes ``labels``) against the labelled real ``reference``.

    The classifier's class means come from ``reference`` only, so two sample sets scored against
    the same reference are directly comparable.
    """
    if reference.labels is None:
        raise InputError("the reference data set needs labels to score class-conditional samples")
    labels = torch.as_tensor(labels).long().cpu()
    if labels.shape != (samples.shape[0],):
        raise InputError(f"labels must be [N={samples.shape[0]}], got {tuple(labels.shape)}")
    if tuple(samples.shape[1:]) != reference.latent_shape:
        raise InputError(f"samples have shape {tuple(samples.shape[1:])}, the reference {reference.latent_shape}")
    ref = latent_features(reference.latents)
    feats = latent_features(samples)
    classes = sorted(int(c) for c in reference.labels.unique())
    means = torch.stack([ref[reference.labels == c].mean(0) for c in classes])
    predicted = torch.tensor(classes)[torch.cdist(feats, means).argmin(1)]
    accuracy = float((predicted == labels).double().mean())
    per_class = []
    for c in classes:
        mine, theirs = feats[labels == c], ref[reference.labels == c]
        if len(mine) >= 2 and len(theirs) >= 2:
            per_class.append(frechet_distance(mine, theirs))
    class_fd = sum(per_class) / len(per_class) if per_class else math.nan
    return QualityScores(accuracy=accuracy, fd=frechet_distance(feats, ref), class_fd=class_fd)


def generate_for_captions(
    model: nn.Module,
    captions: LatentDataset,
    *,
    guidance_scale: float = 4.5,
    sampler: Literal["flow_dpm_solver", "flow_euler"] = "flow_dpm_solver",
    steps: int = 20,
    shift: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> torch.Tensor:
    """One sample per item of ``captions``, conditioned on its text states, with the package sampler.

    Guidance uses the data set's null text as the negative prompt. ``shift`` defaults to the
    model's ``config.flow_shift``. Sample ``i`` starts from noise seeded by ``(seed, i)``, so the
    result does not depend on ``batch_size``. Returns float32 latents on the CPU.
    """
    from linear_dit.sampling import sample

    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    if shift is None:
        shift = float(getattr(getattr(model, "config", None), "flow_shift", 1.0))
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(captions), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(captions)))
            _, y, mask = captions.batch(idx, device)
            noise = torch.stack(
                [
                    torch.randn(
                        captions.latent_shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i))
                    )
                    for i in idx
                ]
            ).to(device)
            neg = captions.null_text_states[None].to(device=device, dtype=torch.float32)
            neg_mask = captions.null_text_mask[None].to(device)
            x = sample(
                model,
                noise,
                y,
                mask,
                negative_hidden_states=neg if guidance_scale != 1 else None,
                negative_attention_mask=neg_mask if guidance_scale != 1 else None,
                guidance_scale=guidance_scale,
                sampler=sampler,
                steps=steps,
                shift=shift,
            )
            out.append(x.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


@dataclass(frozen=True)
class QualityReport:
    """Generated-sample scores next to the real-vs-real noise floor (see the module docstring)."""

    accuracy: float
    fd: float
    class_fd: float
    real_accuracy: float
    real_fd: float
    real_class_fd: float
    num_samples: int
    num_classes: int
    guidance_scale: float
    sampler: str
    steps: int
    shift: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def evaluate_quality(
    model: nn.Module,
    heldout: LatentDataset,
    *,
    guidance_scale: float = 4.5,
    sampler: Literal["flow_dpm_solver", "flow_euler"] = "flow_dpm_solver",
    steps: int = 20,
    shift: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> QualityReport:
    """Conditional accuracy and Fréchet distances of ``model``'s samples on labelled ``heldout`` latents.

    ``heldout`` (real latents the model was not trained on, with labels) is split in two
    stratified halves by ``seed``: the *reference* half fits the classifier and the real feature
    statistics; the other half provides the captions to generate from and, scored against the
    reference like the samples, the real-vs-real noise floor. Equal set sizes make the two
    comparable.
    """
    if heldout.labels is None:
        raise InputError("evaluate_quality needs a labelled held-out set (e.g. make_synthetic_dataset)")
    reference, probe = heldout.split(0.5, seed=seed)
    if shift is None:
        shift = float(getattr(getattr(model, "config", None), "flow_shift", 1.0))
    generated = generate_for_captions(
        model,
        probe,
        guidance_scale=guidance_scale,
        sampler=sampler,
        steps=steps,
        shift=shift,
        seed=seed,
        batch_size=batch_size,
    )
    assert probe.labels is not None
    gen = score_samples(generated, probe.labels, reference)
    real = score_samples(probe.latents, probe.labels, reference)
    return QualityReport(
        accuracy=gen.accuracy,
        fd=gen.fd,
        class_fd=gen.class_fd,
        real_accuracy=real.accuracy,
        real_fd=real.fd,
        real_class_fd=real.class_fd,
        num_samples=len(probe),
        num_classes=heldout.num_classes,
        guidance_scale=float(guidance_scale),
        sampler=sampler,
        steps=steps,
        shift=float(shift),
    )
