"""pixelate's PIL round trip (BOX downscale, BOX upscale) as batched tensor ops on any device, bit-exact.

PIL resizes an 8-bit image in two separable passes, each rounding to 8 bits. A BOX downscale pass
averages, for every output pixel, the run of input pixels whose centres fall in its box: the sum of
the run times PIL's 22-bit fixed-point weight ``round(2**22 / n)``, plus half, shifted right by 22.
Here the run sums are a matrix product with a 0/1 matrix (exact in float32: at most 255 x 2**16),
and the fixed-point step runs in int64, so the result equals PIL's byte for byte. The BOX upscale
copies the pixel under each output pixel's centre (:func:`box_upscale_index`).

Which pass PIL runs first depends on its version and the sizes (the two orders round differently),
so each size is checked once against PIL itself on a noise image; a size where neither order
reproduces PIL goes back to PIL (:func:`box_pixelate_plan` returns None).
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

PRECISION_BITS = 22  # PIL's fixed-point weights for 8-bit images


class BoxPass(NamedTuple):
    """One BOX downscale pass along an axis: ``members`` (small, large) 0/1 and ``weights`` (small,) int64."""

    members: np.ndarray
    weights: np.ndarray


class BoxPlan(NamedTuple):
    rows: BoxPass
    cols: BoxPass
    rows_first: bool
    up_rows: np.ndarray  # (H,) source row of the small image for every output row
    up_cols: np.ndarray  # (W,)


@lru_cache(maxsize=128)
def box_pass(large: int, small: int) -> BoxPass:
    """PIL's BOX coefficients from ``large`` down to ``small`` pixels (its float64 arithmetic, vectorised)."""
    scale = large / small
    support = 0.5 * scale
    centre = (np.arange(small) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    last = np.minimum((centre + support + 0.5).astype(np.int64), large)
    x = np.arange(large)
    offset = (x[None, :] - centre[:, None] + 0.5) * (1.0 / scale)
    members = (offset > -0.5) & (offset <= 0.5) & (x >= first[:, None]) & (x < last[:, None])
    weights = np.trunc(0.5 + (1.0 / members.sum(axis=1)) * (1 << PRECISION_BITS)).astype(np.int64)
    return BoxPass(members.astype(np.float32), weights)


def box_upscale_index(small: int, large: int) -> np.ndarray:
    """Source index of every output pixel of PIL's BOX resize from ``small`` up to ``large`` pixels: the
    box is narrower than an input pixel, so each output pixel copies the input pixel under its centre."""
    return np.floor((np.arange(large) + 0.5) * (small / large)).astype(np.int64)


def _downscale(u: torch.Tensor, box: BoxPass, dim: int) -> torch.Tensor:
    """One pass over axis ``dim`` of a float tensor of whole numbers 0..255; same rounding as PIL."""
    members = torch.from_numpy(box.members).to(u.device, u.dtype)
    weights = torch.from_numpy(box.weights).to(u.device)
    sums = torch.matmul(u.movedim(dim, -1), members.T).long()
    scaled = (sums * weights + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS
    return scaled.clamp_(0, 255).to(u.dtype).movedim(-1, dim)


def _round_trip(u: torch.Tensor, plan: BoxPlan) -> torch.Tensor:
    if plan.rows_first:
        small = _downscale(_downscale(u, plan.rows, -2), plan.cols, -1)
    else:
        small = _downscale(_downscale(u, plan.cols, -1), plan.rows, -2)
    rows = torch.from_numpy(plan.up_rows).to(u.device)
    cols = torch.from_numpy(plan.up_cols).to(u.device)
    return small.index_select(-2, rows).index_select(-1, cols)


@lru_cache(maxsize=64)
def box_pixelate_plan(height: int, width: int, small_height: int, small_width: int) -> BoxPlan | None:
    """The passes and pass order that reproduce PIL's BOX round trip at these sizes, or None."""
    probe = np.random.default_rng(height * 100_003 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = np.asarray(
        Image.fromarray(probe).resize((small_width, small_height), Image.Resampling.BOX).resize(
            (width, height), Image.Resampling.BOX
        )
    )
    u = torch.from_numpy(probe).permute(2, 0, 1).float()
    for rows_first in (False, True):  # PIL's classic order first
        plan = BoxPlan(
            box_pass(height, small_height),
            box_pass(width, small_width),
            rows_first,
            box_upscale_index(small_height, height),
            box_upscale_index(small_width, width),
        )
        if np.array_equal(_round_trip(u, plan).byte().permute(1, 2, 0).numpy(), expected):
            return plan
    return None


def box_pixelate(x: torch.Tensor, small_height: int, small_width: int) -> torch.Tensor | None:
    """PIL's BOX downscale to ``small_height`` x ``small_width`` and BOX upscale back, on a (B,3,H,W) float
    batch in [0, 1] (rounded to the uint8 grid first, as the PIL route does); None where PIL's passes are
    not reproduced at these sizes."""
    plan = box_pixelate_plan(x.shape[-2], x.shape[-1], small_height, small_width)
    if plan is None:
        return None
    u = x.mul(255).round_().clamp_(0, 255)
    return _round_trip(u, plan).div_(255)
