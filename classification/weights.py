"""The one reader of weight files (SyMPIE NEM, DeepLab, classifiers): trust policy, key check, finite check.

* Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only. A file that
  pickles other Python objects (unpickling them can run code from the file) is refused with a sentence
  unless the script was given ``--trust-checkpoint`` (:func:`add_trust_argument`); there is no silent
  fallback.
* :func:`match_state_dict` finds the state_dict in a checkpoint (inside ``state_dict``/``student``/...,
  ``module.`` prefixes of DataParallel/DDP removed), compares its keys and shapes with the model's in
  one sentence, refuses NaN or infinite weights (naming the first bad tensor), and casts floating
  tensors to the model's dtypes (float16 checkpoints load into float32 models).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from classification.errors import UserInputError, option

TRUST_FLAG = "--trust-checkpoint"
DDP_PREFIX = "module."
MAX_LISTED_KEYS = 6


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint``: allow full unpickling of the checkpoint files this script reads."""
    parser.add_argument(TRUST_FLAG, action="store_true",
                        help="let checkpoint files hold arbitrary Python objects (full unpickling can run code from "
                             "the file: only for files from a source you trust; default: tensors only)")


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint", trusted: bool = False,
                    map_location: str | torch.device = "cpu") -> object:
    """``torch.load`` of ``path``, tensors and plain containers only unless ``trusted``.

    ``what`` names the file in the messages (e.g. "SyMPIE checkpoint"). Every failure is a UserInputError.
    """
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a folder; pass the checkpoint file itself.")
    if not path.is_file():
        raise UserInputError(f"{what} {path} does not exist; see classification/training/checkpoints/README.md.")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        if not trusted and ("can still be loaded" in str(err) or "Unsupported global" in str(err)):
            raise UserInputError(f"{what} {path} holds Python objects besides tensors, and unpickling them can run "
                                 f"code from the file; if you trust its source, pass "
                                 f"{option(TRUST_FLAG, 'trust_checkpoint=True')}.") from None
        raise UserInputError(f"{what} {path} could not be read by torch.load ({type(err).__name__}); it is truncated "
                             f"or damaged (an interrupted download?) or not a PyTorch checkpoint: fetch it again.") from None


def _listing(keys: Sequence[str]) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else ""
    return ", ".join(keys[:MAX_LISTED_KEYS]) + more


def match_state_dict(obj: object, expected: Mapping[str, torch.Tensor], source: str, kind: str, hint: str,
                     containers: Sequence[str] = ("state_dict",), prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The state_dict in ``obj`` that fits a model whose state_dict is ``expected`` (meta tensors will do).

    ``obj`` is a state_dict or a dict holding one under the first of ``containers`` present; ``module.``
    prefixes are removed; with ``prefix``, when some keys start with it, only those are kept (prefix
    removed). ``source`` names the file, ``kind`` the model ("a DeepLab-V2 ResNet-50 checkpoint") and
    ``hint`` what to pass instead. Raises UserInputError for wrong keys or shapes and non-finite weights.
    """
    if not isinstance(obj, Mapping):
        raise UserInputError(f"{source} holds a {type(obj).__name__}, not a state_dict; expected {kind}. {hint}")
    for key in containers:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {str(k).removeprefix(DDP_PREFIX): v for k, v in obj.items()}
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state
                   and (not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape)]
    if missing or unexpected or wrong_shape:
        raise UserInputError(f"{source} is not {kind}: missing keys: {_listing(missing)}; unexpected keys: "
                             f"{_listing(unexpected)}; wrong shapes: {_listing(wrong_shape)}. {hint}")
    check_finite(state, source)
    return {k: state[k].to(expected[k].dtype) if state[k].is_floating_point() and expected[k].is_floating_point()
            else state[k] for k in expected}


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a state_dict holding NaN or infinite values: every prediction would be garbage."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserInputError(f"{source} holds NaN or infinite values (first in tensor '{key}'); the file is "
                                 f"damaged or comes from a diverged run: use another checkpoint.")


def meta_state_dict(build) -> dict[str, torch.Tensor]:
    """The state_dict of the model ``build()`` makes, on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return dict(build().state_dict())
