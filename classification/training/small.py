"""The small-scale path of ``train.py --recipe small`` (beyond the paper): SyMPIE trained on 2 CPU cores.

The paper trains on ImageNet with labels for 50k iterations on 8 GPUs. This recipe trains the same
module in front of the offline ``effnet_lite0`` on a handful of public-domain photos
(``classification/training/demo_photos/train``, none of them an ImageNet image or a demo sample), with
the classifier's own output on the clean crop as the target (``--labels classifier``), so that a
newcomer's machine can produce a useful estimator. The recipe's flags are in
``classification/training/recipes/small.yaml``, its table in ``classification/training/README.md``
("Small-scale path"); this module makes its training folder.

The photos become a flat folder of seeded variants (a random square crop of 60-100 % of the short
side, maybe mirrored, resized to :data:`VARIANT_SIZE`) in the cache (``$SYMPIE_CACHE`` or
``~/.cache/sympie``), made once per photo set.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from classification.errors import UserInputError
from classification.samples import cache_root
from classification.training.corrupted_folder import image_files
from classification.training.demo import cached_folder, variant_of

PHOTOS_DIR = Path(__file__).resolve().parent / "demo_photos" / "train"
VARIANTS_PER_PHOTO = 96  # 480 files for 5 photos: the validation split (1 in 50) holds 10, a batch of 8 fits
VARIANT_SIZE = 256
VARIANT_SEED = 0
FOLDER_PREFIX = "small_photos_v1_"  # bump the version when the variant recipe changes


def photo_variant_folder(photos: Path = PHOTOS_DIR) -> Path:
    """The flat folder of variants of ``photos`` in the cache, made once (renamed into place when complete)."""
    sources = image_files(photos) if photos.is_dir() else []
    if not sources:
        raise UserInputError(f"the small recipe's photo folder {photos} holds no images; restore "
                             f"classification/training/demo_photos/ from the repository or pass --imagenet PATH.")
    digest = hashlib.sha256()
    for path in sources:
        digest.update(Path(path).name.encode() + Path(path).read_bytes())
    target = cache_root() / f"{FOLDER_PREFIX}{digest.hexdigest()[:12]}"
    files = {variant_file(path, k) for path in sources for k in range(VARIANTS_PER_PHOTO)}
    return cached_folder(target, files, lambda staging: write_variants(staging, sources))


def write_variants(folder: Path, sources: Sequence[str]) -> None:
    """:data:`VARIANTS_PER_PHOTO` seeded variants of every photo of ``sources``, flat in ``folder``."""
    rng = random.Random(VARIANT_SEED)
    for path in sources:
        with Image.open(path) as photo:
            photo = photo.convert("RGB")
        for k in range(VARIANTS_PER_PHOTO):
            variant_of(photo, rng, VARIANT_SIZE).save(folder / variant_file(path, k), quality=95)


def variant_file(source: str, k: int) -> str:
    """The file name of variant ``k`` of the photo ``source`` in the variant folder."""
    return f"{Path(source).stem}_{k:03d}.jpg"
