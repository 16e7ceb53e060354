"""Segmentation validation during SyMPIE's training: the mIoU of the student's NEM in front of a frozen
DeepLab, on Cityscapes and ACDC, after every epoch.

:func:`build_validators` returns one callable ``validator(nem) -> mIoU`` per benchmark whose folder and
DeepLab checkpoint exist. ``train.py`` finds :func:`training_validators` through the package's entry point
``sympie.training_validators`` (``pyproject.toml``) and hands the validators to the trainer, which only calls
them: the training package knows nothing of segmentation.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from classification.paths import configured
from classification.training.model import SyMPIE
from segmentation.deeplab import load_deeplab
from segmentation.eval import BENCHMARKS, evaluate_benchmark

log = logging.getLogger(__name__)

TRAINING_BENCHMARKS = ("city", "acdc")  # validated every epoch -> best_city.pth, best_acdc.pth

Validator = Callable[[nn.Module], float]


def build_validators(checkpoint: str | os.PathLike, roots: Mapping[str, str | os.PathLike | None],
                     config: str | os.PathLike | None, workers: int, device: torch.device,
                     trusted: bool = False) -> dict[str, Validator]:
    """``{name: validator}`` for the benchmarks of :data:`TRAINING_BENCHMARKS` that can run: the DeepLab
    ``checkpoint`` exists and so does the folder (``roots[name]``, else the config's key); the others are
    skipped with one log line."""
    checkpoint = Path(checkpoint)
    found: dict[str, Path] = {}
    for name in TRAINING_BENCHMARKS:
        root = roots.get(name)
        root = Path(root) if root else configured(BENCHMARKS[name][0], config)
        if root is not None and root.is_dir() and checkpoint.is_file():
            found[name] = root
    skipped = [name for name in TRAINING_BENCHMARKS if name not in found]
    if skipped:
        log.info("segmentation validation skipped for %s (needs %s and the dataset folder: --cityscapes/--acdc "
                 "or config_paths.yaml)", ", ".join(skipped), checkpoint)
    if not found:
        return {}
    segmenter = load_deeplab(checkpoint, map_location="cpu", trusted=trusted).to(device)
    return {name: functools.partial(miou, name, segmenter, root, workers, device) for name, root in found.items()}


def training_validators(args: argparse.Namespace, device: torch.device) -> dict[str, Validator]:
    """The entry point ``train.py`` calls: :func:`build_validators` from its flags (``--seg-checkpoint``,
    ``--cityscapes``, ``--acdc``, ``--config``, ``--val-workers``, ``--trust-checkpoint``)."""
    return build_validators(args.seg_checkpoint, {"city": args.cityscapes, "acdc": args.acdc}, args.config,
                            args.val_workers, device, trusted=args.trust_checkpoint)


def miou(name: str, segmenter: nn.Module, root: Path, workers: int, device: torch.device, nem: nn.Module) -> float:
    """mIoU (%) of ``segmenter`` on benchmark ``name`` with ``nem`` correcting its input."""
    return evaluate_benchmark(name, segmenter, SyMPIE(nem), root=root, workers=workers, device=device)["miou"]
