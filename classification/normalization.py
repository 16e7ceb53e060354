"""ImageNet normalisation, the input convention of every model in this repository."""
from __future__ import annotations

from typing import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def normalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Images in [0, 1], (B,3,H,W) -> ``(x - mean) / std``."""
    return (x - _stats(mean, x)) / _stats(std, x)


def denormalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Inverse of :func:`normalize`: back to [0, 1] (not clipped)."""
    return x * _stats(std, x) + _stats(mean, x)


class Renormalize(torch.nn.Module):
    """Wraps a model that wants other input statistics so that it takes ImageNet-normalised input."""

    def __init__(self, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor(IMAGENET_STD).div(torch.tensor(std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(IMAGENET_MEAN).sub(torch.tensor(mean)).div(torch.tensor(std)).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ((x*s_in + m_in) - m) / s  ==  x * (s_in/s) + (m_in - m)/s
        return self.model(x * self.scale + self.shift)
