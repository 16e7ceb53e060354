"""ImageNet-normalised RGB -> Caffe-style input (BGR, 0..255, mean-subtracted), what DeepLab expects.

Everything in this repository passes ImageNet-normalised images around (that is also what SyMPIE
corrects); the segmenter converts at its door.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from classification.normalization import IMAGENET_MEAN, IMAGENET_STD

CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


class CaffeRenorm(nn.Module):
    """``x -> (255 * denormalize(x))[:, ::-1] - CAFFE_MEAN_BGR`` as one per-channel affine map."""

    def __init__(self):
        super().__init__()
        std_bgr = torch.tensor(IMAGENET_STD[::-1], dtype=torch.float64)
        mean_bgr = torch.tensor(IMAGENET_MEAN[::-1], dtype=torch.float64)
        scale = 255.0 * std_bgr
        shift = 255.0 * mean_bgr - torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64)
        self.register_buffer("scale", scale.float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.float().view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) * self.scale.to(x.dtype) + self.shift.to(x.dtype)


def imagenet_to_caffe(x: torch.Tensor) -> torch.Tensor:
    """Functional form of :class:`CaffeRenorm`."""
    return CaffeRenorm().to(x.device)(x)


class ImagenetInput(nn.Module):
    """Wraps a Caffe-input model (e.g. :class:`~segmentation.deeplab.DeeplabNW`) so that it takes
    ImageNet-normalised images; the wrapped model's output is returned unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.renorm = CaffeRenorm()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(self.renorm(x))
