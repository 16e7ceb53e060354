"""The flags several scripts share, built in one place so that they are spelled and explained the same way
everywhere. The first spelling of each is the one the READMEs use; the others are kept as aliases.

* ``--clas`` (alias ``--classifiers``) and ``--random-init`` (alias ``--random-classifiers``): the frozen
  classifier(s) (validate.py, eval_vizwiz.py, train.py);
* ``--colm``: the SyMPIE checkpoint (validate.py, eval_vizwiz.py, segmentation/eval.py, qualitatives.py);
* ``--seg-checkpoint`` (alias ``--ckpt``): the DeepLab-V2 checkpoint (segmentation/eval.py,
  qualitatives.py, train.py's segmentation validation).

:func:`parse_command_line` is how the scripts' ``main`` starts: the flags, then INFO logging to stderr.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from classification.checkpoint import CHECKPOINT_DIR, DEFAULT_SEGMENTER

Parser = argparse.ArgumentParser | argparse._ArgumentGroup
CLASSIFIER_CHOICES = "a name of classification/classifiers.py, 'timm:<model>' or a model file"


def add_classifier_args(parser: Parser, default: str | None = "rn50_2", several: bool = False,
                        default_text: str | None = None) -> None:
    """``--clas`` and ``--random-init``. With ``several`` the flag takes one or more names (``args.classifiers``,
    a list), else one (``args.clas``); ``default_text`` replaces the default in the help."""
    shown = default_text or "%(default)s"  # written out here, so ArgumentDefaultsHelpFormatter adds nothing
    if several:
        parser.add_argument("--clas", "--classifiers", dest="classifiers", nargs="+", default=[default],
                            help=f"frozen classifiers ({CLASSIFIER_CHOICES}); step `it` uses classifier `it %% n` "
                                 f"(default: {shown})")
    else:
        parser.add_argument("--clas", "--classifiers", dest="clas", default=default,
                            help=f"classifier: {CLASSIFIER_CHOICES} (default: {shown})")
    parser.add_argument("--random-init", "--random-classifiers", dest="random_init", action="store_true",
                        help="random classifier weights (smoke tests and benchmarks; no download)")


def add_colm_argument(parser: Parser, default: str | None = "none", note: str = "") -> None:
    """``--colm``: 'none', a checkpoint name in ``CHECKPOINT_DIR`` or a path (see ``resolve_colm``); with
    ``default=None`` the script decides, and ``note`` says how."""
    shown = "" if default is None else " (default: %(default)s)"
    parser.add_argument("--colm", default=default,
                        help=f"SyMPIE checkpoint: 'none', a name in {CHECKPOINT_DIR} (without .pth) or a path"
                             f"{note}{shown}")


def add_segmenter_args(parser: Parser, note: str = "") -> None:
    """``--seg-checkpoint``: the DeepLab-V2 checkpoint."""
    parser.add_argument("--seg-checkpoint", "--ckpt", dest="seg_checkpoint", default=str(DEFAULT_SEGMENTER),
                        help=f"DeepLab-V2 checkpoint{note} (default: %(default)s)")


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                       log_format: str = "%(message)s") -> argparse.Namespace:
    """``parser.parse_args(argv)``, with INFO logging to stderr in ``log_format``."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=log_format)
    return args
