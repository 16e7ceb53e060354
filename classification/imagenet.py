"""ImageNet-1k's classes (wnid -> class index, the order of every torchvision and timm classifier) and the name
of the split file that lists a benchmark's images with their class index (written by data/make_splits.py and
classification/eval/render.py, read by classification/eval/imagenetc.py)."""
from __future__ import annotations

import functools

SPLIT_FILE = "images.txt"  # '<wnid>/<file>.JPEG <class index>' per line


@functools.lru_cache(maxsize=1)
def imagenet_class_index() -> dict[str, int]:
    """wnid -> class index (0..999) in sorted-wnid order."""
    from timm.data import ImageNetInfo  # imported here: loader workers never need it

    return {wnid: index for index, wnid in enumerate(sorted(ImageNetInfo().label_names()))}
