"""DeepLab-V2 with a dilated ResNet-50 backbone, state_dict-compatible with the released ``cityscapesfinal.pth``.

The network takes Caffe-style input (BGR, 0..255, mean-subtracted; see :mod:`segmentation.renorm`) and
returns ``(logits, features)``: the class scores upsampled to the input size and the backbone's output
(stride 8). As in the authors' model, only the first two atrous branches (dilation 6 and 12) of the
four-branch classifier contribute to the logits; the other two are loaded but unused. See segmentation/README.md.
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from classification.errors import UserInputError
from classification.checkpoint import match_state_dict, meta_state_dict, read_checkpoint

BACKBONES = {"ResNet50": (3, 4, 6, 3)}
ASPP_DILATIONS = (6, 12, 18, 24)
USED_BRANCHES = 2  # the authors' classifier returns after summing branches 0 and 1


class Bottleneck(nn.Module):
    """Caffe-style bottleneck: the stride sits on the first 1x1 conv, the 3x3 conv is dilated."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class AtrousClassifier(nn.Module):
    """Four parallel dilated 3x3 convolutions (ASPP of DeepLab-V2); only the first ``used`` are summed."""

    def __init__(self, in_channels: int, num_classes: int, dilations: tuple[int, ...] = ASPP_DILATIONS,
                 used: int = USED_BRANCHES):
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations)
        self.used = used
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = iter(self.conv2d_list[:self.used])
        out = next(branches)(x)
        for conv in branches:
            out = out + conv(x)
        return out


class DeeplabNW(nn.Module):
    """DeepLab-V2 (ResNet-50, output stride 8): ``forward(x) -> (logits at x's size, features)``."""

    def __init__(self, num_classes: int = 19, backbone: str = "ResNet50"):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; available: {', '.join(BACKBONES)}")
        blocks = BACKBONES[backbone]
        self.num_classes = num_classes
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = self._make_layer(64, blocks[0])
        self.layer2 = self._make_layer(128, blocks[1], stride=2)
        self.layer3 = self._make_layer(256, blocks[2], dilation=2)
        self.layer4 = self._make_layer(512, blocks[3], dilation=4)
        self.clas = AtrousClassifier(512 * Bottleneck.expansion, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        out_channels = planes * Bottleneck.expansion
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, out_channels, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_channels))
        layers = [Bottleneck(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = out_channels
        layers += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        features = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = self.layer4(self.layer3(self.layer2(self.layer1(features))))
        logits = F.interpolate(self.clas(features), size=size, mode="bilinear", align_corners=True)
        return logits, features


# --------------------------------------------------------------------------- checkpoints

@functools.lru_cache(maxsize=4)
def expected_state(num_classes: int = 19) -> dict[str, torch.Tensor]:
    """A :class:`DeeplabNW` state_dict on the meta device (keys, shapes and dtypes; no memory, no init)."""
    return meta_state_dict(lambda: DeeplabNW(num_classes))


def extract_deeplab_state_dict(obj: object, source: str = "checkpoint",
                               num_classes: int = 19) -> dict[str, torch.Tensor]:
    """The DeepLab state_dict in ``obj`` (float32): ``{'state_dict': {...}, ...}`` (``module.`` prefixes
    allowed) or a plain state_dict. Raises UserInputError naming ``source`` for wrong keys or shapes and
    for NaN/infinite weights (:func:`classification.checkpoint.match_state_dict`)."""
    return match_state_dict(obj, expected_state(num_classes), source,
                            f"a DeepLab-V2 ResNet-50 ({num_classes} classes) checkpoint",
                            "Pass cityscapesfinal.pth (see classification/training/checkpoints/README.md).")


def load_deeplab(path: str | os.PathLike, map_location: str | torch.device = "cpu", num_classes: int = 19,
                 trusted: bool = False) -> DeeplabNW:
    """A :class:`DeeplabNW` with the weights of checkpoint ``path``, in eval mode.

    Only tensors and plain containers are unpickled unless ``trusted`` (full unpickling can run code:
    use it only for files from a source you trust).
    """
    if not os.path.isfile(path):
        raise UserInputError(f"segmentation checkpoint {path} does not exist; download cityscapesfinal.pth "
                             f"(see classification/training/checkpoints/README.md) or pass --seg-checkpoint.")
    obj = read_checkpoint(path, "segmentation checkpoint", trusted, map_location)
    state = extract_deeplab_state_dict(obj, f"segmentation checkpoint {path}", num_classes)
    with torch.device("meta"):  # skip the random initialisation: every tensor comes from the checkpoint
        model = DeeplabNW(num_classes)
    model.load_state_dict(state, assign=True)
    return model.eval()
