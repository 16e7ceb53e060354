"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise (ImageNet-C) and speckle_noise (extra)."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from classification.training.corruptions.registry import register, register_array


def _normal(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@register("gaussian_noise")
def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Additive N(0, c) noise."""
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return (x + c * _normal(x, generator)).clamp_(0, 1)


@lru_cache(maxsize=8)
def _poisson_alias_tables(photons: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker alias tables of Poisson(level * photons / 255) for the 256 uint8 levels.

    Row ``level`` covers the counts 0..K (K far enough into the tail that the rest has probability
    below 1e-15): drawing a cell uniformly, then keeping it with its probability or else taking its
    alias, samples the distribution exactly. Returns (probability, alias), each (256, K+1).
    """
    cells = int(photons + 10 * math.sqrt(photons) + 10) + 1
    rate = torch.arange(256, dtype=torch.float64)[:, None] * photons / 255
    counts = torch.arange(cells, dtype=torch.float64)
    log_pmf = counts * torch.log(rate.clamp_min(1e-300)) - rate - torch.lgamma(counts + 1)
    pmf = torch.exp(log_pmf)
    pmf[0] = 0.0
    pmf[0, 0] = 1.0  # rate 0: always 0 photons
    scaled = (pmf / pmf.sum(dim=1, keepdim=True) * cells).tolist()
    probability = [[1.0] * cells for _ in range(256)]
    alias = [list(range(cells)) for _ in range(256)]
    for level, row in enumerate(scaled):  # Vose's construction, once per level (not per pixel)
        small = [i for i, p in enumerate(row) if p < 1.0]
        large = [i for i, p in enumerate(row) if p >= 1.0]
        while small and large:
            less, more = small.pop(), large.pop()
            probability[level][less] = row[less]
            alias[level][less] = more
            row[more] -= 1.0 - row[less]
            (small if row[more] < 1.0 else large).append(more)
    return torch.tensor(probability, dtype=torch.float64), torch.tensor(alias)


@register("shot_noise")
def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Poisson photon noise with ``c`` photons at full intensity: Poisson(x*c)/c.

    The image's uint8 levels select exact alias tables (much faster than a general Poisson
    sampler; an input off the uint8 grid uses its nearest level).
    """
    c = (60, 25, 12, 5, 3)[severity - 1]
    probability, alias = (t.to(x.device) for t in _poisson_alias_tables(c))
    cells = probability.shape[1]
    level = (x * 255).round_().long()
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64) * cells
    cell = u.long().clamp_(max=cells - 1)
    index = level * cells + cell
    keep = (u - cell) < probability.reshape(-1)[index]
    photons = torch.where(keep, cell, alias.reshape(-1)[index])
    return (photons.to(x.dtype) / c).clamp_(0, 1)


IMPULSE = (0.03, 0.06, 0.09, 0.17, 0.27)


@register("impulse_noise")
def impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Salt and pepper on every value: with probability ``c`` set to 1 or 0 (half each)."""
    c = IMPULSE[severity - 1]
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(u < c, (u < c / 2).to(x.dtype), x)


@register_array("impulse_noise")
def impulse_noise_array(image: np.ndarray, severity: int, generator: torch.Generator) -> np.ndarray:
    """:func:`impulse_noise` on one uint8 image, from the same float32 draws, without the float round trip."""
    c = IMPULSE[severity - 1]
    u = torch.rand((1, 3, *image.shape[:2]), generator=generator, dtype=torch.float32).numpy()[0]
    salt = (u < c / 2).view(np.uint8)
    salt *= 255
    return np.where(u < c, salt, image.transpose(2, 0, 1)).transpose(1, 2, 0)


@register("speckle_noise")
def speckle_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative noise: x + x * N(0, c)."""
    c = (0.15, 0.2, 0.35, 0.45, 0.6)[severity - 1]
    return (x + x * (c * _normal(x, generator))).clamp_(0, 1)
