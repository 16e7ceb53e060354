"""SyMPIE's colour corruptions (darken, sunset, night, white) and the unused invert and grayscale.

The formulas are usually written on 0..255 values; here they are applied to [0, 1] values,
which only rescales the constant colours.
"""
from __future__ import annotations

import numpy as np
import torch

from classification.training.corruptions.convert import unit_to_uint8
from classification.training.corruptions.registry import register, register_array


def _uniform_integers(low: int, high: int, shape: tuple[int, ...], x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Integers uniform in [low, high] (inclusive) as ``x``'s dtype, on its device."""
    return torch.randint(low, high + 1, shape, generator=generator, device=x.device).to(x.dtype)


def _colour(red: torch.Tensor | float, green: torch.Tensor, blue: torch.Tensor) -> torch.Tensor:
    """(B,3,1,1) colour in [0,1] from per-image 0..255 channel values."""
    red = torch.as_tensor(red, dtype=green.dtype, device=green.device).expand_as(green)
    return (torch.stack([red, green, blue], dim=1) / 255).reshape(-1, 3, 1, 1)


@register("darken")
def darken(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    return x / (severity + 1)


@register_array("darken")
def darken_array(image: np.ndarray, severity: int, generator: torch.Generator) -> np.ndarray:
    """:func:`darken` on one uint8 image in its own layout (the same float32 operations)."""
    x = np.divide(image, np.float32(255), dtype=np.float32)
    x /= np.float32(severity + 1)
    return unit_to_uint8(x)


@register("sunset")
def sunset(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Blend towards a warm tint (255, 192+d, 192-d), d uniform in [-32, 32]."""
    d = _uniform_integers(-32, 32, (x.shape[0],), x, generator)
    colour = _colour(255.0, 192 + d, 192 - d)
    weight = severity / 5
    return (weight * (colour * x + colour / 10) + (1 - weight) * x).clamp_(0, 1)


@register("night")
def night(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Blend towards a dark blue tint (32, 32, 64+e), e uniform in [-24, 24], with bright pixels inverted."""
    e = _uniform_integers(-24, 24, (x.shape[0],), x, generator)
    colour = _colour(32.0, torch.full_like(e, 32.0), 64 + e)
    # Channel mean above 128 on the 0..255 grid, i.e. channel sum at least 385.
    bright = x.sum(dim=1, keepdim=True) * 255 > 384.5
    flim = torch.where(bright, 1 - x, x)
    weight = severity / 5
    return (weight * (0.8 * colour * x + 0.2 * flim) + (1 - weight) * x).clamp_(0, 1)


@register("white")
def white(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Shift the white point by severity/5 of three integers uniform in [-32, 32]."""
    shift = _uniform_integers(-32, 32, (x.shape[0], 3), x, generator)
    gain = (1 + severity * shift / (5 * 255)).reshape(-1, 3, 1, 1)
    return (gain * x).clamp_(0, 1)


@register("invert")
def invert(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    weight = severity / 5
    return (1 - weight) * x + weight * (1 - x)


@register("grayscale")
def grayscale(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    weight = severity / 5
    return (1 - weight) * x + weight * x.mean(dim=1, keepdim=True)
