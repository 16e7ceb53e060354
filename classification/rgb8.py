"""Images of any PIL mode as 8-bit RGB, shared by the evaluation, the benchmark builder and segmentation.

16-bit grey PNGs are scaled to 8 bits (PIL's ``convert("RGB")`` would clip them to 255, i.e. white).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL's modes of 16-bit grey PNGs


def to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535) to 8 bits, rounded: ``round(v / 257)`` (65535 -> 255, 257 -> 1)."""
    return ((values.astype(np.uint32) + 128) // 257).clip(0, 255).astype(np.uint8)


def pil_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB. 16-bit grey images are scaled to 8 bits; 16-bit colour PNGs already open as
    8-bit RGB(A)."""
    if image.mode in SIXTEEN_BIT_MODES:
        return Image.fromarray(to_8bit(np.asarray(image)), mode="L").convert("RGB")
    return image.convert("RGB")
