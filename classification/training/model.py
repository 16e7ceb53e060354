"""The SyMPIE module: noise estimation (NEM), differentiable warping (DWM), clamp and wrappers.

Everything here takes ImageNet-normalised images (B,3,H,W). The NEM predicts 37 numbers per image,
``[M (3x3 colour matrix, row-major) | s (colour shift, 3) | K (5x5 kernel, row-major)]``, and the DWM
applies them: ``out = conv(einsum(im + s, M), K)``. See classification/training/README.md.

``ColModule``'s parameter names are fixed by the released checkpoint ``sympie.pth`` and must not change.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from classification.frozen import freeze
from classification.normalization import IMAGENET_MEAN, IMAGENET_STD
from classification.checkpoint import CHECKPOINTS_README, match_state_dict, meta_state_dict, read_checkpoint

NUM_PARAMS = 37
ESTIMATION_SIZE = 224   # the NEM always sees a 224x224 view ...
ESTIMATION_RESIZE = 232  # ... taken as Resize(232) + CenterCrop(224) when the input is another size


class ConvBlock(nn.Module):
    """Downsampling residual block of the NEM: pool /4, two 3x3 convs, skip from conv1's output."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pool = nn.AvgPool2d(kernel_size=5, stride=4, padding=1)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.conv1(self.pool(x))
        y = self.bn2(self.conv2(self.relu(self.bn1(x0))))
        return x0 + self.relu(y)


class ColModule(nn.Module):
    """Noise Estimation Module: image -> 37 warp parameters (no output activation)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            ConvBlock(64, 128),
            ConvBlock(128, 256),
            ConvBlock(256, 512),
        )
        self.gpool = nn.AdaptiveAvgPool2d(1)
        self.out = nn.Linear(512, NUM_PARAMS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.out.weight.dtype)
        return self.out(torch.flatten(self.gpool(self.backbone(x)), 1))


IDENTITY_PARAMS = (1., 0., 0., 0., 1., 0., 0., 0., 1.,   # M = I
                   0., 0., 0.,                            # s = 0
                   *(1. if i == 12 else 0. for i in range(25)))  # K = unit impulse at the centre of 5x5


@torch.no_grad()
def identity_init_(nem: ColModule) -> ColModule:
    """Make the NEM predict the identity warp for every image (beyond the paper, ``train.py --init identity``).

    The output layer's weights become zero and its bias the identity parameters (colour matrix I, shift 0,
    a 5x5 kernel with 1 at the centre), so ``ColWarp(x, nem(x)) == x`` exactly and training can only move
    away from the input as the loss asks. The backbone keeps its (random) initialisation.
    """
    nem.out.weight.zero_()
    nem.out.bias.copy_(torch.tensor(IDENTITY_PARAMS, dtype=nem.out.bias.dtype))
    return nem


def check_images(x: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """Raise ValueError unless ``x`` is a floating (B,3,H,W) tensor, of ``dtype`` (the weights') if given and
    autocast is off (a float16 batch into a float32 model would fail inside a convolution)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected ImageNet-normalised images as a float tensor of shape (B,3,H,W), got {got}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"expected images of at least one pixel, got a tensor of shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(f"expected {dtype} images, the dtype of the model's weights, got {x.dtype}; convert the "
                         f"images (x.to({dtype})) or the model (model.to({x.dtype})), or run under torch.autocast")


def check_params(params: torch.Tensor, batch: int) -> None:
    """Raise ValueError unless ``params`` is a (batch, 37) tensor."""
    if not isinstance(params, torch.Tensor) or params.dim() != 2 or params.shape != (batch, NUM_PARAMS):
        got = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(f"expected warp parameters of shape ({batch}, {NUM_PARAMS}), got {got}")


def split_params(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,37) -> colour matrix (B,3,3), shift (B,3), kernel (B,5,5)."""
    b = params.shape[0]
    return params[:, :9].reshape(b, 3, 3), params[:, 9:12], params[:, 12:].reshape(b, 5, 5)


def col_warp(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply per-image warp parameters: shift, colour matrix (``bdhw,bdc->bchw``), then a 5x5 kernel.

    The kernel is cross-correlated with every channel (zero padding 2); all images go through one
    grouped convolution.
    """
    check_images(images)
    check_params(params, images.shape[0])
    b, c, h, w = images.shape
    matrix, shift, kernel = split_params(params.to(images.dtype))
    coloured = torch.einsum("bdhw,bdc->bchw", images + shift[:, :, None, None], matrix)
    if b == 0:  # an empty batch: a grouped convolution needs at least one group
        return coloured
    weight = kernel.repeat_interleave(c, dim=0).unsqueeze(1)  # (B*3, 1, 5, 5)
    out = F.conv2d(coloured.reshape(1, b * c, h, w), weight, padding=2, groups=b * c)
    return out.view(b, c, h, w)


class ColWarp(nn.Module):
    """Differentiable Warping Module (no parameters): ``forward(images, params)``."""

    def forward(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return col_warp(images, params)


class Clamp(nn.Module):
    """In eval mode, clamp normalised images to the image of [0, 1]; identity in training mode."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("min", (0 - mean_t) / std_t)
        self.register_buffer("max", (1 - mean_t) / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x
        return torch.clamp(x, min=self.min.to(x.dtype), max=self.max.to(x.dtype))


class SyMPIE(nn.Module):
    """SyMPIE as a drop-in pre-processor: ``SyMPIE.from_checkpoint(path)(images) -> corrected images``.

    Parameters are estimated on a 224x224 view (the image itself, or Resize(232) + CenterCrop(224) of
    it for other sizes); the warp runs at full resolution, then the clamp (active in eval mode).
    """

    def __init__(self, nem: nn.Module | None = None):
        super().__init__()
        self.nem = nem if nem is not None else ColModule()
        self.warp = ColWarp()
        self.clamp = Clamp()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
                        trusted: bool = False, fused: bool = True) -> "SyMPIE":
        """Load a NEM checkpoint (any form :func:`load_nem_checkpoint` accepts), in eval mode.

        ``fused``: the NEM is the inference-only :class:`~classification.training.inference.FusedNEM`
        (same outputs, faster; ``train()`` is refused); ``fused=False`` gives the plain ``ColModule``.
        """
        nem = ColModule()
        nem.load_state_dict(load_nem_checkpoint(path, map_location, trusted))
        return cls(nem).eval().fused() if fused else cls(nem).eval()

    def fused(self) -> "SyMPIE":
        """This SyMPIE with its NEM replaced by a :class:`~classification.training.inference.FusedNEM`
        built from it (eval mode, inference only); the warp and clamp are shared."""
        from classification.training.inference import FusedNEM  # inference.py builds on this module

        return type(self)(FusedNEM(self.nem)).eval()

    def estimate(self, images: torch.Tensor) -> torch.Tensor:
        """The (B,37) warp parameters of ``images``."""
        check_images(images, self.nem.out.weight.dtype)
        return self.nem(estimation_view(images))

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Warp then clamp."""
        return self.clamp(self.warp(images, params))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply(images, self.estimate(images))


def estimation_view(images: torch.Tensor) -> torch.Tensor:
    """The 224x224 view the NEM sees: the images themselves, or Resize(232, antialias) + CenterCrop(224)."""
    if tuple(images.shape[-2:]) == (ESTIMATION_SIZE, ESTIMATION_SIZE):
        return images
    view = TF.resize(images, [ESTIMATION_RESIZE], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(view, [ESTIMATION_SIZE, ESTIMATION_SIZE])


class CorrectColMulti(SyMPIE):
    """SyMPIE in front of one of several frozen classifiers.

    ``forward(x, clasid) -> (logits, params, corrected_x)``. The classifiers stay frozen and in eval mode
    whatever ``.train()`` is called with.
    """

    def __init__(self, classifiers: Sequence[nn.Module], nem: ColModule | None = None):
        super().__init__(nem)
        if len(classifiers) == 0:
            raise ValueError("CorrectColMulti needs at least one classifier")
        self.classifiers = nn.ModuleList(freeze(c) for c in classifiers)

    def train(self, mode: bool = True) -> "CorrectColMulti":
        super().train(mode)
        self.classifiers.eval()
        return self

    def forward(self, x: torch.Tensor, clasid: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        params = self.estimate(x)
        corrected = self.apply(x, params)
        return self.classifiers[clasid](corrected), params, corrected


class CorrectCol(CorrectColMulti):
    """SyMPIE in front of one frozen classifier: ``forward(x) -> (logits, params, corrected_x)``."""

    def __init__(self, classifier: nn.Module, nem: ColModule | None = None):
        super().__init__([classifier], nem)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return super().forward(x, 0)


# --------------------------------------------------------------------------- checkpoints

NEM_PREFIX = "nem."
CHECKPOINT_MODEL_KEYS = ("student", "model", "state_dict")


def extract_nem_state_dict(obj: Mapping, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The NEM state_dict inside ``obj`` (float32): a plain NEM state_dict, a ``module.``-prefixed one
    (DataParallel/DDP), or a training checkpoint (``{'student': CorrectColMulti state_dict, ...}``).

    Raises UserInputError naming ``source`` for wrong keys or shapes and for NaN/infinite weights
    (:func:`classification.checkpoint.match_state_dict`).
    """
    return match_state_dict(obj, meta_state_dict(ColModule), source, "a SyMPIE (NEM) checkpoint",
                            "Pass sympie.pth or a file written by train.py.", CHECKPOINT_MODEL_KEYS, NEM_PREFIX)


def load_nem_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                        trusted: bool = False) -> dict[str, torch.Tensor]:
    """Read ``path`` (tensors only unless ``trusted``) and return the NEM state_dict in it."""
    obj = read_checkpoint(path, "SyMPIE checkpoint", trusted, map_location, if_missing=f"see {CHECKPOINTS_README}")
    return extract_nem_state_dict(obj, source=f"SyMPIE checkpoint {path}")
