"""Evaluation preprocessing (classification/eval/README.md): decode RGB, short side 232 with OpenCV INTER_AREA semantics,
centre crop 224, ImageNet normalisation.

The resize is re-implemented in NumPy so that no OpenCV is needed. Both axes are separable:

* shrinking (both axes scale down or keep their size): every output pixel is the area-weighted mean of
  the source pixels its footprint covers, accumulated in floating point and rounded to uint8;
* enlarging (any axis grows, e.g. ImageNet-C's 224x224 files -> 232): a two-tap rule per axis with
  double-precision ``inv = dst/src`` and ``scale = 1/inv``, coefficients rounded to 11-bit fixed
  point and the two passes combined with the integer arithmetic OpenCV uses for 8-bit images.

Only the output rows/columns that survive the centre crop are computed.
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file

from classification.normalization import IMAGENET_MEAN, IMAGENET_STD
from classification.rgb8 import pil_rgb8, to_8bit

RESIZE_SHORT = 232
CROP = 224
COEF_BITS = 11
COEF_SCALE = 1 << COEF_BITS


@dataclass(frozen=True)
class AxisTaps:
    """Sparse resampling weights along one axis: ``out[i] = sum_t weight[t, i] * src[index[t, i]]``.

    Tap-major, so that every ``index[t]`` is contiguous (NumPy gathers much faster with those).
    """

    index: np.ndarray  # (taps, n_out) int64
    weight: np.ndarray  # (taps, n_out) float32 area weights, or int32 fixed-point coefficients


def resized_size(height: int, width: int, short: int = RESIZE_SHORT) -> tuple[int, int]:
    """(height, width) after scaling the short side to ``short`` (long side rounded with Python's round)."""
    if height <= width:
        return short, round(width * short / height)
    return round(height * short / width), short


def crop_offset(size: int, crop: int = CROP) -> int:
    """Top/left offset of the centre crop: floor((size - crop) / 2)."""
    return (size - crop) // 2


@functools.lru_cache(maxsize=256)
def area_taps(src: int, dst: int, start: int, stop: int) -> AxisTaps:
    """Area-averaging weights (OpenCV INTER_AREA, shrinking) for output indices ``start..stop-1``."""
    scale = src / dst
    rows: list[list[tuple[int, float]]] = []
    for d in range(start, stop):
        begin = d * scale  # the output pixel's footprint is [begin, end) in source pixels
        end = begin + scale
        cell = min(scale, src - begin)
        last = min(math.floor(end), src - 1)
        first = min(math.ceil(begin), last)
        taps: list[tuple[int, float]] = []
        if first - begin > 1e-3:
            taps.append((first - 1, (first - begin) / cell))
        taps.extend((s, 1.0 / cell) for s in range(first, last))
        if end - last > 1e-3:
            taps.append((last, min(end - last, 1.0, cell) / cell))
        rows.append(taps)
    width = max(len(t) for t in rows)
    index = np.zeros((width, len(rows)), dtype=np.int64)
    weight = np.zeros((width, len(rows)), dtype=np.float32)
    for i, taps in enumerate(rows):
        for t, (s, w) in enumerate(taps):
            index[t, i] = s
            weight[t, i] = w
    return AxisTaps(index, weight)


@functools.lru_cache(maxsize=256)
def enlarge_taps(src: int, dst: int, start: int, stop: int) -> AxisTaps:
    """OpenCV INTER_AREA enlarging rule with 11-bit fixed-point coefficients, for output indices ``start..stop-1``."""
    inv = np.float64(dst) / np.float64(src)
    scale = np.float64(1.0) / inv
    d = np.arange(start, stop, dtype=np.float64)
    sx = np.floor(d * scale).astype(np.int64)
    f = ((d + 1) - (sx + 1) * inv).astype(np.float32)
    f = np.where(f <= 0, np.float32(0), f - np.floor(f)).astype(np.float32)
    f = np.where(sx < 0, np.float32(0), f)
    sx = np.maximum(sx, 0)
    at_end = sx >= src - 1
    f = np.where(at_end, np.float32(0), f)
    sx = np.where(at_end, src - 1, sx)
    coef = np.stack([np.rint((np.float32(1) - f) * COEF_SCALE), np.rint(f * COEF_SCALE)]).astype(np.int32)
    index = np.stack([sx, np.minimum(sx + 1, src - 1)])
    return AxisTaps(index, coef)


def _gather_rows(array: np.ndarray, taps: AxisTaps, dtype: type) -> np.ndarray:
    """``out[i] = sum_t weight[t, i] * array[index[t, i]]`` for a 2-D ``array``, computed in ``dtype``.

    Gathering whole rows is several times faster in NumPy than gathering columns, so both passes of the
    resize run on rows (the horizontal one on the transposed image); products accumulate in place.
    """
    weight = taps.weight.astype(dtype)[:, :, None]
    out = array[taps.index[0]].astype(dtype)
    out *= weight[0]
    for t in range(1, len(taps.index)):
        term = array[taps.index[t]].astype(dtype)
        term *= weight[t]
        out += term
    return out


def _horizontal_pass(image: np.ndarray, taps: AxisTaps, dtype: type) -> np.ndarray:
    """Resample the columns of ``image`` (H, W, C) -> (H, W_out * C), via the transposed (W*C, H) view."""
    channels = image.shape[2]
    # output column j, channel c reads transposed row index * channels + c
    index = (taps.index[:, :, None] * channels + np.arange(channels)).reshape(len(taps.index), -1)
    expanded = AxisTaps(index, np.repeat(taps.weight, channels, axis=1))
    transposed = np.ascontiguousarray(image.reshape(image.shape[0], -1).T)
    return np.ascontiguousarray(_gather_rows(transposed, expanded, dtype).T)


def resize_area(image: np.ndarray, height: int, width: int,
                rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None) -> np.ndarray:
    """Resize a uint8 (H, W, 3) image to (height, width) with OpenCV INTER_AREA semantics.

    ``rows``/``cols`` = (start, stop) restrict the output to that window of the full resized image.
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected an 8-bit (H, W, C) image, got {image.dtype} {image.shape}")
    src_h, src_w, channels = image.shape
    rows = rows or (0, height)
    cols = cols or (0, width)
    shape = (rows[1] - rows[0], cols[1] - cols[0], channels)
    if src_h == height and src_w == width:
        return image[rows[0]:rows[1], cols[0]:cols[1]].copy()
    if height <= src_h and width <= src_w:
        horizontal = _horizontal_pass(image, area_taps(src_w, width, *cols), np.float32)
        out = _gather_rows(horizontal, area_taps(src_h, height, *rows), np.float32)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(shape)
    # Horizontal pass in integers (x 2^11); the vertical pass follows OpenCV's vectorised 8-bit path:
    # each term is (beta * (h >> 4)) >> 16, and the sum is rounded by (. + 2) >> 2.
    horizontal = _horizontal_pass(image, enlarge_taps(src_w, width, *cols), np.int32)
    horizontal >>= 4
    row_taps = enlarge_taps(src_h, height, *rows)
    out = None
    for t in range(len(row_taps.index)):
        term = horizontal[row_taps.index[t]]
        term *= row_taps.weight[t, :, None]
        term >>= 16
        out = term if out is None else np.add(out, term, out=out)
    out += 2
    out >>= 2
    return np.clip(out, 0, 255, out=out).astype(np.uint8).reshape(shape)


def resize_crop(image: np.ndarray, short: int = RESIZE_SHORT, crop: int = CROP) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (crop, crop, 3): short side to ``short`` (INTER_AREA), then centre crop."""
    height, width = resized_size(image.shape[0], image.shape[1], short)
    top, left = crop_offset(height, crop), crop_offset(width, crop)
    return resize_area(image, height, width, rows=(top, top + crop), cols=(left, left + crop))


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) array -> uint8 (3, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def normalize_uint8(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (..., 3, H, W) -> ImageNet-normalised floats (on the images' device)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype, device=images.device).view(3, 1, 1)
    return images.to(dtype).div_(255).sub_(mean).div_(std)


def decode_rgb_pil(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to a uint8 (H, W, 3) RGB array with PIL."""
    with Image.open(path) as img:
        return np.asarray(pil_rgb8(img))


def decode_rgb_torchvision(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to a uint8 (H, W, 3) RGB array with torchvision's libjpeg-turbo/libpng decoders
    (16-bit PNGs are scaled to 8 bits)."""
    with warnings.catch_warnings():  # torchvision 0.29 announces a future move of its decoders to TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        chw = decode_image(read_file(os.fspath(path)), mode=ImageReadMode.RGB)
    hwc = chw.permute(1, 2, 0).contiguous().numpy()
    return to_8bit(hwc) if hwc.dtype == np.uint16 else hwc


def decode_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to a uint8 (H, W, 3) RGB array.

    torchvision's decoder is ~1.5x faster than PIL's on ImageNet-C's small JPEGs (benchmarks/
    bench_eval_loader.py) and gives the same pixels; formats it cannot read fall back to PIL.
    """
    try:
        return decode_rgb_torchvision(path)
    except RuntimeError:
        return decode_rgb_pil(path)


def load_eval_uint8(path: str | os.PathLike) -> torch.Tensor:
    """Decode, resize 232 (INTER_AREA), centre crop 224 -> uint8 (3, 224, 224); normalise on the device later."""
    return to_chw_tensor(resize_crop(decode_rgb(path)))


def load_eval_image(path: str | os.PathLike) -> torch.Tensor:
    """The evaluation input of one image file: decode, resize 232, crop 224, normalise -> float (3, 224, 224)."""
    return normalize_uint8(load_eval_uint8(path))
