"""ImageNet-1k's classes: wnid -> class index, the order of every torchvision and timm classifier."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def imagenet_class_index() -> dict[str, int]:
    """wnid -> class index (0..999) in sorted-wnid order."""
    from timm.data import ImageNetInfo  # imported here: loader workers never need it

    return {wnid: index for index, wnid in enumerate(sorted(ImageNetInfo().label_names()))}
