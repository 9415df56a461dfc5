"""PatchGAN discriminator and hinge losses for DC-AE's local-refinement phase.

DC-AE (Chen et al., ICLR 2025, Sec. 3.3, "Decoupled High-Resolution Adaptation") adds a GAN loss
only in phase 3, where just the decoder head is trained at low resolution, so the GAN sharpens
local detail without moving the latent space. The official training code was never released; this
module follows the de-facto standard the paper builds on:

* the PatchGAN discriminator of Isola et al., "Image-to-Image Translation with Conditional
  Adversarial Networks" (CVPR 2017), in the ``NLayerDiscriminator`` form of taming-transformers
  (Esser et al., "Taming Transformers", CVPR 2021): 4x4 convolutions, LeakyReLU(0.2), a logit
  per overlapping patch;
* the hinge losses of Lim & Ye, "Geometric GAN" (2017), as used by VQGAN;
* VQGAN's adaptive GAN weight (Esser et al. 2021, Eq. 7): the ratio of the gradient norms of the
  reconstruction and GAN losses at the decoder's last layer.

Normalisation: **GroupNorm** (32 groups, or fewer for narrow layers) instead of taming's
BatchNorm. It normalises each sample on its own, so the real and fake halves of a batch do not
leak statistics into each other, the result does not depend on the batch split across ``torchrun``
ranks (no SyncBatchNorm needed), and training/eval behave the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dc_ae.errors import ConfigError, TrainingError

__all__ = ["PatchDiscriminator", "adaptive_gan_weight", "d_hinge_loss", "g_hinge_loss"]


def _groups(channels: int, max_groups: int = 32) -> int:
    return math.gcd(channels, max_groups)


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``[B, 3, H, W]`` images in ``[-1, 1]`` -> logit map ``[B, 1, H', W']``.

    Layer ``0`` is a 4x4 stride-2 conv (no norm) + LeakyReLU(0.2); layers ``1..n_layers`` double
    the width (capped at ``8 * channels``), are strided 2 except the last, and use GroupNorm; a
    final 4x4 stride-1 conv gives one logit per patch. With ``n_layers=3`` each logit sees a
    70x70 receptive field (the paper's "70x70 PatchGAN"), and a 256-px input gives a 30x30 map.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if channels < 1 or n_layers < 1 or in_channels < 1:
            raise ConfigError(
                f"PatchDiscriminator needs positive sizes, got in_channels={in_channels}, "
                f"channels={channels}, n_layers={n_layers}"
            )
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = channels
        for i in range(1, n_layers + 1):
            prev, width = width, channels * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                # No bias: the GroupNorm's shift makes it redundant.
                nn.Conv2d(prev, width, 4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(_groups(width), width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    @staticmethod
    def output_size(size: int, n_layers: int = 3) -> int:
        """Side of the logit map for a ``size``-pixel input (<= 0: the input is too small)."""
        for i in range(n_layers + 1):
            size = (size + 2 - 4) // (2 if i < n_layers else 1) + 1
        return size + 2 - 4 + 1

    def reset_parameters(self) -> None:
        """DCGAN/pix2pix initialisation: conv weights N(0, 0.02), norm scale N(1, 0.02), shift 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)  # [B, 1, H', W'] patch logits


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``0.5 * (mean relu(1 - D(real)) + mean relu(1 + D(fake)))``.

    The factor 0.5 is VQGAN's (``hinge_d_loss``); it is 0 once real logits are >= 1 and fake
    logits <= -1.
    """
    return 0.5 * (F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean())


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``-mean D(fake)``."""
    return -fake_logits.float().mean()


def adaptive_gan_weight(
    rec_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VQGAN's adaptive weight ``||grad rec|| / (||grad gan|| + eps)`` at ``last_layer``, clamped.

    Both gradients are taken with respect to the decoder's last weight, so the GAN term gets the
    same gradient magnitude there as the reconstruction term; multiply the result by the
    configured GAN weight. The returned scalar is detached. The graph is kept for the later
    ``backward`` of the total loss.
    """
    if not last_layer.requires_grad:
        raise TrainingError("adaptive GAN weight: the decoder's last layer is frozen; it must be trainable")
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + eps)
    return weight.clamp(0.0, max_weight).detach()
