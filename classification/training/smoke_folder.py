"""The training smoke run of ``train.py --demo``: a few iterations on the sample photos, on CPU.

The six photos of ``assets/samples/`` become a tiny folder in ImageNet's train layout: one folder per
ImageNet class (all 1000 wnids, so that folder indices are ImageNet class indices), 30 variants of
each photo (random crop and flip, 288x288 JPEGs) in the folder of its label
(:data:`classification.samples.SAMPLE_LABELS`). The recipe (``recipes/smoke.yaml``) is the paper's with
the offline ``effnet_lite0`` classifier and a tiny schedule, so that the run finishes in about a minute and
writes a TensorBoard log and ``final.pth``.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from classification.atomic import check_output_dir
from classification.imagenet import imagenet_class_index
from classification.samples import CACHE_ENV, SAMPLE_LABELS, cache_root, sample_path
from classification.training.photo_folder import cached_folder, variant_of

VARIANTS_PER_PHOTO = 30
VARIANT_SIZE = 288
DEMO_SEED = 0
FOLDER_NAME = "train_demo_v1"  # bump the suffix when the recipe above changes

def demo_image_folder() -> Path:
    """The demo folder in the cache (``$SYMPIE_CACHE`` or ``~/.cache/sympie``), made once (see
    :func:`cached_folder`)."""
    target = check_output_dir(cache_root() / FOLDER_NAME, f"the demo cache folder (${CACHE_ENV}/{FOLDER_NAME})")
    wnids = sorted(imagenet_class_index())
    files = {variant_file(wnids[label], name, k) for name, label in SAMPLE_LABELS.items()
             for k in range(VARIANTS_PER_PHOTO)}
    return cached_folder(target, files, lambda root: write_demo_image_folder(root, wnids))


def write_demo_image_folder(root: Path, wnids: Sequence[str]) -> None:
    """All 1000 class folders, the sample photos' variants in their labels' folders."""
    for wnid in wnids:
        (root / wnid).mkdir()
    rng = random.Random(DEMO_SEED)
    for name, label in sorted(SAMPLE_LABELS.items()):
        with Image.open(sample_path(name)) as photo:
            photo = photo.convert("RGB")
        for k in range(VARIANTS_PER_PHOTO):
            variant_of(photo, rng, VARIANT_SIZE).save(root / variant_file(wnids[label], name, k), quality=95)


def variant_file(wnid: str, name: str, k: int) -> str:
    """Where variant ``k`` of sample photo ``name`` goes in the demo folder, relative to it."""
    return f"{wnid}/{name}_{k:02d}.jpg"
