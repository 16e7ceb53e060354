"""Training data of the small-scale path: a folder of labelled photos -> seeded variants in ImageNet's layout.

The photo folder holds one sub-folder per ImageNet class, named by its wnid (``n01440764/``, ...), as
ImageNet's own ``train`` folder and the collection the demo model was trained on do (model card:
``classification/training/checkpoints/README.md``); any number of classes and photos per class. Photo
``i`` of the sorted list (sorted by class folder, then file name) is held out when
``i % HELDOUT_EVERY == 0``: it is never trained on, and ``benchmarks/bench_demo_model.py`` measures on it.

The other photos become :data:`VARIANTS_PER_PHOTO` seeded variants each (a random square crop of 60-100 %
of the short side, maybe mirrored, resized to :data:`VARIANT_SIZE`), written into a folder with all 1000
ImageNet class folders so that folder ``i`` is the classifier's class ``i`` (``--labels dataset`` and
``--labels classifier`` both work on it). The folder lives in the cache (``$SYMPIE_CACHE`` or
``~/.cache/sympie``), is made once per photo set and is renamed into place when complete.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageOps

from classification.atomic import atomic_folder
from classification.errors import UserInputError
from classification.imagenet import imagenet_class_index
from classification.samples import cache_root
from classification.training.corrupted_folder import image_files

log = logging.getLogger(__name__)

HELDOUT_EVERY = 5        # photo i of the sorted list is held out when i % 5 == 0 (100 of the 500 photos)
VARIANTS_PER_PHOTO = 8   # 3200 training files from 400 photos
VARIANT_SIZE = 256
VARIANT_SEED = 0
FOLDER_PREFIX = "photo_variants_v1_"  # bump the version when the variant recipe changes


def labelled_photos(folder: str | os.PathLike) -> list[tuple[Path, int]]:
    """``(photo, ImageNet class index)`` of every photo under ``folder``'s wnid sub-folders, sorted.

    A folder that is missing, empty, flat (photos but no class folders) or has sub-folders that are not
    ImageNet wnids is refused in one sentence."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"photo folder {folder} does not exist; pass the folder of labelled photos "
                             f"(one sub-folder per ImageNet wnid) with --imagenet PATH.")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        what = "holds photos but no class sub-folders" if image_files(folder) else "is empty"
        raise UserInputError(f"photo folder {folder} {what}; it needs one sub-folder per ImageNet class named by "
                             f"its wnid (n01440764/, ...) with the photos of that class in it.")
    index = imagenet_class_index()
    unknown = [name for name in classes if name not in index]
    if unknown:
        raise UserInputError(f"photo folder {folder} has sub-folders that are not ImageNet wnids ({', '.join(unknown[:3])}"
                             f"{', ...' if len(unknown) > 3 else ''}); name each class folder by its wnid.")
    photos = [(Path(path), index[name]) for name in classes for path in image_files(folder / name)]
    if not photos:
        raise UserInputError(f"photo folder {folder} has {len(classes)} class folders but no photos in them.")
    return photos


def split_photos(photos: Sequence[tuple[Path, int]]) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(training photos, held-out photos) by the fixed rule of the module docstring."""
    train = [p for i, p in enumerate(photos) if i % HELDOUT_EVERY]
    heldout = [p for i, p in enumerate(photos) if not i % HELDOUT_EVERY]
    return train, heldout


def read_photo(path: Path) -> Image.Image:
    """The RGB photo at ``path``; an undecodable file is refused in one sentence naming it."""
    try:
        with Image.open(path) as photo:
            return photo.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserInputError(f"cannot decode photo {path} ({type(err).__name__}); replace or delete it.") from None


def training_folder(photos_dir: str | os.PathLike) -> Path:
    """The cached ImageNet-layout folder of variants of the training photos of ``photos_dir``."""
    train, _ = split_photos(labelled_photos(photos_dir))
    digest = hashlib.sha256()
    for path, label in train:
        digest.update(f"{label}/{path.name}".encode() + path.read_bytes())
    target = cache_root() / f"{FOLDER_PREFIX}{digest.hexdigest()[:12]}"
    wnids = sorted(imagenet_class_index())
    files = {variant_file(wnids[label], path, k) for path, label in train for k in range(VARIANTS_PER_PHOTO)}
    return cached_folder(target, files, lambda staging: write_variants(staging, train, wnids))


def write_variants(root: Path, photos: Sequence[tuple[Path, int]], wnids: Sequence[str]) -> None:
    """All 1000 class folders, and :data:`VARIANTS_PER_PHOTO` seeded variants of each photo in its class's."""
    for wnid in wnids:
        (root / wnid).mkdir()
    rng = random.Random(VARIANT_SEED)
    for path, label in photos:
        photo = read_photo(path)
        for k in range(VARIANTS_PER_PHOTO):
            variant_of(photo, rng, VARIANT_SIZE).save(root / variant_file(wnids[label], path, k), quality=95)


def variant_file(wnid: str, photo: Path, k: int) -> str:
    """Where variant ``k`` of ``photo`` goes, relative to the variant folder: the photo's class folder and
    its file name (unique within a class folder, so photos of the same stem in two classes never collide)."""
    return f"{wnid}/{photo.name}_{k:02d}.jpg"


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
    ``size`` x ``size``."""
    side = int(min(photo.size) * rng.uniform(0.6, 1.0))
    left, top = rng.randrange(photo.width - side + 1), rng.randrange(photo.height - side + 1)
    crop = photo.crop((left, top, left + side, top + side))
    if rng.random() < 0.5:
        crop = ImageOps.mirror(crop)
    return crop.resize((size, size), Image.BILINEAR)
