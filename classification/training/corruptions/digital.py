"""Digital corruptions: contrast, elastic_transform, pixelate, jpeg_compression, brightness (ImageNet-C)
and saturate (extra)."""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from classification.training.corruptions.convert import to_float_tensor, to_uint8_array
from classification.training.corruptions.filters import gaussian_filter, sample_bilinear
from classification.training.corruptions.jpeg import jpeg_round_trip
from classification.training.corruptions.pil_box import box_pixelate, box_upscale_index
from classification.training.corruptions.registry import register, register_array


@register("contrast")
def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Pull every channel towards its mean by the factor ``c``."""
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * c + mean).clamp_(0, 1)


# Both HSV corruptions change one HSV component of every pixel and keep its hue. For a fixed hue,
# the hexcone's RGB is linear in V and affine in S, so the new colour follows from the old one
# without the round trip through the hue (same result as ``filters.hsv_to_rgb``, a few times faster).


BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)


@register("brightness")
def brightness(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Add ``c`` to the HSV value."""
    c = BRIGHTNESS[severity - 1]
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + c).clamp_(max=1)
    # RGB scales with V; a black pixel (hue 0, saturation 0) becomes grey.
    return torch.where(value > 0, x * (new_value / value.clamp(min=1e-12)), new_value).clamp_(0, 1)


@lru_cache(maxsize=None)
def _brightness_table(severity: int) -> np.ndarray:
    """(256*256,) uint8: entry ``256*v + x`` is what :func:`brightness` gives a channel of value ``x`` in a
    pixel whose largest channel is ``v`` (the function itself run once on every such pair, so exact)."""
    levels = np.arange(256, dtype=np.uint8)
    pairs = np.zeros((256, 256, 3), dtype=np.uint8)
    pairs[..., 0], pairs[..., 1] = levels[:, None], levels[None, :]  # pixel (v, x, 0): its maximum is v when x <= v
    out = to_uint8_array(brightness(to_float_tensor(pairs), severity, None)[0])
    return np.ascontiguousarray(out[..., 1]).ravel()


@register_array("brightness")
def brightness_array(image: np.ndarray, severity: int, generator: torch.Generator) -> np.ndarray:
    """:func:`brightness` on one uint8 image by table lookup on (pixel maximum, channel value); same result."""
    planar = np.ascontiguousarray(image.transpose(2, 0, 1))  # one byte shuffle, then long contiguous loops
    value = np.maximum(planar[0], planar[1])
    np.maximum(value, planar[2], out=value)
    index = np.left_shift(value, 8, dtype=np.uint16)[None] | planar
    return _brightness_table(severity).take(index).transpose(1, 2, 0)


@register("saturate")
def saturate(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Scale and offset the HSV saturation."""
    scale, offset = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))[severity - 1]
    value = x.amax(dim=1, keepdim=True)
    delta = value - x.amin(dim=1, keepdim=True)
    saturation = torch.where(value > 0, delta / value.clamp(min=1e-12), torch.zeros_like(value))
    new_saturation = (saturation * scale + offset).clamp_(0, 1)
    # Each channel is V - S*V*a with a fixed by the hue: the distance below V scales with S.
    coloured = value - (value - x) * (new_saturation * value / delta.clamp(min=1e-12))
    # A grey pixel has hue 0 (red): it becomes (V, V(1-S'), V(1-S')).
    grey = value * torch.cat([torch.ones_like(value), 1 - new_saturation, 1 - new_saturation], dim=1)
    return torch.where(delta > 0, coloured, grey).clamp_(0, 1)


def _affine_sources(
    b: int, h: int, w: int, amount: float, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source rows and columns (B,H,W) of ImageNet-C's random three-point affine warp, one per image."""
    c0, c1 = h // 2, w // 2
    s = min(h, w) // 3
    # (x, y) points as OpenCV takes them, with ImageNet-C's centre pattern.
    points = torch.tensor(
        [[c0 + s, c1 + s], [c0 + s, c1 - s], [c0 - s, c1 - s]], dtype=torch.float64, device=device
    ).expand(b, 3, 2)
    moved = points + (torch.rand(b, 3, 2, generator=generator, device=device, dtype=torch.float64) * 2 - 1) * amount
    ones = torch.ones(b, 3, 1, dtype=torch.float64, device=device)
    # The affine taking a destination point back to its source: [moved, 1] @ inverse = points.
    inverse = torch.linalg.solve(torch.cat([moved, ones], dim=2), points)  # (B, 3, 2)
    grid_y, grid_x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=device),
        torch.arange(w, dtype=torch.float64, device=device),
        indexing="ij",
    )
    grid = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1)  # (H, W, 3)
    sources = torch.einsum("hwk,bkj->bhwj", grid, inverse)
    return sources[..., 1], sources[..., 0]


@register("elastic_transform")
def elastic_transform(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Random affine warp, then a smooth random displacement field (ImageNet-C, with its S = 244)."""
    s = 244
    alpha, sigma, amount = (
        (s * 2, s * 0.7, s * 0.1),
        (s * 2, s * 0.08, s * 0.2),
        (s * 0.05, s * 0.01, s * 0.02),
        (s * 0.07, s * 0.01, s * 0.02),
        (s * 0.12, s * 0.01, s * 0.02),
    )[severity - 1]
    b, _, h, w = x.shape
    src_y, src_x = _affine_sources(b, h, w, amount, generator, x.device)
    warped = sample_bilinear(x, src_y, src_x, "reflect")

    noise = torch.rand(b, 2, h, w, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
    shift = gaussian_filter(noise, sigma, border="symmetric", truncate=3.0) * alpha
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[:, None]
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, :]
    out = sample_bilinear(warped, rows + shift[:, 1], cols + shift[:, 0], "symmetric")
    return out.clamp_(0, 1)


def _through_arrays(x: torch.Tensor, transform: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """Apply ``transform`` (HxWx3 uint8 -> HxWx3 uint8) to every image of the batch on its uint8 grid."""
    images = np.clip(np.rint(x.detach().cpu().numpy() * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    out = np.stack([transform(image) for image in images]).transpose(0, 3, 1, 2)
    return torch.from_numpy(out.astype(np.float32)).to(x.device, x.dtype) / 255


@lru_cache(maxsize=64)
def _nearest_is_box(small: int, large: int) -> bool:
    """Whether PIL's (much faster) NEAREST upscale picks the same pixels as BOX for these lengths; it
    rounds its coordinates differently on a few lengths, so each pair is checked once, on an index ramp."""
    ramp = Image.fromarray(np.arange(small, dtype=np.int32)[None])
    picked = np.asarray(ramp.resize((large, 1), Image.Resampling.NEAREST))[0]
    return bool(np.array_equal(picked, box_upscale_index(small, large)))


PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)


def pixelated_size(height: int, width: int, severity: int) -> tuple[int, int]:
    """The (height, width) pixelate scales an image down to: by ``c``, keeping at least one pixel a side,
    where ImageNet-C's code fails (sides under 1/c pixels)."""
    c = PIXELATE[severity - 1]
    return max(1, int(height * c)), max(1, int(width * c))


def pixelate_array(image: np.ndarray, severity: int) -> np.ndarray:
    """PIL BOX downscale to :func:`pixelated_size` and BOX upscale back, on one HxWx3 uint8 image."""
    h, w = image.shape[:2]
    small_height, small_width = pixelated_size(h, w, severity)
    small = Image.fromarray(image).resize((small_width, small_height), Image.Resampling.BOX)
    if _nearest_is_box(small.width, w) and _nearest_is_box(small.height, h):
        return np.asarray(small.resize((w, h), Image.Resampling.NEAREST))
    return np.asarray(small.resize((w, h), Image.Resampling.BOX))


JPEG_QUALITY = (25, 18, 15, 10, 7)


def jpeg_array(image: np.ndarray, severity: int) -> np.ndarray:
    """JPEG encode at quality ``c`` and decode, on one HxWx3 uint8 image, as ImageNet-C's PIL round trip.

    Both steps run in torchvision's libjpeg-turbo, the library PIL uses too, with the same defaults
    (4:2:0 chroma, integer DCT): the bytes equal PIL's (checked by the tests) in about half the time.
    """
    quality = JPEG_QUALITY[severity - 1]
    if not (image.flags.c_contiguous and image.flags.writeable):
        image = np.array(image)  # torch wraps read-only memory only with a warning
    chw = torch.from_numpy(image).permute(2, 0, 1)  # HWC memory: encoded without a copy
    return decode_jpeg(encode_jpeg(chw, quality=quality), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()


@register("pixelate")
def pixelate(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """PIL on the CPU; elsewhere the same round trip as tensor ops, byte for byte (``pil_box.py``)."""
    if x.device.type != "cpu":
        out = box_pixelate(x, *pixelated_size(*x.shape[-2:], severity))
        if out is not None:
            return out
    return _through_arrays(x, lambda image: pixelate_array(image, severity))


@register("jpeg_compression")
def jpeg_compression(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """libjpeg on the CPU; elsewhere its steps as tensor ops (``jpeg.py``; a grey level off on a few pixels)."""
    if x.device.type != "cpu":
        return jpeg_round_trip(x, JPEG_QUALITY[severity - 1])
    return _through_arrays(x, lambda image: jpeg_array(image, severity))


register_array("pixelate")(lambda image, severity, generator: pixelate_array(image, severity))
register_array("jpeg_compression")(lambda image, severity, generator: jpeg_array(image, severity))
