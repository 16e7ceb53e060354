"""The six sample photos of ``assets/samples/`` (public domain / CC0), their ImageNet labels, and the cache
folder the demos render into. Both demos (``validate.py --demo``, ``train.py --demo``) and the README's
figures take them from here.
"""
from __future__ import annotations

import os
from pathlib import Path

from classification.errors import UserInputError
from classification.paths import REPO_ROOT

SAMPLES_DIR = REPO_ROOT / "assets" / "samples"
CACHE_ENV = "SYMPIE_CACHE"

# ImageNet class index of each sample photo: the class a person would give where one exists (chelsea:
# 281 tabby cat, coffee: 967 espresso, rocket: 657 missile); the other three show no ImageNet class, so
# their label is effnet_lite0's prediction on the clean image (astronaut: 450 bobsled, hubble_deep_field:
# 110 flatworm, brick: 646 maze) and their clean accuracy is 100 % by construction.
SAMPLE_LABELS: dict[str, int] = {
    "astronaut": 450,
    "brick": 646,
    "chelsea": 281,
    "coffee": 967,
    "hubble_deep_field": 110,
    "rocket": 657,
}
PREDICTED_LABELS = ("astronaut", "brick", "hubble_deep_field")  # labels taken from the classifier


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
