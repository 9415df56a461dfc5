"""lego-hw: spatial accelerator generation from affine dataflows (LEGO, arXiv:2509.12053)."""

from __future__ import annotations

__version__ = "0.0.1"
