"""ImageNet-1k's classes (wnid -> class index, the order of every torchvision and timm classifier) and the name
of the split file that lists a benchmark's images with their class index (written by data/make_splits.py and
classification/eval/render.py, read by classification/eval/benchmark_sets.py)."""
from __future__ import annotations

import functools

SPLIT_FILE = "images.txt"  # '<wnid>/<file>.JPEG <class index>' per line
STORED_SUFFIXES = (".JPEG", ".jpg")
"""The names the image of a split line (``<wnid>/<stem>.JPEG``) may have in any cell folder, matched
exactly: ImageNet-C's ``.JPEG``, or ``.jpg`` as the clean, colour and re-encoded folders store them."""


@functools.lru_cache(maxsize=1)
def imagenet_class_index() -> dict[str, int]:
    """wnid -> class index (0..999) in sorted-wnid order."""
    from timm.data import ImageNetInfo  # imported here: loader workers never need it

    return {wnid: index for index, wnid in enumerate(sorted(ImageNetInfo().label_names()))}
