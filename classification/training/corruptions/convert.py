"""One image between HxWx3 uint8 and float in [0, 1], by NumPy (several times faster than torch's uint8
kernels on a single image, and the same values: division by 255 and round-half-even in float32)."""
from __future__ import annotations

import numpy as np
import torch


def to_float_tensor(image: np.ndarray) -> torch.Tensor:
    """An HxWx3 uint8 image as a contiguous (1,3,H,W) float32 CPU tensor in [0, 1]."""
    chw = np.divide(image.transpose(2, 0, 1), np.float32(255), dtype=np.float32, order="C")
    return torch.from_numpy(chw)[None]


def to_uint8_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (3,H,W) float image in [0, 1] (CPU tensor or array) as an HxWx3 uint8 array on the uint8 grid.

    The result is a transposed view of a (3,H,W) array, like ``tensor.permute(1, 2, 0).numpy()``.
    """
    return unit_to_uint8(x.detach().numpy() if isinstance(x, torch.Tensor) else x).transpose(1, 2, 0)


def unit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Float values in [0, 1] (any shape) as uint8: ``round(255 * v)``, clipped, in float32 like the batch API."""
    values = np.multiply(values, 255, dtype=np.float32)
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8)
