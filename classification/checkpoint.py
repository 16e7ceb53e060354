"""Checkpoint files: where they live, how they are read (with the trust policy), written, and what a training
checkpoint holds. Every ``torch.load`` and ``torch.save`` of the package goes through this module.

* Names: ``--colm`` accepts ``none``, the name of a file in :data:`CHECKPOINT_DIR` without ``.pth``
  (``sympie``, ``best_uw``) or a path (:func:`resolve_colm`).
* Reading (:func:`read_checkpoint`): ``torch.load(weights_only=True)``, tensors and plain containers only.
  A file that pickles other Python objects (unpickling them can run code from the file) is refused with a
  sentence unless the script was given ``--trust-checkpoint`` (:func:`add_trust_argument`); there is no
  silent fallback. A damaged file is one sentence too; running out of memory or Ctrl-C is not a damaged file.
* :func:`match_state_dict` finds the state_dict in a checkpoint (inside ``state_dict``/``student``/...,
  ``module.`` prefixes of DataParallel/DDP removed), compares its keys and shapes with the model's in one
  sentence, refuses NaN or infinite weights (naming the first bad tensor) and casts floating tensors to
  the model's dtypes (float16 checkpoints load into float32 models).
* Writing (:func:`save_checkpoint`): ``torch.save`` to a temporary file renamed into place, so a killed run
  never leaves a truncated checkpoint.
* Training state: the trainable part of a model, the random generators of a process, and the training
  checkpoint of ``train.py`` (``checkpoint.pth``, read back by ``--resume``).
"""
from __future__ import annotations

import argparse
import os
import pickle
import pickletools
import random
import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn as nn

from classification.atomic import atomic_path
from classification.errors import UserInputError, option

CHECKPOINT_DIR = Path(__file__).resolve().parent / "training" / "checkpoints"
CHECKPOINT_SUFFIX = ".pth"
CHECKPOINTS_README = "classification/training/checkpoints/README.md"
DEFAULT_SEGMENTER = CHECKPOINT_DIR / "cityscapesfinal.pth"  # the authors' DeepLab-V2 trained on Cityscapes
TRUST_FLAG = "--trust-checkpoint"
DDP_PREFIX = "module."
MAX_LISTED_KEYS = 6
TRAINING_FORMAT = "sympie-training-checkpoint-1"
FROZEN_PREFIX = "classifiers."  # the frozen classifiers inside a CorrectColMulti: never saved for training

# What torch.load raises for a truncated or damaged file or one that is no checkpoint at all (found by cutting
# and flipping bytes of both of torch's formats; a zip cut short can fail a seek with EINVAL). MemoryError,
# torch.OutOfMemoryError and KeyboardInterrupt are not among them: they propagate.
DAMAGED = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError, IndexError, TypeError,
           AssertionError, struct.error, zipfile.BadZipFile, OSError)
# What unpickling a trusted file raises when it refers to code that is not installed (or a damaged name).
MISSING_CODE = (ImportError, AttributeError)
LEGACY_PICKLES = 5  # torch's pre-1.6 format: magic number, protocol, system info, the object, storage keys


# --------------------------------------------------------------------------- names

def resolve_colm(colm: str, checkpoint_dir: str | os.PathLike = CHECKPOINT_DIR) -> Path | None:
    """``none`` (any case) -> None; an existing file -> itself; a name -> ``<checkpoint_dir>/<name>.pth``.

    A name or path that matches no file raises UserInputError listing the checkpoints that are there.
    """
    if colm.lower() == "none":
        return None
    path = Path(colm).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        inside = sorted(p.name for p in path.glob(f"*{CHECKPOINT_SUFFIX}"))
        listing = f" (it holds {', '.join(inside[:5])}{' ...' if len(inside) > 5 else ''})" if inside else ""
        raise UserInputError(f"SyMPIE checkpoint {path} is a folder{listing}; pass the checkpoint file itself.")
    checkpoint_dir = Path(checkpoint_dir)
    if os.sep in colm or "/" in colm or path.suffix:
        raise UserInputError(f"SyMPIE checkpoint {path} does not exist; pass an existing file, a name from "
                             f"{checkpoint_dir} or 'none'.")
    candidate = checkpoint_dir / f"{colm}{CHECKPOINT_SUFFIX}"
    if candidate.is_file():
        return candidate
    found = sorted(p.stem for p in checkpoint_dir.glob(f"*{CHECKPOINT_SUFFIX}")) if checkpoint_dir.is_dir() else []
    listing = f"the checkpoints found there are: {', '.join(found)}" if found else "no checkpoints are there yet"
    raise UserInputError(f"{option('--colm', 'checkpoint')} '{colm}' names no file {candidate}; {listing} (or pass a path, or 'none'; "
                         f"see {CHECKPOINTS_README}).")


# --------------------------------------------------------------------------- reading

def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint``: allow full unpickling of the checkpoint files this script reads."""
    parser.add_argument(TRUST_FLAG, action="store_true",
                        help="let checkpoint files hold arbitrary Python objects (full unpickling can run code from "
                             "the file: only for files from a source you trust; default: tensors only)")


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint", trusted: bool = False,
                    map_location: str | torch.device = "cpu", if_missing: str = "pass an existing file",
                    if_damaged: str = "fetch it again") -> object:
    """``torch.load`` of ``path``, tensors and plain containers only unless ``trusted``.

    ``what`` names the file in the messages (e.g. "SyMPIE checkpoint"); ``if_missing`` and ``if_damaged`` say
    what to do when it does not exist or cannot be read. A missing, unreadable, untrusted or damaged file is
    a UserInputError; anything else (MemoryError, torch.OutOfMemoryError, KeyboardInterrupt) propagates.
    """
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a folder; pass the checkpoint file itself.")
    if not path.is_file():
        raise UserInputError(f"{what} {path} does not exist; {if_missing}.")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except torch.OutOfMemoryError:
        raise
    except pickle.UnpicklingError as err:
        if not trusted and pickles_are_intact(path):  # well-formed, so refused by the tensors-only policy
            raise UserInputError(f"{what} {path} holds Python objects besides tensors, and unpickling them can run "
                                 f"code from the file; if you trust its source, pass "
                                 f"{option(TRUST_FLAG, 'trust_checkpoint=True')}.") from None
        raise damaged(what, path, err, if_damaged) from None
    except MISSING_CODE as err:
        if not trusted:
            raise damaged(what, path, err, if_damaged) from None
        raise UserInputError(f"{what} {path} refers to Python code that cannot be imported here ({type(err).__name__}: "
                             f"{err}); load it where that code is installed and save its state_dict instead.") from None
    except PermissionError as err:
        raise UserInputError(f"{what} {path} cannot be read ({err.strerror}); check its permissions.") from None
    except DAMAGED as err:
        raise damaged(what, path, err, if_damaged) from None


def damaged(what: str, path: Path, err: BaseException, if_damaged: str) -> UserInputError:
    """The sentence for a file torch.load failed on with ``err``, with the first sentence of torch's reason."""
    first = str(err).strip().split("\n")[0].split(". ")[0].strip().rstrip(".")[:200]
    detail = f": {first}" if first else ""
    return UserInputError(f"{what} {path} could not be read by torch.load ({type(err).__name__}{detail}); it is "
                          f"truncated or damaged (an interrupted download?) or not a PyTorch checkpoint: {if_damaged}.")


def pickles_are_intact(path: Path) -> bool:
    """Whether the pickle stream(s) of a ``torch.save`` file parse to their end. Nothing is unpickled:
    ``pickletools`` only reads the opcodes. Zip files (torch >= 1.6) hold one pickle, ``<archive>/data.pkl``;
    older files are :data:`LEGACY_PICKLES` pickles in a row."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if len(names) != 1:
                    return False
                with archive.open(names[0]) as stream:
                    _read_pickles(stream, 1)
        else:
            with open(path, "rb") as stream:
                _read_pickles(stream, LEGACY_PICKLES)
    except (ValueError, EOFError, KeyError, OSError, RuntimeError, struct.error, zipfile.BadZipFile):
        return False
    return True


def _read_pickles(stream: BinaryIO, count: int) -> None:
    for _ in range(count):
        for _ in pickletools.genops(stream):
            pass


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


# --------------------------------------------------------------------------- writing

def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (a temporary file beside it, renamed into place)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_nem(path: Path, model: nn.Module) -> None:
    """The NEM of a CorrectColMulti as a plain state_dict (the released ``sympie.pth`` format)."""
    save_checkpoint({k: v.detach().cpu() for k, v in model.nem.state_dict().items()}, path)


# --------------------------------------------------------------------------- training state

def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict of a CorrectColMulti without its frozen classifiers (NEM and clamp buffers)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(FROZEN_PREFIX)}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Inverse of :func:`trainable_state`; the classifiers stay as they are."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # same names, other shapes
        raise UserInputError(f"{source} does not match this model ({str(err).splitlines()[-1].strip()}); choose "
                             f"another --logdir.") from None
    missing = [k for k in missing if not k.startswith(FROZEN_PREFIX)]
    if missing or unexpected:
        raise UserInputError(f"{source} does not match this model (missing {missing[:4]}, unexpected "
                             f"{unexpected[:4]}); choose another --logdir.")


def rng_state() -> dict[str, Any]:
    """Every global random generator of this process, as tensors and plain Python values (so that the
    checkpoint reads back tensors-only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(path: Path, state: dict[str, Any]) -> None:
    save_checkpoint({"format": TRAINING_FORMAT, **state}, path)


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """The state :func:`save_training_checkpoint` wrote; any other file is refused in one sentence."""
    state = read_checkpoint(path, "training checkpoint", if_missing="choose another --logdir",
                            if_damaged="remove it to start over or choose another --logdir")
    if not isinstance(state, dict) or state.get("format") != TRAINING_FORMAT:
        raise UserInputError(f"{path} is not a training checkpoint of train.py; choose another --logdir.")
    return state
