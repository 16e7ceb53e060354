"""Digital corruptions: contrast, elastic_transform, pixelate, jpeg_compression, brightness (ImageNet-C)
and saturate (extra)."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from classification.training.corruptions import filters
from classification.training.corruptions.registry import register


@register("contrast")
def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Pull every channel towards its mean by the factor ``c``."""
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * c + mean).clamp_(0, 1)


# Both HSV corruptions change one HSV component of every pixel and keep its hue. For a fixed hue,
# the hexcone's RGB is linear in V and affine in S, so the new colour follows from the old one
# without the round trip through the hue (same result as ``filters.hsv_to_rgb``, a few times faster).


@register("brightness")
def brightness(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Add ``c`` to the HSV value."""
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + c).clamp_(max=1)
    # RGB scales with V; a black pixel (hue 0, saturation 0) becomes grey.
    return torch.where(value > 0, x * (new_value / value.clamp(min=1e-12)), new_value).clamp_(0, 1)


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
    warped = filters.sample_bilinear(x, src_y, src_x, "reflect")

    noise = torch.rand(b, 2, h, w, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
    shift = filters.gaussian_filter(noise, sigma, border="symmetric", truncate=3.0) * alpha
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[:, None]
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, :]
    out = filters.sample_bilinear(warped, rows + shift[:, 1], cols + shift[:, 0], "symmetric")
    return out.clamp_(0, 1)


def _through_pil(x: torch.Tensor, transform) -> torch.Tensor:
    """Apply ``transform`` (PIL image -> PIL image) to every image of the batch on its uint8 grid."""
    arrays = (x * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    outputs = [np.asarray(transform(Image.fromarray(array)).convert("RGB")) for array in arrays]
    out = torch.from_numpy(np.stack(outputs)).permute(0, 3, 1, 2)
    return out.to(x.device, x.dtype) / 255


@register("pixelate")
def pixelate(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """PIL BOX downscale by ``c`` and BOX upscale back."""
    c = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    h, w = x.shape[-2:]

    def transform(image: Image.Image) -> Image.Image:
        small = image.resize((int(w * c), int(h * c)), Image.Resampling.BOX)
        return small.resize((w, h), Image.Resampling.BOX)

    return _through_pil(x, transform)


@register("jpeg_compression")
def jpeg_compression(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """PIL JPEG encode and decode at quality ``c``."""
    quality = (25, 18, 15, 10, 7)[severity - 1]

    def transform(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        return Image.open(buffer)

    return _through_pil(x, transform)
