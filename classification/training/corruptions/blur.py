"""Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur (ImageNet-C) and gaussian_blur (extra)."""
from __future__ import annotations

from functools import lru_cache

import torch

from classification.training.corruptions import filters
from classification.training.corruptions.registry import register


@lru_cache(maxsize=8)
def defocus_kernel(radius: int, alias_blur: float) -> torch.Tensor:
    """ImageNet-C's anti-aliased disk: a normalised disk of ``radius`` blurred by a small Gaussian."""
    half = 8 if radius <= 8 else radius
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = (coords[:, None] ** 2 + coords[None, :] ** 2 <= radius**2).to(torch.float64)
    disk /= disk.sum()
    aliasing_radius = 1 if radius <= 8 else 2
    smooth = filters.gaussian_kernel1d(alias_blur, aliasing_radius)
    disk = disk[None, None]
    disk = filters.correlate1d(filters.correlate1d(disk, smooth, -1, "reflect"), smooth, -2, "reflect")
    return disk[0, 0]


@register("defocus_blur")
def defocus_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    radius, alias_blur = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[severity - 1]
    return filters.correlate2d(x, defocus_kernel(radius, alias_blur), "reflect").clamp_(0, 1)


@lru_cache(maxsize=32)
def _glass_waves(h: int, w: int, d: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pixel positions of the swap steps of :func:`glass_blur`, grouped into waves of disjoint swaps.

    The sequential loop visits (row, col) from (h-d, w-d) down to (d+1, d+1), row-major, and swaps
    each pixel with one at an offset in [-d, d-1]^2. Two steps can only touch a common pixel if they
    are less than 2d apart in both rows and columns, so steps whose visiting rank
    ``f = 2d*(h-d-row) + (w-d-col)`` agrees modulo 4d^2 never interact: each such class is one wave of
    simultaneous swaps. Waves run in the order of that residue, which keeps the sequential order for
    every interacting pair except those straddling a multiple of 4d^2 in rank.

    Returns the flat positions (row*w + col) sorted by wave and the start offset of each wave.
    """
    rows = torch.arange(h - d, d, -1)
    cols = torch.arange(w - d, d, -1)
    rank = (2 * d * (h - d - rows))[:, None] + (w - d - cols)[None, :]
    period = 4 * d * d
    wave = rank.remainder(period).reshape(-1)
    positions = (rows[:, None] * w + cols[None, :]).reshape(-1)
    order = torch.sort(wave * rank.numel() + rank.reshape(-1)).indices
    counts = torch.bincount(wave, minlength=period).tolist()
    starts = [0]
    for count in counts:
        starts.append(starts[-1] + count)
    return positions[order], tuple(starts)


def local_swaps(x: torch.Tensor, max_delta: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """ImageNet-C's glass-blur pixel shuffling of (B,C,H,W), vectorised in waves of disjoint swaps."""
    b, c, h, w = x.shape
    d = max_delta
    positions, starts = _glass_waves(h, w, d)
    n = positions.numel()
    if n == 0:
        return x
    device = x.device
    pixels = x.permute(0, 2, 3, 1).reshape(b * h * w, c).contiguous()
    image_offset = torch.arange(b, device=device) * (h * w)
    # Step-major layout (step, image) so that every wave is a contiguous slice.
    first = (positions.to(device)[:, None] + image_offset[None, :]).reshape(-1)
    for _ in range(iterations):
        delta = torch.randint(-d, d, (b, n, 2), generator=generator, device=device)
        shift = (delta[..., 0] * w + delta[..., 1]).T.reshape(-1)
        second = first + shift
        for start, stop in zip(starts[:-1], starts[1:]):
            if start == stop:
                continue
            p = first[start * b : stop * b]
            q = second[start * b : stop * b]
            at_p = pixels.index_select(0, p)
            pixels.index_copy_(0, p, pixels.index_select(0, q))
            pixels.index_copy_(0, q, at_p)
    return pixels.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()


@register("glass_blur")
def glass_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur, truncation to uint8, local pixel swaps, Gaussian blur again."""
    sigma, max_delta, iterations = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[severity - 1]
    x = torch.floor(filters.gaussian_filter(x, sigma) * 255) / 255
    x = local_swaps(x, max_delta, iterations, generator)
    return filters.gaussian_filter(x, sigma).clamp_(0, 1)


@register("motion_blur")
def motion_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """ImageMagick motion blur along a random angle in [-45, 45] degrees per image."""
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    angles = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64) * 90 - 45
    return filters.motion_blur(x, radius, sigma, angles).clamp_(0, 1)


def _zoom_factors(severity: int) -> list[float]:
    step, count = ((0.01, 12), (0.01, 16), (0.02, 11), (0.02, 13), (0.03, 11))[severity - 1]
    return [1.0 + i * step for i in range(count)]


@register("zoom_blur")
def zoom_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Average of the image and its centre zooms by the factors of the severity."""
    factors = _zoom_factors(severity)
    out = x.clone()
    for factor in factors:
        out += filters.clipped_zoom(x, factor)
    return out.div_(len(factors) + 1).clamp_(0, 1)


@register("gaussian_blur")
def gaussian_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    sigma = (1, 2, 3, 4, 6)[severity - 1]
    return filters.gaussian_filter(x, sigma).clamp_(0, 1)
