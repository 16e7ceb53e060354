"""Public entry points of the corruption engine: one uint8 image, or a batch of tensors on any device."""
from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from classification.errors import UserInputError
from classification.training.corruptions.convert import to_float_tensor, to_uint8_array
from classification.training.corruptions.registry import ARRAY_CORRUPTIONS, CORRUPTIONS
from classification.training.corruptions.threads import single_thread

IMAGENET_C_GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "digital": ("contrast", "elastic_transform", "jpeg_compression", "pixelate"),
    "noise": ("gaussian_noise", "impulse_noise", "shot_noise"),
    "weather": ("brightness", "fog", "frost", "snow"),
}
"""The 15 ImageNet-C corruptions by the folder ImageNet-C keeps them in, in the row order of the evaluation grid."""

IMAGENET_C: tuple[str, ...] = tuple(name for names in IMAGENET_C_GROUPS.values() for name in names)
"""The 15 ImageNet-C corruptions, in the row order of the evaluation grid."""

TRAINING_SET: tuple[str, ...] = (
    *IMAGENET_C,
    "gaussian_blur", "spatter", "speckle_noise", "saturate",
    "darken", "sunset", "night", "white",
)  # fmt: skip
"""The 23 training corruptions of SyMPIE, in the authors' order."""

TRAINING_SET_NO_COLOR: tuple[str, ...] = TRAINING_SET[:19]
"""The training set without SyMPIE's four colour warps."""

MAX_SEVERITY = 5
CPU_CHUNK = 4  # images corrupted together on the CPU
# CPU batches up to this size run on one intra-op thread of the calling thread (threads.py): they are
# too small for a second thread to pay off, and under load it makes them several times slower.
SMALL_CPU_BATCH = 8


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise UserInputError(f"unknown corruption {name!r}; expected one of: {', '.join(sorted(CORRUPTIONS))}")
    return name


def _check_severity(severity: object) -> int:
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, (int, np.integer)):
        raise UserInputError(f"severity must be an integer in 0..{MAX_SEVERITY}, got {severity!r}")
    if not 0 <= severity <= MAX_SEVERITY:
        raise UserInputError(f"severity must be in 0..{MAX_SEVERITY}, got {severity}")
    return int(severity)


def _per_image(values, count: int, what: str) -> list:
    """``values`` as a list of ``count`` items: a sequence of that length, or one value for all images."""
    if isinstance(values, (torch.Tensor, np.ndarray)):
        values = values.tolist()
    if isinstance(values, (str, int, np.integer)):
        return [values] * count
    if not isinstance(values, Sequence) or len(values) != count:
        given = len(values) if isinstance(values, Sequence) else type(values).__name__
        raise UserInputError(f"expected one {what} per image ({count}), got {given}")
    return list(values)


def corrupt_batch(
    images: torch.Tensor,
    names: Sequence[str] | str,
    severities: Sequence[int] | torch.Tensor | int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Corrupt each image of a (B,3,H,W) float batch in [0, 1] with its own corruption and severity.

    Returns a tensor of the same shape, dtype and device whose values lie on the uint8 grid
    (``round(255*y)/255``). Severity 0 leaves an image unchanged. Every random draw comes from
    ``generator`` (a ``torch.Generator`` on the images' device; a fresh unseeded one if None).
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        given = (
            f"a {tuple(images.shape)} {images.dtype} tensor"
            if isinstance(images, torch.Tensor)
            else type(images).__name__
        )
        raise UserInputError(f"images must be a Bx3xHxW floating-point tensor in [0, 1], got {given}")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise UserInputError(f"images must have at least one pixel, got a {tuple(images.shape)} tensor")
    _check_unit_range(images)
    count = images.shape[0]
    names = [_check_name(name) for name in _per_image(names, count, "corruption name")]
    severities = [_check_severity(severity) for severity in _per_image(severities, count, "severity")]
    if generator is None:
        generator = torch.Generator(device=images.device)
        generator.seed()
    elif generator.device.type != images.device.type:
        raise UserInputError(f"the generator is on {generator.device}, the images on {images.device}; use one device")

    # Half-precision batches are corrupted in float32 (FFTs and resampling need it on some devices).
    work = images.float() if images.element_size() < 4 else images
    out = work.clone()
    groups: dict[tuple[str, int], list[int]] = {}
    for i, key in enumerate(zip(names, severities)):
        if key[1] > 0:
            groups.setdefault(key, []).append(i)
    # On the CPU a few images at a time keep the intermediates in cache (2-3x faster for big batches).
    chunk = CPU_CHUNK if images.device.type == "cpu" else count
    small = images.device.type == "cpu" and count <= SMALL_CPU_BATCH
    with single_thread() if small else contextlib.nullcontext():
        for (name, severity), members in groups.items():
            for start in range(0, len(members), chunk):
                index = torch.tensor(members[start : start + chunk], device=images.device)
                corrupted = CORRUPTIONS[name](work.index_select(0, index), severity, generator)
                out.index_copy_(0, index, corrupted.to(work.dtype))
    return out.mul_(255).round_().clamp_(0, 255).div_(255).to(images.dtype)


def _check_unit_range(images: torch.Tensor) -> None:
    """Refuse values outside [0, 1]: 0..255 pixel values would come out all white and ImageNet-normalised ones
    clipped, and a NaN pixel spreads over its whole image through the blurs and FFTs."""
    if images.numel() == 0:
        return
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if 0.0 <= low and high <= 1.0:  # also false for NaN
        return
    if math.isnan(low) or math.isnan(high):
        first = int(torch.isnan(images.detach()).flatten(1).any(1).nonzero()[0])
        problem, advice = f"hold NaN (first in image {first})", "replace the NaN pixels first"
    elif math.isinf(low) or math.isinf(high):
        problem, advice = "hold infinite values", "replace them first"
    elif low >= 0.0 and high <= 255.0:
        problem, advice = f"go up to {high:g}", "0..255 pixel values? divide them by 255 first"
    elif low < 0.0:
        problem, advice = f"go down to {low:.3g}", "ImageNet-normalised? undo it first (x * std + mean)"
    else:
        problem, advice = f"range from {low:.3g} to {high:.3g}", "rescale them to [0, 1] first"
    raise UserInputError(f"images must be RGB values in [0, 1] but {problem}; {advice}.")


def _check_seed(seed: object) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise UserInputError(f"seed must be None or an integer from 0 to 2**64 - 1, got {seed!r}")
    return int(seed)


def _as_uint8_image(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise UserInputError(f"expected an RGB PIL image, got mode {image.mode!r}; convert it with image.convert('RGB')")
        image = np.asarray(image)
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        given = f"a {image.shape} {image.dtype} array" if isinstance(image, np.ndarray) else type(image).__name__
        raise UserInputError(f"image must be an HxWx3 uint8 array or an RGB PIL image, got {given}")
    if image.size == 0:
        raise UserInputError(f"image must have at least one pixel, got an array of shape {image.shape}")
    return image


def corrupt(image: np.ndarray | Image.Image, name: str, severity: int, seed: int | None = None) -> np.ndarray:
    """Corrupt one HxWx3 uint8 image (numpy or RGB PIL); returns an HxWx3 uint8 numpy array.

    The same ``seed`` gives the same output, equal to ``corrupt_batch`` on the image as a batch of one
    with a generator seeded alike; ``seed=None`` draws fresh randomness. The work runs on one intra-op
    thread of the calling thread (see ``threads.py``; no global setting is changed).
    """
    image = _as_uint8_image(image)
    name, severity, seed = _check_name(name), _check_severity(severity), _check_seed(seed)
    if severity == 0:
        return image.copy()
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    with single_thread():
        if name in ARRAY_CORRUPTIONS:
            out = ARRAY_CORRUPTIONS[name](image, severity, generator)
            return out if out.flags.writeable else out.copy()  # PIL round trips give read-only views
        return to_uint8_array(CORRUPTIONS[name](to_float_tensor(image), severity, generator)[0])


def sample_corruption(rng: random.Random, names: Sequence[str] = TRAINING_SET) -> tuple[str, int]:
    """Draw a corruption uniformly from ``names`` and a severity uniformly in 0..5."""
    return names[rng.randrange(len(names))], rng.randrange(MAX_SEVERITY + 1)
