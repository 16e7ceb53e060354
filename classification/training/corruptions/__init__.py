"""The corruption engine (classification/training/README.md): ImageNet-C corruptions and SyMPIE's colour warps, batched in torch.

Importing the package registers every implementation in :data:`CORRUPTIONS`.
"""
from classification.training.corruptions import blur, color, digital, noise, weather  # noqa: F401  (register)
from classification.training.corruptions.api import (
    IMAGENET_C,
    IMAGENET_C_GROUPS,
    MAX_SEVERITY,
    TRAINING_SET,
    TRAINING_SET_NO_COLOR,
    corrupt,
    corrupt_batch,
    sample_corruption,
)
from classification.training.corruptions.registry import CORRUPTIONS, register

__all__ = [
    "CORRUPTIONS",
    "IMAGENET_C",
    "IMAGENET_C_GROUPS",
    "MAX_SEVERITY",
    "TRAINING_SET",
    "TRAINING_SET_NO_COLOR",
    "corrupt",
    "corrupt_batch",
    "register",
    "sample_corruption",
]
