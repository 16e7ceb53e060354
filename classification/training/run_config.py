"""The log dir of a training run: what it holds, the run's configuration, and the check that ``--resume``
continues the same run.

- ``run_config.json``: every flag, the recipe, library versions and the git commit (:func:`write_run_config`);
- ``checkpoint.pth``: the full training state after every epoch (student, teacher, optimizer,
  scheduler, counters, best scores, RNG states of every process; written and read by
  :mod:`classification.checkpoint`);
- ``best_*.pth``, ``final.pth``, ``final_ema.pth``: plain NEM state_dicts (usable as ``--colm``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classification.atomic import write_json
from classification.errors import UserInputError
from classification.paths import REPO_ROOT

RUN_CONFIG = "run_config.json"
CHECKPOINT = "checkpoint.pth"

# Flags that define the run: resuming with any of them changed would not continue the same run.
RECIPE_KEYS = ("recipe", "classifiers", "random_init", "epochs", "iters_per_epoch", "batch_size", "lr", "ema_rate",
               "round2_weight", "grad_clamp", "max_corruptions", "no_color", "corruptions", "clean_fraction",
               "gpu_corruptions", "resize_size", "crop_size", "seed", "amp", "init", "labels", "distill",
               "temperature", "pixel_weight", "pixel_pool", "freeze_nem_bn", "bn_calibration_batches")


def recipe(args: argparse.Namespace, world_size: int) -> dict[str, Any]:
    """The flags in :data:`RECIPE_KEYS` plus the number of processes, JSON-ready."""
    values = {key: getattr(args, key) for key in RECIPE_KEYS}
    values["classifiers"] = list(values["classifiers"])
    values["corruptions"] = None if values["corruptions"] is None else list(values["corruptions"])
    values["world_size"] = world_size
    return values


def git_commit() -> str | None:
    """``HEAD`` of the repository (with ``-dirty`` when it has uncommitted changes), if git can tell."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if status else "")


def write_run_config(logdir: Path, args: argparse.Namespace, world_size: int) -> None:
    """Dump flags, recipe, versions and the git commit to ``logdir/run_config.json``."""
    import timm
    import torchvision

    write_json(logdir / RUN_CONFIG, {
        "recipe": recipe(args, world_size),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": np.__version__,
                     "cuda": torch.version.cuda},
        "git_commit": git_commit(),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }, indent=2)


def check_logdir(logdir: Path, args: argparse.Namespace, world_size: int) -> bool:
    """Refuse to mix runs in one log dir. Returns True when there is a checkpoint to resume from."""
    checkpoint, config = logdir / CHECKPOINT, logdir / RUN_CONFIG
    if not args.resume:
        for existing in (checkpoint, config):
            if existing.exists():
                raise UserInputError(f"log dir {logdir} already holds a run ({existing.name}); pass --resume to "
                                     f"continue it or choose another --logdir.")
        return False
    if not config.exists():
        if checkpoint.exists():
            raise UserInputError(f"log dir {logdir} has {CHECKPOINT} but no {RUN_CONFIG}, so it cannot be checked "
                                 f"before resuming; restore {RUN_CONFIG} or choose another --logdir.")
        return False
    try:
        saved = json.loads(config.read_text())["recipe"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserInputError(f"{config} is unreadable or has no 'recipe'; it was not written by train.py, "
                             f"choose another --logdir.") from None
    current = recipe(args, world_size)
    for key, value in current.items():
        flag = "number of processes" if key == "world_size" else "--" + key.replace("_", "-")
        if key not in saved:
            raise UserInputError(f"{config} does not record {flag} (it was written by an older train.py), so "
                                 f"resuming cannot be checked; resume with that version or choose another --logdir.")
        if saved[key] != value:
            raise UserInputError(f"log dir {logdir} holds a different run: {flag} was {saved[key]!r} there "
                                 f"and is {value!r} now; resume with the same flags or choose another --logdir.")
    return checkpoint.exists()
