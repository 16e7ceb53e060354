"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise (ImageNet-C) and speckle_noise (extra)."""
from __future__ import annotations

import torch

from classification.training.corruptions.registry import register


def _normal(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@register("gaussian_noise")
def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Additive N(0, c) noise."""
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return (x + c * _normal(x, generator)).clamp_(0, 1)


@register("shot_noise")
def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Poisson photon noise with ``c`` photons at full intensity."""
    c = (60, 25, 12, 5, 3)[severity - 1]
    return (torch.poisson(x * c, generator=generator) / c).clamp_(0, 1)


@register("impulse_noise")
def impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Salt and pepper on every value: with probability ``c`` set to 1 or 0 (half each)."""
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    out = torch.where(u < c, (u < c / 2).to(x.dtype), x)
    return out


@register("speckle_noise")
def speckle_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative noise: x + x * N(0, c)."""
    c = (0.15, 0.2, 0.35, 0.45, 0.6)[severity - 1]
    return (x + x * (c * _normal(x, generator))).clamp_(0, 1)
