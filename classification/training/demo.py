"""The training smoke run of ``train.py --demo``: a few iterations on the sample photos, on CPU.

The six photos of ``assets/samples/`` become a tiny folder in ImageNet's train layout: one folder per
ImageNet class (all 1000 wnids, so that folder indices are ImageNet class indices), 30 variants of
each photo (random crop and flip, 288x288 JPEGs) in the folder of its label
(:data:`classification.samples.SAMPLE_LABELS`). The recipe (``recipes/smoke.yaml``) is the paper's with
the offline ``effnet_lite0`` classifier and a tiny schedule, so that the run finishes in about a minute and
writes a TensorBoard log and ``final.pth``.
"""
from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageOps

from classification.atomic import atomic_folder, check_output_dir
from classification.imagenet import imagenet_class_index
from classification.samples import CACHE_ENV, SAMPLE_LABELS, cache_root, sample_path

log = logging.getLogger(__name__)

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


def cached_folder(target: Path, files: set[str], write: Callable[[Path], None]) -> Path:
    """``target``, filled by ``write`` in a temporary folder renamed into place, unless it already holds
    exactly ``files`` (relative paths, none of them empty); a folder with a file missing, added or empty
    (e.g. an interrupted copy or a clean-up) is made again.

    Every process of a torchrun launch may get here first: each renders its own copy, and the first one
    renamed into place is kept (the content is the same, it is seeded).
    """
    if target.is_dir():
        present = {p.relative_to(target).as_posix(): p.stat().st_size for p in target.rglob("*") if p.is_file()}
        if set(present) == files and all(present.values()):
            return target
        log.warning("%s has missing, extra or empty files; making it again", target)
        shutil.rmtree(target, ignore_errors=True)
    with atomic_folder(target) as staging:
        write(staging)
    return target


def variant_of(photo: Image.Image, rng: random.Random, size: int) -> Image.Image:
    """A random square crop of 60-100 % of the short side, mirrored with probability 1/2, resized to
    ``size`` x ``size`` (the variants of both training demos)."""
    side = int(min(photo.size) * rng.uniform(0.6, 1.0))
    left, top = rng.randrange(photo.width - side + 1), rng.randrange(photo.height - side + 1)
    crop = photo.crop((left, top, left + side, top + side))
    if rng.random() < 0.5:
        crop = ImageOps.mirror(crop)
    return crop.resize((size, size), Image.BILINEAR)
