"""Where checkpoints live, and how a ``--colm`` value becomes a SyMPIE checkpoint file.

Every script that takes ``--colm`` (validate.py, eval_vizwiz.py, segmentation/eval.py, ...) accepts
``none``, the name of a file in :data:`CHECKPOINT_DIR` without ``.pth`` (``sympie``, ``best_uw``), or a path.
"""
from __future__ import annotations

import os
from pathlib import Path

from classification.errors import UserInputError, option

CHECKPOINT_DIR = Path(__file__).resolve().parent / "training" / "checkpoints"
CHECKPOINT_SUFFIX = ".pth"
DEFAULT_SEGMENTER = CHECKPOINT_DIR / "cityscapesfinal.pth"  # the authors' DeepLab-V2 trained on Cityscapes


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
                         f"see classification/training/checkpoints/README.md).")
