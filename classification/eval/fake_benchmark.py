"""Tiny synthetic ImageNet-C / C-Bar / C-Mixed trees with the real layouts (tests and benchmarks).

Every file is a random flat-coloured JPEG with some noise, so that a simple classifier gives varied
predictions, or one of the given ``photos`` (benchmarks); the labels in ``images.txt`` are drawn from
``num_classes`` classes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from classification.eval.benchmark_sets import IMAGENETC_BAR_CORRUPTIONS, SEVERITIES, SPLIT_FILE, with_jpg_suffix
from classification.training.corruptions import IMAGENET_C_GROUPS

KINDS = ("imagenetc", "imagenetc-bar", "imagenetc-mixed")


def fake_split_lines(num_images: int, num_classes: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """(``<wnid>/<file>.JPEG``, label) pairs in the style of ImageNet's validation set."""
    labels = rng.integers(0, num_classes, size=num_images)
    return [(f"n{1440764 + int(label):08d}/ILSVRC2012_val_{i + 1:08d}.JPEG", int(label))
            for i, label in enumerate(labels)]


def fake_folders(kind: str) -> list[tuple[Path, bool]]:
    """(folder relative to the root, whether file names use .jpg) of every cell of ``kind``'s layout."""
    if kind == "imagenetc":
        folders = [(Path(group, name, str(s)), False) for group, names in IMAGENET_C_GROUPS.items()
                   for name in names for s in SEVERITIES]
        return folders + [(Path("color", str(s)), True) for s in SEVERITIES] + [(Path("clean"), True)]
    if kind == "imagenetc-bar":
        return [(Path(name, str(s)), False) for name in IMAGENETC_BAR_CORRUPTIONS for s in SEVERITIES] + \
               [(Path("clean"), True)]
    if kind == "imagenetc-mixed":
        return [(Path(str(s)), s % 2 == 0) for s in SEVERITIES]  # both suffixes occur in the wild
    raise ValueError(f"unknown benchmark kind {kind!r}; expected one of {KINDS}")


def random_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    colour = rng.integers(0, 256, size=3)
    noise = rng.integers(-20, 21, size=(*size, 3))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def write_fake_benchmark(root: str | os.PathLike, kind: str = "imagenetc", num_images: int = 4,
                         num_classes: int = 10, size: tuple[int, int] = (224, 224), seed: int = 0,
                         photos: Sequence[np.ndarray] = ()) -> Path:
    """Write a ``kind`` tree with ``num_images`` split lines under ``root``; returns ``root``.

    Files are random images of ``size`` (height, width), or the uint8 ``photos`` in turn when given.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    lines = fake_split_lines(num_images, num_classes, rng)
    count = 0
    for folder, jpg in fake_folders(kind):
        for path, _ in lines:
            target = root / folder / (with_jpg_suffix(path) if jpg else path)
            target.parent.mkdir(parents=True, exist_ok=True)
            pixels = photos[count % len(photos)] if photos else random_image(rng, size)
            Image.fromarray(pixels).save(target, format="JPEG", quality=85)
            count += 1
    root.mkdir(parents=True, exist_ok=True)
    (root / SPLIT_FILE).write_text("".join(f"{path} {label}\n" for path, label in lines))
    return root
