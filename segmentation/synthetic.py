"""A tiny synthetic dataset in the Cityscapes layout, for smoke tests and benchmarks (no download needed).

``root/leftImg8bit/val/synth/synth_NNN_leftImg8bit.png`` (RGB noise with smooth structure) and
``root/gtFine/val/synth/synth_NNN_gtFine_labelIds.png`` (horizontal bands of labelIds, including ids
that map to ignore), listed in ``root/val.txt``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# Mostly valid Cityscapes labelIds, plus 0 (unlabeled) and 4 (static) which both map to ignore.
BAND_LABEL_IDS = (7, 8, 11, 0, 21, 23, 24, 26, 4, 33)


def make_synthetic_cityscapes(root: str | os.PathLike, sizes: Sequence[tuple[int, int]] = ((64, 32),) * 3,
                              seed: int = 0) -> Path:
    """Write one image/label pair per (width, height) in ``sizes`` and the ``val.txt`` listing them."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    lines = []
    for index, (width, height) in enumerate(sizes):
        image_rel = f"leftImg8bit/val/synth/synth_{index:03d}_leftImg8bit.png"
        label_rel = f"gtFine/val/synth/synth_{index:03d}_gtFine_labelIds.png"
        yy, xx = np.mgrid[0:height, 0:width]
        base = 127 + 60 * np.sin(xx[..., None] / (3 + index) + np.arange(3)) * np.cos(yy[..., None] / 5)
        image = np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        bands = rng.permutation(BAND_LABEL_IDS)
        label = np.asarray(bands, dtype=np.uint8)[(yy * len(bands)) // height]
        for rel, array in ((image_rel, image), (label_rel, label)):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / rel)
        lines.append(f"{image_rel} {label_rel}")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root
