"""ImageNet-C's weather corruptions: fog, frost, snow and (one of the four extra ones) spatter.

Every implementation follows the signature of :mod:`.registry` and works on a whole batch at once;
the only Python loops run over filter taps, fractal levels or the images of a batch, never over pixels.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from classification.training.corruptions.filters import clipped_zoom, gaussian_filter, motion_blur, pad
from classification.training.corruptions.convert import unit_to_uint8
from classification.training.corruptions.registry import register, register_array

FROST_DIR = Path(__file__).resolve().parent.parent / "frost_images"
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_USED = 5  # ImageNet-C draws from the first five textures only.

# Per severity 1..5.
FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (strength, wibble decay)
FROST = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (image weight, frost weight)
# (mean, std, zoom, threshold, blur radius, blur sigma, image mix)
SNOW = (
    (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
)
# (mean, std, sigma, threshold, strength, mode); mode 0 = water, 1 = mud.
SPATTER = (
    (0.65, 0.3, 4.0, 0.69, 0.6, 0),
    (0.65, 0.3, 3.0, 0.68, 0.6, 0),
    (0.65, 0.3, 2.0, 0.68, 0.5, 0),
    (0.65, 0.3, 1.0, 0.65, 1.5, 1),
    (0.67, 0.4, 1.0, 0.65, 1.5, 1),
)
WATER_RGB = (175.0, 238.0, 238.0)
MUD_RGB = (63.0, 42.0, 20.0)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)

FOG_MIN_SIZE = 256
FRACTAL_MATRIX_LEVELS = 4  # 16x16 points from 255 draws
SPATTER_MAX_DISTANCE = 20
CANNY_THRESHOLDS = (50.0, 150.0)
TAN_22_5 = math.tan(math.radians(22.5))
EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator, like: torch.Tensor):
    """U(low, high) samples on ``like``'s device and dtype."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return u * (high - low) + low


def _normal(shape: tuple[int, ...], mean: float, std: float, generator: torch.Generator, like: torch.Tensor):
    """N(mean, std) samples on ``like``'s device and dtype."""
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype) * std + mean


# ---------------------------------------------------------------------------------------------- fog


def _refine(grid: torch.Tensor, uniforms: list[torch.Tensor], wibble: float, decay: float) -> torch.Tensor:
    """Diamond-square refinement of a wrapping (B, n, n) lattice, one level per (B, 3*n*n) block of U(-1, 1).

    Each level doubles the lattice: a square centre is the mean of its four corners, an edge midpoint
    the mean of its two corners and two centres; each new point gets ``wibble * U(-wibble, wibble)``
    and the wibble is then divided by ``decay``.
    """
    batch = grid.shape[0]
    for u in uniforms:
        n = grid.shape[1]
        jitter = u.reshape(batch, 3, n, n) * (wibble * wibble)
        square = grid + grid.roll(-1, 1)  # each corner plus the one below it
        # jitter + sum / 4, in one call (a quarter is exact, so the rounding is that of the two steps)
        centres = torch.add(jitter[:, 0], square + square.roll(-1, 2), alpha=0.25)
        top = torch.add(jitter[:, 1], (grid + grid.roll(-1, 2)).add_(centres).add_(centres.roll(1, 1)), alpha=0.25)
        left = torch.add(jitter[:, 2], square.add_(centres).add_(centres.roll(1, 2)), alpha=0.25)
        # New lattice point (2i + a, 2j + b): corner, top midpoint / left midpoint, centre.
        quads = torch.stack((torch.stack((grid, top), dim=3), torch.stack((left, centres), dim=3)), dim=2)
        grid = quads.reshape(batch, 2 * n, 2 * n)
        wibble /= decay
    return grid


def _level_sizes(levels: int) -> list[int]:
    """Uniforms drawn by each diamond-square level: three new points per lattice point."""
    return [3 * 4**level for level in range(levels)]


@lru_cache(maxsize=32)
def _coarse_levels(levels: int, decay: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The first ``levels`` refinements as one matrix (draws, lattice points): they are linear in the draws."""
    draws = sum(_level_sizes(levels))
    basis = torch.eye(draws, dtype=torch.float64)
    start = torch.zeros(draws, 1, 1, dtype=torch.float64)
    lattice = _refine(start, list(basis.split(_level_sizes(levels), dim=1)), 100.0, decay)
    return lattice.reshape(draws, -1).to(device, dtype)


def plasma_fractal(batch: int, size: int, decay: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """(B, size, size) diamond-square fractals in [0, 1], ``size`` a power of two.

    The grid wraps around, starts from a single 0 corner and a wibble of 100 (see :func:`_refine`); the
    uniforms of all levels are drawn in one call. The first ``FRACTAL_MATRIX_LEVELS`` levels, a few
    hundred points, are one matrix product (per-level tensor calls would cost more than the last level).
    """
    levels = size.bit_length() - 1
    sizes = _level_sizes(levels)
    uniforms = _uniform((batch, sum(sizes)), -1.0, 1.0, generator, like)
    coarse = min(FRACTAL_MATRIX_LEVELS, levels)
    split = sum(sizes[:coarse])
    side = 1 << coarse
    grid = (uniforms[:, :split] @ _coarse_levels(coarse, decay, like.device, like.dtype)).reshape(batch, side, side)
    grid = _refine(grid, list(uniforms[:, split:].split(sizes[coarse:], dim=1)), 100.0 / decay**coarse, decay)
    grid -= grid.amin(dim=(1, 2), keepdim=True)
    return grid.div_(grid.amax(dim=(1, 2), keepdim=True))


def _fog_fractal(batch: int, h: int, w: int, severity: int, generator: torch.Generator, like: torch.Tensor):
    """(B, h, w) fractal of :func:`fog`: the top-left corner of a square one, at least 256 pixels wide."""
    size = max(FOG_MIN_SIZE, 1 << math.ceil(math.log2(max(h, w))))
    return plasma_fractal(batch, size, FOG[severity - 1][1], generator, like)[:, :h, :w]


@register("fog")
def fog(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Add a plasma fractal, then scale by max / (max + strength), max being the image's original maximum."""
    strength = FOG[severity - 1][0]
    b, _, h, w = x.shape
    fractal = _fog_fractal(b, h, w, severity, generator, x)[:, None]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + strength * fractal) * (peak / (peak + strength))).clamp_(0, 1)


@register_array("fog")
def fog_array(image: np.ndarray, severity: int, generator: torch.Generator) -> np.ndarray:
    """:func:`fog` on one uint8 image: the same float32 arithmetic in NumPy, planar, no tensor round trip."""
    strength = FOG[severity - 1][0]
    h, w = image.shape[:2]
    fractal = _fog_fractal(1, h, w, severity, generator, torch.empty(0, dtype=torch.float32))[0].numpy()
    x = np.divide(image.transpose(2, 0, 1), np.float32(255), dtype=np.float32, order="C")  # planar
    peak = np.float32(image.max()) / np.float32(255)  # equals x.max(): division by 255 is monotonic
    x += strength * fractal
    x *= peak / (peak + strength)
    return unit_to_uint8(x).transpose(1, 2, 0)


# -------------------------------------------------------------------------------------------- frost


@lru_cache(maxsize=None)
def frost_textures() -> tuple[torch.Tensor, ...]:
    """The decoded frost photographs, (3, h, w) uint8 on the CPU, alpha dropped; loaded once."""
    textures = []
    for name in FROST_FILES:
        path = FROST_DIR / name
        if not path.is_file():
            raise FileNotFoundError(f"frost texture {path} is missing; reinstall the package (frost_images/README.md)")
        with Image.open(path) as image:
            textures.append(torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).contiguous())
    return tuple(textures)


@lru_cache(maxsize=32)
def _texture_covering(index: int, h: int, w: int) -> torch.Tensor:
    """Texture ``index`` unchanged if it is at least h x w, else enlarged (bilinear, same aspect) to cover it."""
    texture = frost_textures()[index]
    th, tw = texture.shape[-2:]
    if th >= h and tw >= w:
        return texture
    scale = max(h / th, w / tw)
    size = (max(h, math.ceil(th * scale)), max(w, math.ceil(tw * scale)))
    enlarged = F.interpolate(texture[None].float(), size=size, mode="bilinear", align_corners=False)
    return enlarged[0].round().clamp(0, 255).to(torch.uint8)


@register("frost")
def frost(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Blend each image with a random crop of one of the first five frost textures."""
    weight_image, weight_frost = FROST[severity - 1]
    b, _, h, w = x.shape
    draws = torch.rand((b, 3), generator=generator, device=x.device, dtype=torch.float64).cpu()
    crops = []
    for choice, u_top, u_left in draws.tolist():
        texture = _texture_covering(min(int(choice * FROST_USED), FROST_USED - 1), h, w)
        top = int(u_top * (texture.shape[-2] - h + 1))
        left = int(u_left * (texture.shape[-1] - w + 1))
        crops.append(texture[:, top : top + h, left : left + w])
    layer = torch.stack(crops).to(x.device, x.dtype)
    return layer.mul_(weight_frost / 255).add_(x, alpha=weight_image).clamp_(0, 1)


# --------------------------------------------------------------------------------------------- snow


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


@register("snow")
def snow(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Zoomed, thresholded noise streaked by a motion blur, added twice (once rotated 180 degrees)."""
    mean, std, zoom, threshold, radius, sigma, mix = SNOW[severity - 1]
    b, _, h, w = x.shape
    flakes = clipped_zoom(_normal((b, 1, h, w), mean, std, generator, x), zoom)
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes)
    flakes = (flakes.clamp(0, 1) * 255).floor()  # the 8-bit layer handed to ImageMagick
    angles = _uniform((b,), -135.0, -45.0, generator, x)
    flakes = motion_blur(flakes, radius, sigma, angles).round_() / 255
    x = mix * x + (1 - mix) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return (x + flakes + flakes.flip(-2, -1)).clamp_(0, 1)


# ------------------------------------------------------------------------------------------ spatter


def _correlate3x3(x: torch.Tensor, kernel: tuple[tuple[float, ...], ...], border: str) -> torch.Tensor:
    """3x3 cross-correlation of (B,C,H,W) ``x`` with ``kernel`` under ``border`` (a sum of shifted slices)."""
    h, w = x.shape[-2:]
    padded = pad(x, 1, 1, 1, 1, border)
    out = torch.zeros_like(x)
    for dy, row in enumerate(kernel):
        for dx, weight in enumerate(row):
            if weight:
                out.add_(padded[..., dy : dy + h, dx : dx + w], alpha=weight)
    return out


def _box3(x: torch.Tensor) -> torch.Tensor:
    """Normalised 3x3 box filter, border reflect-101 (OpenCV's default)."""
    h, w = x.shape[-2:]
    padded = pad(x, 1, 1, 1, 1, "reflect")
    rows = padded[..., 0:h, :] + padded[..., 1 : h + 1, :] + padded[..., 2 : h + 2, :]
    return (rows[..., 0:w] + rows[..., 1 : w + 1] + rows[..., 2 : w + 2]) / 9


def _dilate3x3(mask: torch.Tensor) -> torch.Tensor:
    """Binary dilation of (B,C,H,W) bool ``mask`` by a 3x3 square (8-connectivity)."""
    h, w = mask.shape[-2:]
    padded = F.pad(mask, (1, 1, 1, 1))
    rows = padded[..., 0:h, :] | padded[..., 1 : h + 1, :] | padded[..., 2 : h + 2, :]
    return rows[..., 0:w] | rows[..., 1 : w + 1] | rows[..., 2 : w + 2]


def canny(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges (bool, (B,1,H,W)) of 8-bit valued (B,1,H,W) ``x``, as OpenCV computes them.

    3x3 Sobel gradients (border replicate), L1 magnitude, non-maximum suppression along the
    gradient direction quantised to 0/45/90/135 degrees, then hysteresis: pixels above ``high``
    are edges, and so are pixels above ``low`` 8-connected to an edge through such pixels.
    """
    h, w = x.shape[-2:]
    padded = pad(x, 1, 1, 1, 1, "replicate")
    across = padded[..., 2:] - padded[..., :-2]  # (H+2, W): horizontal differences
    down = padded[..., 2:, :] - padded[..., :-2, :]  # (H, W+2): vertical differences
    gx = across[..., 0:h, :] + 2 * across[..., 1 : h + 1, :] + across[..., 2 : h + 2, :]
    gy = down[..., 0:w] + 2 * down[..., 1 : w + 1] + down[..., 2 : w + 2]
    magnitude = gx.abs() + gy.abs()
    m = F.pad(magnitude, (1, 1, 1, 1))  # zero outside the image

    def neighbour(dy: int, dx: int) -> torch.Tensor:
        return m[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    ax, ay = gx.abs(), gy.abs()
    horizontal = ay < TAN_22_5 * ax
    vertical = ay > (TAN_22_5 + 2) * ax
    same_sign = (gx * gy) >= 0
    keep_h = (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1))
    keep_v = (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0))
    keep_d = torch.where(
        same_sign,
        (magnitude > neighbour(-1, -1)) & (magnitude > neighbour(1, 1)),
        (magnitude > neighbour(-1, 1)) & (magnitude > neighbour(1, -1)),
    )
    local_max = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d))
    candidate = local_max & (magnitude > low)
    edges = candidate & (magnitude > high)
    while True:  # grow the strong edges along the weak ones until nothing changes
        grown = _dilate3x3(edges) & candidate
        if torch.equal(grown, edges):
            return edges
        edges = grown


def truncated_distance(edges: torch.Tensor, limit: int) -> torch.Tensor:
    """Euclidean distance of every pixel of (B,1,H,W) bool ``edges`` to the nearest edge, capped at ``limit``.

    Exact: the distance to the nearest edge of the same column comes from running maxima of the
    edge rows (above and below); the row pass then takes the lower envelope over column offsets
    ``-limit..limit``, which is all that matters once distances are capped. Every intermediate is a
    small integer, held in int16 where it fits (half the memory traffic of int32 or float32).
    """
    h, w = edges.shape[-2:]
    far = limit + 1
    dtype = torch.int16 if 2 * h + far < 2**15 and far * far + limit * limit < 2**15 else torch.int32
    rows = torch.arange(h, device=edges.device, dtype=dtype).reshape(h, 1)
    last_above = torch.where(edges, rows, -far - h).cummax(dim=-2).values
    next_below = torch.where(edges, h - 1 - rows, -far - h).flip(-2).cummax(dim=-2).values.flip(-2)
    vertical = torch.minimum(rows - last_above, (h - 1 - rows) - next_below).clamp_(max=far)
    squared = vertical * vertical
    padded = F.pad(squared, (limit, limit), value=far * far)
    best = squared.clone()
    shifted = torch.empty_like(best)
    for offset in range(1, limit + 1):
        if offset % 4 == 1 and offset * offset >= int(best.max()):
            break  # farther columns add at least offset^2: nothing can get closer any more
        for start in (limit - offset, limit + offset):
            torch.add(padded[..., start : start + w], offset * offset, out=shifted)
            torch.minimum(best, shifted, out=best)
    return best.to(torch.float32).sqrt_().clamp_(max=limit)


def equalize_histogram(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``equalizeHist`` of each 8-bit valued (B,1,H,W) image (values stay on the 0..255 grid)."""
    b = x.shape[0]
    levels = x.reshape(b, -1).long()
    hist = torch.zeros(b, 256, device=x.device, dtype=torch.float64)
    hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float64))
    total = float(levels.shape[1])
    first = (hist > 0).to(torch.uint8).argmax(dim=1, keepdim=True)
    first_count = hist.gather(1, first)
    scale = 255.0 / (total - first_count).clamp(min=1)
    lut = ((hist.cumsum(1) - first_count) * scale).round().clamp(0, 255)
    identity = torch.arange(256, device=x.device, dtype=torch.float64).expand(b, 256)
    lut = torch.where(first_count == total, identity, lut)  # a constant image stays as it is
    return lut.gather(1, levels).reshape(x.shape).to(x.dtype)


def _water(x: torch.Tensor, liquid: torch.Tensor, strength: float) -> torch.Tensor:
    layer = (liquid * 255).floor().clamp(0, 255)
    edges = canny(layer, *CANNY_THRESHOLDS)
    distance = _box3(truncated_distance(edges, SPATTER_MAX_DISTANCE).to(x.dtype)).floor()
    distance = equalize_histogram(distance)
    distance = _correlate3x3(distance, EMBOSS, "reflect").clamp(0, 255)
    distance = _box3(distance).round()
    m = layer * distance
    peak = m.amax(dim=(1, 2, 3), keepdim=True)
    m = m / torch.where(peak > 0, peak, torch.ones_like(peak)) * strength
    colour = torch.tensor(WATER_RGB, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1) / 255
    return (x + m * colour).clamp_(0, 1)


def _mud(x: torch.Tensor, liquid: torch.Tensor, threshold: float, strength: float) -> torch.Tensor:
    m = gaussian_filter((liquid > threshold).to(x.dtype), strength)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    colour = torch.tensor(MUD_RGB, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1) / 255
    return (x * (1 - m) + m * colour).clamp_(0, 1)


@register("spatter")
def spatter(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Blobs of smoothed, thresholded noise: embossed water drops (1-3) or opaque mud (4-5)."""
    mean, std, sigma, threshold, strength, mode = SPATTER[severity - 1]
    b, _, h, w = x.shape
    liquid = gaussian_filter(_normal((b, 1, h, w), mean, std, generator, x), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mode == 0:
        return _water(x, liquid, strength)
    return _mud(x, liquid, threshold, strength)
