"""The public-domain / CC0 photos of the repository, their ImageNet labels, and the cache folder the demos
render into.

``assets/demo_photos/`` holds twelve photos (short side 320); ``assets/samples/`` holds 224x224 crops of six
of them. The embedded demo (``validate.py --demo``) uses the twelve, the training smoke run
(``train.py --demo``) and the README's figures the six samples.
"""
from __future__ import annotations

import os
from pathlib import Path

from classification.errors import UserInputError
from classification.paths import REPO_ROOT

SAMPLES_DIR = REPO_ROOT / "assets" / "samples"
DEMO_PHOTOS_DIR = REPO_ROOT / "assets" / "demo_photos"
CACHE_ENV = "SYMPIE_CACHE"

# ImageNet class index of each photo: the class a person would give where one exists (camera: 872 tripod,
# chelsea: 281 tabby cat, coffee: 967 espresso, grace_hopper: 652 military uniform, rocket: 657 missile);
# the others show no ImageNet class, so their label is effnet_lite0's top-1 on the photo's centre view
# (Resize 256, CenterCrop 224; astronaut: 450 bobsled, brick: 646 maze, grass: 805 soccer ball, gravel: 539
# doormat, hubble_deep_field: 111 nematode, raccoon: 362 badger, retina: 643 mask).
PHOTO_LABELS: dict[str, int] = {
    "astronaut": 450,
    "brick": 646,
    "camera": 872,
    "chelsea": 281,
    "coffee": 967,
    "grace_hopper": 652,
    "grass": 805,
    "gravel": 539,
    "hubble_deep_field": 111,
    "raccoon": 362,
    "retina": 643,
    "rocket": 657,
}
PREDICTED_LABELS = ("astronaut", "brick", "grass", "gravel", "hubble_deep_field", "raccoon", "retina")
SAMPLE_NAMES = ("astronaut", "brick", "chelsea", "coffee", "hubble_deep_field", "rocket")  # assets/samples/
SAMPLE_LABELS: dict[str, int] = {name: PHOTO_LABELS[name] for name in SAMPLE_NAMES}


def sample_path(name: str, samples_dir: Path = SAMPLES_DIR) -> Path:
    """The file of sample photo ``name``; a missing one is the user's to restore."""
    path = samples_dir / f"{name}.png"
    if not path.is_file():
        raise UserInputError(f"sample photo {path} is missing; restore assets/samples/ from the repository.")
    return path


def cache_root() -> Path:
    """Where the demos keep what they render: ``$SYMPIE_CACHE``, default ``~/.cache/sympie``."""
    base = os.environ.get(CACHE_ENV)
    return Path(base) if base else Path.home() / ".cache" / "sympie"
