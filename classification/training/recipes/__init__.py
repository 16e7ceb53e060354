"""Recipes of ``train.py``: named sets of flag defaults, one YAML file each in this folder.

- ``paper.yaml`` (the default): the flags' own defaults, the authors' recipe;
- ``small.yaml``: the small-scale path on 2 CPU cores (``--recipe small``, beyond the paper);
- ``smoke.yaml``: a one-minute smoke run on the sample photos (``--recipe smoke``, alias ``--demo``).

A recipe's keys are flag names (argparse destinations) and become the parser's defaults, so a flag the
user types always wins. One key is not a flag: ``photos`` names the photo set trained on: ``samples``, the
bundled sample photos (unless ``--imagenet`` is given), or ``labelled_folder``, the variants of the
labelled photo folder given with ``--imagenet`` (``classification/training/photo_folder.py``); its folder is
made only after every flag has been checked.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from classification.errors import UserInputError

RECIPES = ("paper", "small", "smoke")
RECIPE_DIR = Path(__file__).resolve().parent
DEMO_RECIPE = "smoke"  # what --demo stands for
PHOTO_SETS = ("samples", "labelled_folder")  # values of the key 'photos'
UNSET = object()  # marks the destinations the command line did not set

# flag -> (flag, value) it only applies with: a value the recipe gave it yields to the paper's default when the
# user turns that other flag elsewhere (``--recipe small --labels dataset`` trains with the cross-entropy)
APPLIES_ONLY_WITH = {"distill": ("labels", "classifier"), "temperature": ("distill", "kl"),
                     "bn_calibration_batches": ("freeze_nem_bn", True)}


def recipe_settings(name: str) -> dict[str, Any]:
    """The flag defaults of recipe ``name`` (its YAML file)."""
    if name not in RECIPES:
        raise UserInputError(f"--recipe {name!r} is not one of {', '.join(RECIPES)}; pick one of them.")
    settings = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text())
    if not isinstance(settings, dict):
        raise ValueError(f"{RECIPE_DIR / name}.yaml must hold a mapping of flag names to values")
    return settings


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``argv`` parsed once, with the chosen recipe's values as defaults (set on ``parser``, which the caller made
    for this call): a flag the user typed wins over the recipe, and a recipe value that only applies with a flag
    the user turned elsewhere yields (:data:`APPLIES_ONLY_WITH`), so no error names a flag the user never typed."""
    paper = vars(parser.parse_args([]))
    args = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(paper, UNSET)))
    typed = frozenset(dest for dest, value in vars(args).items() if value is not UNSET)
    recipe = recipe_name(args, typed)
    settings = recipe_settings(recipe)
    unknown = sorted(set(settings) - set(paper))
    if unknown:
        raise ValueError(f"recipe {recipe} sets {unknown}, which are not flags of train.py")
    parser.set_defaults(**settings, recipe=recipe)
    for dest in paper:
        if dest not in typed:
            setattr(args, dest, parser.get_default(dest))
    for dest, (other, value) in APPLIES_ONLY_WITH.items():
        if dest not in typed and getattr(args, other) != value:
            setattr(args, dest, paper[dest])
    return args


def recipe_name(args: argparse.Namespace, typed: frozenset[str]) -> str:
    """``--recipe``, or ``smoke`` for ``--demo``; both together are refused unless they agree."""
    recipe = args.recipe if "recipe" in typed else None
    if "demo" in typed and args.demo:
        if recipe not in (None, DEMO_RECIPE):
            raise UserInputError(f"--demo is --recipe {DEMO_RECIPE}, so it cannot be combined with --recipe {recipe}; "
                                 f"drop one of the two.")
        return DEMO_RECIPE
    return recipe or RECIPES[0]


def photo_folder(photos: str | None, imagenet: str | None) -> Path | None:
    """The training folder a recipe's photo set makes (once, in the cache), or None when the folder is
    ``--imagenet`` (or the config's) as it is."""
    if photos == "samples" and imagenet is None:
        from classification.training.smoke_folder import demo_image_folder

        return demo_image_folder()
    if photos == "labelled_folder":
        from classification.training.photo_folder import training_folder

        if imagenet is None:
            raise UserInputError("--recipe small trains on a folder of labelled photos (one sub-folder per ImageNet "
                                 "wnid); pass it with --imagenet PATH, e.g. --imagenet ../shared/photos/"
                                 "imagenet-sample-even (see classification/training/checkpoints/README.md).")
        return training_folder(imagenet)
    if photos not in (None, *PHOTO_SETS):
        raise ValueError(f"unknown photo set {photos!r}; recipes may name {', '.join(PHOTO_SETS)}")
    return None
