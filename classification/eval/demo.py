"""The embedded demo of ``validate.py --demo``: a mini ImageNet-C rendered from the six sample photos.

The photos of ``assets/samples/`` are corrupted by our corruption engine with the benchmark builder's
recipe (:mod:`classification.eval.render`: the 15 ImageNet-C corruptions, ``colwarp`` = one of
darken/sunset/night/white per image and severity, ``clean``; 5 severities; JPEG quality 85 as
ImageNet-C was saved) into the layout :class:`~classification.eval.imagenetc.ImagenetC` reads, with its
``images.txt``. The set lives in a cache folder (``$SYMPIE_CACHE/demo``, default ``~/.cache/sympie/demo``),
is rendered in a temporary folder renamed into place when complete (a killed run leaves no half set),
and is reused while its recipe is unchanged.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classification.atomic import write_json
from classification.errors import UserInputError
from classification.eval.grids import delta, load_grid, render_heatmap
from classification.eval.render import (CROP, RenderPlan, SourceImage, apply_steps, imagenet_class_index,
                                        resize_and_crop, save_jpeg, write_split)
from classification.paths import REPO_ROOT
from classification.training.corruptions import IMAGENET_C

log = logging.getLogger(__name__)

SAMPLES_DIR = REPO_ROOT / "assets" / "samples"
DEMO_CLASSIFIER = "effnet_lite0"
DEMO_PREFIX = "demo_"
DEMO_SEED = 0
DEMO_PARTS = ("imagenet-c", "clean", "color")
DEMO_RECIPE_VERSION = 1  # bump when the rendering changes, so that cached sets are rendered again
CACHE_ENV = "SYMPIE_CACHE"
MARKER = "demo_set.json"

# ImageNet class index of each sample photo: the class a person would give where one exists (chelsea:
# 281 tabby cat, coffee: 967 espresso, rocket: 657 missile); the other three show no ImageNet class, so
# their label is effnet_lite0's prediction on the clean image (astronaut: 465 bulletproof vest,
# hubble_deep_field: 632 loudspeaker, brick: 807 solar dish) and their clean accuracy is 100 % by construction.
SAMPLE_LABELS: dict[str, int] = {
    "astronaut": 465,
    "brick": 807,
    "chelsea": 281,
    "coffee": 967,
    "hubble_deep_field": 632,
    "rocket": 657,
}
PREDICTED_LABELS = ("astronaut", "brick", "hubble_deep_field")  # labels taken from the classifier

# validate.py flags that choose another dataset or classifier; --demo refuses them when set.
CONTRADICTING_FLAGS = ("root", "split", "bar", "mixed", "quick", "skip_missing", "config", "random_init",
                      "clip_templates")


def cache_dir() -> Path:
    """``$SYMPIE_CACHE/demo`` or ``~/.cache/sympie/demo``."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else Path.home() / ".cache" / "sympie") / "demo"


def check_demo_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse ``--demo`` together with a flag that selects another dataset or classifier."""
    for dest in CONTRADICTING_FLAGS:
        if getattr(args, dest) != parser.get_default(dest):
            flag = "--" + dest.replace("_", "-")
            raise UserInputError(f"--demo evaluates {DEMO_CLASSIFIER} on its own mini ImageNet-C of the sample "
                                 f"photos, so it cannot be combined with {flag}; drop one of the two.")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserInputError("--demo runs in a single process; start it with python, not torchrun.")
    if args.clas not in (None, DEMO_CLASSIFIER):
        raise UserInputError(f"--demo evaluates {DEMO_CLASSIFIER} (offline weights), not --clas {args.clas}; drop "
                             f"--clas or run without --demo.")


def sample_sources(samples_dir: Path = SAMPLES_DIR) -> list[SourceImage]:
    """The sample photos as benchmark-builder sources, each in the folder of its class's wnid."""
    wnid_of = {index: wnid for wnid, index in imagenet_class_index().items()}
    sources = []
    for index, name in enumerate(sorted(SAMPLE_LABELS)):
        path = samples_dir / f"{name}.png"
        if not path.is_file():
            raise UserInputError(f"sample photo {path} is missing; restore assets/samples/ from the repository.")
        sources.append(SourceImage(index, wnid_of[SAMPLE_LABELS[name]], path))
    return sources


def load_sample(path: Path) -> np.ndarray:
    """A sample photo as a 224x224x3 uint8 array (they are stored at that size; others get Resize+CenterCrop)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    if image.size != (CROP, CROP):
        image = resize_and_crop(image)
    return np.asarray(image)


def recipe_fingerprint(sources: list[SourceImage]) -> dict:
    """What the cached set depends on: recipe version, seed, labels and the photos' bytes."""
    photos = {s.path.name: hashlib.sha256(s.path.read_bytes()).hexdigest() for s in sources}
    return {"version": DEMO_RECIPE_VERSION, "seed": DEMO_SEED, "labels": SAMPLE_LABELS, "photos": photos}


def is_complete(folder: Path, fingerprint: dict) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()) == fingerprint
    except (OSError, json.JSONDecodeError):
        return False


def render_demo_set(out: Path, sources: list[SourceImage]) -> int:
    """Write every file of the mini ImageNet-C and ``images.txt`` into ``out``; returns the number of images."""
    plan = RenderPlan(out, DEMO_SEED, tuple(IMAGENET_C), DEMO_PARTS)
    written = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 224x224 images: more threads only add contention (8x slower on a busy machine)
    try:
        for source in sources:
            crop = load_sample(source.path)
            for output in plan.outputs(source):
                save_jpeg(apply_steps(crop, output.steps), output.path)
                written += 1
    finally:
        torch.set_num_threads(threads)
    write_split(out / "images.txt", sources)
    return written


def prepare_demo_set(folder: Path | None = None) -> Path:
    """The folder of the mini ImageNet-C, rendered now unless an identical complete one is cached."""
    folder = Path(folder) if folder is not None else cache_dir()
    sources = sample_sources()
    fingerprint = recipe_fingerprint(sources)
    if is_complete(folder, fingerprint):
        log.info("demo set: reusing %s", folder)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        log.info("demo set: rendering %d sample photos x %d categories x 5 severities into %s", len(sources),
                 len(IMAGENET_C) + 2, folder)
        files = render_demo_set(staging, sources)
        write_json(staging / MARKER, fingerprint, indent=1)
        if folder.exists():  # an outdated set
            shutil.rmtree(folder)
        try:
            os.replace(staging, folder)
        except OSError:
            if not is_complete(folder, fingerprint):  # else a concurrent run has just put the same set in place
                raise
        log.info("demo set: %d files written", files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def draw_heatmaps(grids: list[Path]) -> list[Path]:
    """The heat map of each demo grid and, with two grids, of their difference (second - first)."""
    pictures = []
    for path in grids:
        title = f"Demo (6 sample photos): {path.stem.removeprefix(DEMO_PREFIX)} (accuracy %)"
        pictures.append(render_heatmap(load_grid(path), path.with_suffix(".png"), title))
    if len(grids) == 2:
        base, data = grids
        out = data.with_name(f"{data.stem}_vs_{base.stem}.png")
        title = (f"Demo (6 sample photos): {data.stem.removeprefix(DEMO_PREFIX)} - "
                 f"{base.stem.removeprefix(DEMO_PREFIX)} (accuracy points)")
        pictures.append(render_heatmap(delta(load_grid(data), load_grid(base)), out, title, signed=True))
    return pictures
