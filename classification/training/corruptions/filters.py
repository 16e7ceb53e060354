"""Batched image filters shared by the corruption implementations.

Every function takes a float tensor (B,C,H,W) on any device and returns a tensor of the same dtype
and device. Borders are named as follows:

- ``"replicate"``: edge pixels are repeated (``aaa|abcd|ddd``);
- ``"reflect"``: reflection about the edge pixel, the edge is not repeated (``dcb|abcd|cba``,
  torch's ``'reflect'``, OpenCV's ``BORDER_REFLECT_101``);
- ``"symmetric"``: half-sample reflection, the edge is repeated (``cba|abcd|dcb``, SciPy's
  ``'reflect'``).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

BORDERS = ("replicate", "reflect", "symmetric")

# Up to this many taps a 1-D filter is a sum of shifted slices; above, a dense (n x n) matrix product.
_MAX_TAPS_SHIFTED = 31


def border_index(n: int, before: int, after: int, border: str) -> torch.Tensor:
    """Source index of every position ``-before .. n+after-1`` of an axis of length ``n`` padded with ``border``.

    Paddings wider than the axis repeat the reflection.
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    i = torch.arange(-before, n + after)
    if border == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    period = 2 * n - 2 if border == "reflect" else 2 * n
    i = i.remainder(period)
    mirror = period if border == "reflect" else period - 1
    return torch.where(i >= n, mirror - i, i)


def pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, border: str) -> torch.Tensor:
    """Pad the last two dimensions of ``x`` with ``border`` (any padding size)."""
    h, w = x.shape[-2:]
    native = border == "replicate" or (border == "reflect" and max(top, bottom) < h and max(left, right) < w)
    if native and x.dim() == 4 and x.is_floating_point():  # torch's own padding: one pass, no index tensors
        return F.pad(x, (left, right, top, bottom), mode=border)
    rows = border_index(x.shape[-2], top, bottom, border).to(x.device)
    cols = border_index(x.shape[-1], left, right, border).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def gaussian_kernel1d(sigma: float, radius: int) -> torch.Tensor:
    """Normalised ``exp(-i^2 / (2 sigma^2))`` for ``i = -radius..radius`` (float64)."""
    i = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (i / sigma) ** 2)
    return k / k.sum()


@lru_cache(maxsize=64)
def filter_matrix(n: int, kernel: tuple[float, ...], border: str) -> torch.Tensor:
    """The (n, n) matrix of a centred 1-D correlation with ``kernel`` under ``border`` (float64, CPU)."""
    radius = len(kernel) // 2
    source = border_index(n, radius, radius, border)
    taps = torch.arange(len(kernel))
    rows = torch.arange(n)[:, None].expand(n, len(kernel))
    cols = source[rows + taps]
    weights = torch.tensor(kernel, dtype=torch.float64).expand(n, len(kernel))
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.index_put_((rows.reshape(-1), cols.reshape(-1)), weights.reshape(-1), accumulate=True)
    return matrix


def correlate1d(x: torch.Tensor, kernel: torch.Tensor, dim: int, border: str) -> torch.Tensor:
    """Centred 1-D correlation of ``x`` with an odd-length ``kernel`` along ``dim`` (-1 or -2)."""
    n = x.shape[dim]
    taps = kernel.numel()
    radius = taps // 2
    if taps <= _MAX_TAPS_SHIFTED:
        if dim in (-1, x.dim() - 1):
            padded = pad(x, 0, 0, radius, radius, border)
        else:
            padded = pad(x, radius, radius, 0, 0, border)
        weights = kernel.tolist()
        out = padded.narrow(dim, 0, n) * weights[0]
        for t in range(1, taps):
            out.add_(padded.narrow(dim, t, n), alpha=weights[t])
        return out
    matrix = filter_matrix(n, tuple(kernel.tolist()), border).to(x.device, x.dtype)
    if dim in (-1, x.dim() - 1):
        return x @ matrix.T
    return matrix @ x


def _fft_size(n: int) -> int:
    """The smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFT lengths)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _kernel_spectrum(kernel: torch.Tensor, size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """Spectrum of the flipped kernel (correlation = convolution with it) with the inverse FFT's 1/(N*M)
    folded in, so that the inverse transform skips its scaling pass (``norm="forward"``)."""
    flipped = (kernel.flip(-1, -2) / (size[0] * size[1])).to(like.device, like.dtype)
    return torch.fft.rfft2(flipped, s=size)


@lru_cache(maxsize=32)
def _fixed_kernel_spectrum(
    kernel: tuple[tuple[float, ...], ...], size: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The spectrum of a constant kernel (given by value), computed once per size, device and dtype."""
    return _kernel_spectrum(torch.tensor(kernel, dtype=torch.float64), size, torch.empty(0, device=device, dtype=dtype))


def _correlate_valid(padded: torch.Tensor, kernel: torch.Tensor, fixed: bool = False) -> torch.Tensor:
    """Correlation of (B,C,H+kh-1,W+kw-1) ``padded`` with ``kernel`` ((kh,kw), or (B,1,kh,kw) for one
    kernel per image) where the kernel fits entirely: the (B,C,H,W) "valid" part, by FFT. A ``fixed``
    (kh,kw) kernel has its spectrum cached."""
    kh, kw = kernel.shape[-2:]
    h, w = padded.shape[-2] - kh + 1, padded.shape[-1] - kw + 1
    size = (_fft_size(padded.shape[-2]), _fft_size(padded.shape[-1]))
    if fixed:
        spectrum = _fixed_kernel_spectrum(tuple(map(tuple, kernel.tolist())), size, padded.device, padded.dtype)
    else:
        spectrum = _kernel_spectrum(kernel, size, padded)
    full = torch.fft.irfft2(torch.fft.rfft2(padded, s=size).mul_(spectrum), s=size, norm="forward")
    return full[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w]  # a view, no copy: callers clamp it in place


def correlate2d(x: torch.Tensor, kernel: torch.Tensor, border: str) -> torch.Tensor:
    """Centred 2-D correlation of every channel of ``x`` (B,C,H,W) with a constant odd (K,K) ``kernel``, by FFT."""
    r = kernel.shape[-1] // 2
    return _correlate_valid(pad(x, r, r, r, r, border), kernel, fixed=True)


def gaussian_filter(x: torch.Tensor, sigma: float, border: str = "replicate", truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian of every channel of ``x`` (B,C,H,W), radius ``int(truncate*sigma + 0.5)``."""
    return gaussian_filter1d(gaussian_filter1d(x, sigma, -1, border, truncate), sigma, -2, border, truncate)


def gaussian_filter1d(
    x: torch.Tensor, sigma: float, dim: int, border: str = "replicate", truncate: float = 4.0
) -> torch.Tensor:
    """Gaussian along one dimension of ``x`` (-1 or -2), radius ``int(truncate*sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    if radius == 0:
        return x.clone()
    return correlate1d(x, gaussian_kernel1d(sigma, radius), dim, border)


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick's one-sided motion blur of each image of ``x`` (B,C,H,W) along its own angle.

    ``2*radius+1`` taps, tap ``i`` weighted ``exp(-i^2 / (2 sigma^2))`` (normalised) and sampling the
    image at the whole-pixel offset ``(ceil(i*cos(a) - 0.5), ceil(i*sin(a) - 0.5))`` (x, y); pixels
    outside the image repeat the edge. On the CPU every image is a weighted sum of its shifted copies
    (at most 41, cheaper than FFTs there); elsewhere the taps of each image form a sparse 2-D kernel,
    and the whole batch is filtered at once by FFT.
    """
    b, _, h, w = x.shape
    width = 2 * radius + 1
    taps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    angles = torch.deg2rad(angles_deg.detach().to("cpu", torch.float64)).reshape(b, 1)
    dx = torch.ceil(taps * torch.cos(angles) - 0.5).long()  # (B, width)
    dy = torch.ceil(taps * torch.sin(angles) - 0.5).long()
    # One padding for the batch: the bounding box of every image's offsets.
    top, bottom = max(0, -int(dy.min())), max(0, int(dy.max()))
    left, right = max(0, -int(dx.min())), max(0, int(dx.max()))
    padded = pad(x, top, bottom, left, right, "replicate")
    if x.device.type == "cpu":
        out = torch.zeros_like(x)
        for i in range(b):
            for weight, row, col in zip(weights.tolist(), (dy[i] + top).tolist(), (dx[i] + left).tolist()):
                out[i].add_(padded[i, :, row : row + h, col : col + w], alpha=weight)
        return out
    kh, kw = top + bottom + 1, left + right + 1
    kernels = torch.zeros(b, kh * kw, dtype=torch.float64)
    kernels.scatter_add_(1, (dy + top) * kw + dx + left, weights.expand(b, -1))
    return _correlate_valid(padded, kernels.reshape(b, 1, kh, kw))


# grid_sample's padding for each border. 'reflection' reflects about the edge pixel centres with
# align_corners=True (reflect-101) and about the pixel edges with align_corners=False (half-sample).
_GRID_SAMPLE_BORDERS = {"replicate": ("border", True), "reflect": ("reflection", True), "symmetric": ("reflection", False)}


def sample_bilinear(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, border: str) -> torch.Tensor:
    """Bilinear samples of every channel of ``x`` (B,C,H,W) at pixel coordinates ``rows``, ``cols`` (B,h,w).

    Neighbours outside the image are taken from the extension of the image by ``border`` (for
    "reflect" and "symmetric", folding the coordinate back into the image is the same thing).
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    padding_mode, align_corners = _GRID_SAMPLE_BORDERS[border]
    h, w = x.shape[-2:]
    if align_corners:
        grid_x, grid_y = cols * (2 / max(w - 1, 1)) - 1, rows * (2 / max(h - 1, 1)) - 1
    else:
        grid_x, grid_y = (2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1
    grid = torch.stack([grid_x, grid_y], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """ImageNet-C's ``clipped_zoom`` of (B,C,H,W): zoom in by ``zoom`` about the centre, same size.

    Per axis of length ``n``: centre crop of ``ceil(n/zoom)`` (start ``(n-side)//2``), linear resize
    with corner alignment to ``round(side*zoom)``, centre trim back to ``n`` (start ``(size-n)//2``).
    """
    h, w = x.shape[-2:]
    crop_h, crop_w = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    size_h, size_w = round(crop_h * zoom), round(crop_w * zoom)
    crop = x[..., top : top + crop_h, left : left + crop_w]
    zoomed = F.interpolate(crop, size=(size_h, size_w), mode="bilinear", align_corners=True)
    trim_top, trim_left = (size_h - h) // 2, (size_w - w) // 2
    return zoomed[..., trim_top : trim_top + h, trim_left : trim_left + w]


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Hexcone HSV of RGB ``x`` (..., 3, H, W) in [0,1]; hue in [0,1), zero where the pixel is grey."""
    r, g, b = x.unbind(-3)
    value, _ = x.max(dim=-3)
    delta = value - x.min(dim=-3).values
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    saturation = delta / torch.where(value > 0, value, torch.ones_like(value))  # 0 for black
    hue = torch.where(
        b == value,
        4.0 + (r - g) / safe_delta,
        torch.where(g == value, 2.0 + (b - r) / safe_delta, (g - b) / safe_delta),
    )
    hue = torch.where(delta > 0, (hue / 6.0).remainder(1.0), torch.zeros_like(hue))
    return torch.stack((hue, saturation, value), dim=-3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` for (..., 3, H, W) with hue in [0,1]."""
    hue, saturation, value = x.unbind(-3)
    h6 = hue * 6.0
    sector = h6.floor()
    f = h6 - sector
    sector = sector.long().remainder(6)
    p = value * (1.0 - saturation)
    q = value * (1.0 - f * saturation)
    t = value * (1.0 - (1.0 - f) * saturation)
    choices = torch.stack((value, q, p, t), dim=-3)
    # For each of the six hue sectors, which of (value, q, p, t) is red, green and blue.
    table = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=x.device)
    return choices.gather(-3, table[sector].movedim(-1, -3))
