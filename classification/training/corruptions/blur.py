"""Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur (ImageNet-C) and gaussian_blur (extra)."""
from __future__ import annotations

from functools import lru_cache

import torch

from classification.training.corruptions.filters import (
    clipped_zoom,
    correlate1d,
    correlate2d,
    filter_matrix,
    gaussian_filter,
    gaussian_filter1d,
    gaussian_kernel1d,
    motion_blur as directional_blur,
)
from classification.training.corruptions.registry import register


@lru_cache(maxsize=8)
def _defocus_kernel(radius: int, alias_blur: float) -> torch.Tensor:
    """ImageNet-C's anti-aliased disk: a normalised disk of ``radius`` blurred by a small Gaussian."""
    half = 8 if radius <= 8 else radius
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = (coords[:, None] ** 2 + coords[None, :] ** 2 <= radius**2).to(torch.float64)
    disk /= disk.sum()
    aliasing_radius = 1 if radius <= 8 else 2
    smooth = gaussian_kernel1d(alias_blur, aliasing_radius)
    disk = disk[None, None]
    disk = correlate1d(correlate1d(disk, smooth, -1, "reflect"), smooth, -2, "reflect")
    return disk[0, 0]


@register("defocus_blur")
def defocus_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    radius, alias_blur = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[severity - 1]
    return correlate2d(x, _defocus_kernel(radius, alias_blur), "reflect").clamp_(0, 1)


def _glass_prefilter(x: torch.Tensor, sigma: float, max_delta: int, iterations: int) -> torch.Tensor:
    """The reference's first glass-blur Gaussian, truncated to uint8.

    The reference passes the whole severity tuple as the per-axis sigmas of an (H,W,3) Gaussian, so
    it blurs rows by ``sigma``, columns by ``max_delta`` and across the three channels by
    ``iterations`` (border replicate everywhere). The statistics of ``corruption_stats.json`` depend
    on that channel mixing, so it is reproduced.
    """
    x = gaussian_filter1d(gaussian_filter1d(x, sigma, -2), max_delta, -1)
    radius = int(4.0 * iterations + 0.5)
    kernel = tuple(gaussian_kernel1d(iterations, radius).tolist())
    mixing = filter_matrix(x.shape[1], kernel, "replicate").to(x.device, x.dtype)
    x = torch.einsum("oc,bchw->bohw", mixing, x)
    return torch.floor(x * 255) / 255


@lru_cache(maxsize=16)
def _shuffle_grid(h: int, w: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Constant tensors of the glass-blur shuffle on an h x w image with maximal offset d.

    - the flat positions of the steps in visiting order: rows h-d down to d+1 and, in each,
      columns w-d down to d+1;
    - every pixel's visiting rank (pixels never visited rank after every step);
    - the initial pointer nodes of :func:`shuffle_sources` (every pixel keeps its original value).
    """
    # Python ranges, like the reference's loops: empty (no shuffle) on images of at most 2d pixels.
    rows = torch.tensor(range(h - d, d, -1), dtype=torch.long)
    cols = torch.tensor(range(w - d, d, -1), dtype=torch.long)
    positions = (rows[:, None] * w + cols[None, :]).reshape(-1)
    rank = torch.full((h * w,), positions.numel(), dtype=torch.long)
    rank[positions] = torch.arange(positions.numel())
    nodes = torch.cat([torch.arange(h * w, 2 * h * w), torch.arange(h * w, 2 * h * w)])
    return positions, rank, nodes


def shuffle_sources(h: int, w: int, d: int, shifts: torch.Tensor) -> torch.Tensor:
    """Where every pixel's value comes from after one pass of the reference's local shuffle.

    The reference loop visits each step position p in turn and executes the Python tuple "swap"
    ``x[p], x[q] = x[q], x[p]`` on a NumPy image, with q = p + (dy, dx) and ``shifts`` (B, steps)
    holding the flat offsets ``dy*w + dx`` of the steps. Because the right-hand side holds views,
    that statement only copies: x[p] <- x[q]. Each pixel is written once, at its own step, so its
    final value is the value q had then: q's final value if q was visited earlier, else q's
    original value.

    Those chains are followed for all pixels at once by pointer doubling over 2*h*w nodes: node p
    (< h*w) is "the final value of pixel p", node h*w + q is "the original value of pixel q" and
    points to itself. Each round replaces every pointer by its target's pointer, so chains of any
    length resolve in O(log length) gathers, with no loop over pixels.

    Returns (B, h*w) flat source indices into the image before the pass.
    """
    device = shifts.device
    positions, rank, nodes = (t.to(device) for t in _shuffle_grid(h, w, d))
    b, n = shifts.shape[0], h * w
    source = positions + shifts
    visited_before = rank[source] < rank[positions]
    nodes = nodes.repeat(b, 1)
    nodes.scatter_(1, positions.expand(b, -1), torch.where(visited_before, source, source + n))
    final = nodes[:, :n]
    while not bool((final >= n).all()):
        final = nodes.gather(1, final)
        nodes[:, :n] = final
    return final - n


@register("glass_blur")
def glass_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Blur, truncate to uint8, shuffle pixels locally (``iterations`` passes), blur again."""
    sigma, max_delta, iterations = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[severity - 1]
    b, c, h, w = x.shape
    x = _glass_prefilter(x, sigma, max_delta, iterations)
    steps = _shuffle_grid(h, w, max_delta)[0].numel()
    # The reference draws dx, dy uniformly in [-d, d-1]: one code in [0, 4d^2) per step instead.
    offsets = torch.arange(-max_delta, max_delta, device=x.device)
    shift_of_code = (offsets[:, None] * w + offsets[None, :]).reshape(-1)
    flat = x.reshape(b, c, h * w)
    for _ in range(iterations):
        codes = torch.randint(0, shift_of_code.numel(), (b, steps), generator=generator, device=x.device)
        sources = shuffle_sources(h, w, max_delta, shift_of_code[codes])
        flat = flat.gather(2, sources[:, None, :].expand(b, c, h * w))
    return gaussian_filter(flat.reshape(b, c, h, w), sigma).clamp_(0, 1)


@register("motion_blur")
def motion_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """ImageMagick motion blur along a random angle in [-45, 45] degrees per image."""
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    angles = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64) * 90 - 45
    return directional_blur(x, radius, sigma, angles).clamp_(0, 1)


def _zoom_factors(severity: int) -> list[float]:
    step, count = ((0.01, 12), (0.01, 16), (0.02, 11), (0.02, 13), (0.03, 11))[severity - 1]
    return [1.0 + i * step for i in range(count)]


@register("zoom_blur")
def zoom_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Average of the image and its centre zooms by the factors of the severity (the first is 1)."""
    factors = _zoom_factors(severity)
    x = x.contiguous(memory_format=torch.channels_last)  # bilinear resizing is faster channels-last
    out = x * 2  # the image itself and its zoom by 1.0
    for factor in factors[1:]:
        out += clipped_zoom(x, factor)
    return out.div_(len(factors) + 1).clamp_(0, 1).contiguous()


@register("gaussian_blur")
def gaussian_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    sigma = (1, 2, 3, 4, 6)[severity - 1]
    return gaussian_filter(x, sigma).clamp_(0, 1)
