"""The small-scale path of ``train.py --recipe small`` (beyond the paper): SyMPIE trained on 2 CPU cores.

The paper trains on ImageNet with labels for 50k iterations on 8 GPUs. This recipe trains the same module
in front of the offline ``effnet_lite0`` on a folder of labelled photos given with ``--imagenet PATH`` (the
shipped demo model: 500 ImageNet photos, one per class, named in its model card), so that a newcomer's
machine can produce a useful estimator. The folder is turned into seeded variants of its training photos
(:mod:`classification.training.photo_folder`, which also holds out every 5th photo for the benchmark).
Every setting below was chosen by experiment; the table is in ``classification/training/README.md``
("Small-scale path").
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from classification.errors import UserInputError
from classification.training.photo_folder import training_folder

# the colour corruptions the demo model is meant to undo, drawn three times as often as the others
COLOR_CORRUPTIONS = ("brightness", "contrast", "saturate", "darken", "sunset", "night", "white")

# flag -> value of the small-scale recipe (explicit flags still win)
SMALL_SETTINGS = {
    "classifiers": ["effnet_lite0"],
    "device": "cpu",
    "init": "identity",
    "labels": "classifier",
    "distill": "kl",
    "temperature": 1.0,
    "clean_fraction": 0.25,
    "freeze_nem_bn": True,
    "round2_weight": 0.0,
    "lr": 5e-5,
    "batch_size": 8,
    "epochs": 1,
    "iters_per_epoch": 300,
    "workers": 0,
    "val_workers": 0,
    "val_iters": 1,
    "print_every": 25,
    "image_every": 0,
    "logdir": "logs/sympie_small",
    "corruptions": None,  # set below: the paper's 23 with the colour ones weighted
}


def small_corruption_mix() -> list[str]:
    """The 23 training corruptions, each colour corruption listed three times (so drawn 3x as often)."""
    from classification.training.corruptions import TRAINING_SET

    return [name for name in TRAINING_SET for _ in range(3 if name in COLOR_CORRUPTIONS else 1)]


def parse_small_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line re-parsed with the small recipe's settings as defaults; ``--imagenet`` names the
    photo folder, replaced by the folder of its training variants."""
    parser.set_defaults(**{**SMALL_SETTINGS, "corruptions": small_corruption_mix()})
    args = parser.parse_args(argv)
    if args.imagenet is None:
        raise UserInputError("--recipe small trains on a folder of labelled photos (one sub-folder per ImageNet wnid); "
                             "pass it with --imagenet PATH, e.g. --imagenet ../shared/photos/imagenet-sample-even "
                             "(see classification/training/checkpoints/README.md).")
    args.imagenet = str(training_folder(args.imagenet))
    return args
