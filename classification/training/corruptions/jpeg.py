"""jpeg_compression's round trip through libjpeg, as batched tensor ops on any device.

On the CPU the corruption runs libjpeg itself (``digital.jpeg_array``). On an accelerator the same
steps run here on the whole batch, so that nothing leaves the device: what libjpeg does with PIL's
and torchvision's defaults (quality ``q``, 4:2:0 chroma, baseline tables, no smoothing; decoding
with fancy upsampling), step by step:

1. RGB to YCbCr in libjpeg's 16-bit fixed point;
2. the image padded to whole 16x16 macroblocks by repeating its last row and column;
3. the chroma averaged over 2x2 pixels with libjpeg's alternating rounding bias (1, 2);
4. 8x8 DCT of every block, divided by the IJG tables scaled to ``q`` and rounded half away from zero;
5. back: multiplied by the tables, inverse DCT, rounded, clamped to 0..255;
6. the chroma upsampled by libjpeg's "fancy" triangle filter (3/4 and 1/4 weights, biases 8 and 7);
7. YCbCr to RGB in libjpeg's fixed point, clamped.

Entropy coding is lossless and skipped. Every step but the DCTs is libjpeg's integer arithmetic; the
DCTs are exact float transforms where libjpeg uses integer approximations (its ``islow``), so a
coefficient that lies within a hair of a rounding boundary can round the other way: the result
differs from libjpeg's by a grey level on a small share of pixels (measured in the tests).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

# The example tables of the JPEG standard (Annex K.1), row-major, as libjpeg scales them.
_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *(99,) * 32,
)  # fmt: skip

_SCALE_BITS = 16  # libjpeg's colour conversion fixed point
_HALF = 1 << (_SCALE_BITS - 1)


def _fix(value: float) -> int:
    return int(value * (1 << _SCALE_BITS) + 0.5)


def quantisation_table(base: tuple[int, ...], quality: int) -> torch.Tensor:
    """(8, 8) table as libjpeg scales ``base`` to ``quality`` (1..100), baseline: entries in 1..255."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return ((torch.tensor(base, dtype=torch.int64) * scale + 50) // 100).clamp_(1, 255).reshape(8, 8)


@lru_cache(maxsize=1)
def _dct_matrix() -> torch.Tensor:
    """(8, 8) float64 orthonormal DCT-II: ``D @ block @ D.T`` is JPEG's forward DCT."""
    d = torch.empty(8, 8, dtype=torch.float64)
    for u in range(8):
        for x in range(8):
            d[u, x] = (math.sqrt(0.5) if u == 0 else 1.0) / 2 * math.cos((2 * x + 1) * u * math.pi / 16)
    return d


def _rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) int64 0..255 -> Y, Cb, Cr int64 0..255 (libjpeg's ``rgb_ycc_convert``)."""
    r, g, b = rgb.unbind(1)
    offset = (128 << _SCALE_BITS) + _HALF - 1
    y = (_fix(0.299) * r + _fix(0.587) * g + _fix(0.114) * b + _HALF) >> _SCALE_BITS
    cb = (-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * b + offset) >> _SCALE_BITS
    cr = (_fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * b + offset) >> _SCALE_BITS
    return torch.stack([y, cb, cr], dim=1)


def _ycbcr_to_rgb(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    """int64 planes 0..255 -> (B,3,H,W) int64 0..255 (libjpeg's ``ycc_rgb_convert``)."""
    cb, cr = cb - 128, cr - 128
    r = y + ((_fix(1.402) * cr + _HALF) >> _SCALE_BITS)
    g = y + ((-_fix(0.34414) * cb + _HALF - _fix(0.71414) * cr) >> _SCALE_BITS)
    b = y + ((_fix(1.772) * cb + _HALF) >> _SCALE_BITS)
    return torch.stack([r, g, b], dim=1).clamp_(0, 255)


def _downsample_2x2(plane: torch.Tensor) -> torch.Tensor:
    """(N,H,W) int64 with even H and W -> (N,H/2,W/2): libjpeg's ``h2v2_downsample``."""
    n, h, w = plane.shape
    sums = plane.reshape(n, h // 2, 2, w // 2, 2).sum(dim=(2, 4))
    bias = torch.arange(w // 2, device=plane.device) % 2 + 1  # 1, 2, 1, 2, ... along each row
    return (sums + bias) >> 2


def _quantise_round_trip(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(N,H,W) int64 0..255, H and W multiples of 8 -> the decoded samples, int64 0..255."""
    n, h, w = plane.shape
    d = _dct_matrix().to(plane.device)
    q = table.to(plane.device, torch.float64)
    blocks = (plane.double() - 128).reshape(n, h // 8, 8, w // 8, 8)
    coefficients = torch.einsum("ux,nixjy,vy->nijuv", d, blocks, d)
    ratio = coefficients / q
    quantised = torch.sign(ratio) * torch.floor(ratio.abs() + 0.5)
    samples = torch.einsum("ux,nijuv,vy->nixjy", d, quantised * q, d)
    return torch.floor(samples + 128.5).clamp_(0, 255).long().reshape(n, h, w)


def _fancy_upsample_2x2(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N,h,w) int64 chroma of ``ceil(height/2)`` x ``ceil(width/2)`` real samples -> (N,height,width):
    libjpeg's ``h2v2_fancy_upsample`` (the nearer sample weighs 3/4, the next 1/4 along each axis; the
    edge samples are repeated)."""
    rows, cols = (height + 1) // 2, (width + 1) // 2
    c = plane[:, :rows, :cols]
    above = torch.cat([c[:, :1], c[:, :-1]], dim=1)
    below = torch.cat([c[:, 1:], c[:, -1:]], dim=1)
    colsums = torch.stack([3 * c + above, 3 * c + below], dim=2).reshape(c.shape[0], 2 * rows, cols)
    left = torch.cat([colsums[..., :1], colsums[..., :-1]], dim=2)
    right = torch.cat([colsums[..., 1:], colsums[..., -1:]], dim=2)
    even = (3 * colsums + left + 8) >> 4
    odd = (3 * colsums + right + 7) >> 4
    return torch.stack([even, odd], dim=3).reshape(c.shape[0], 2 * rows, 2 * cols)[:, :height, :width]


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode a (B,3,H,W) float batch in [0, 1] (rounded to the uint8 grid first) as baseline 4:2:0 JPEG of
    ``quality`` and decode it, as libjpeg does (see the module docstring); float in [0, 1] back."""
    b, _, height, width = x.shape
    rgb = x.mul(255).round_().clamp_(0, 255).long()
    padded = torch.nn.functional.pad(
        rgb.double(), (0, -width % 16, 0, -height % 16), mode="replicate"
    ).long()  # replicate padding has no integer kernel on every device
    ycc = _rgb_to_ycbcr(padded)
    luma = _quantise_round_trip(ycc[:, 0], quantisation_table(_LUMA, quality))[:, :height, :width]
    chroma = _downsample_2x2(ycc[:, 1:].flatten(0, 1))
    chroma = _quantise_round_trip(chroma, quantisation_table(_CHROMA, quality))
    chroma = _fancy_upsample_2x2(chroma, height, width).reshape(b, 2, height, width)
    return _ycbcr_to_rgb(luma, chroma[:, 0], chroma[:, 1]).to(x.dtype).div_(255)
