"""The embedded demo of ``validate.py --demo``: a mini ImageNet-C rendered from the repository's photos.

Every public-domain / CC0 photo of the repository (``assets/demo_photos/``, twelve; ``assets/samples/`` are
crops of six of them) gives :data:`VIEWS_PER_PHOTO` 224x224 views (:func:`photo_views`: the centre crop of
the photo resized to a short side of 256, then seeded random crops, mirrored with probability 1/2), so that
every cell of the grid holds 48 images. The views are corrupted by our corruption engine with the
benchmark builder's recipe (:mod:`classification.eval.render`: the 15 ImageNet-C corruptions, ``colwarp`` = one of
darken/sunset/night/white per image and severity, ``clean``; 5 severities; JPEG quality 85 as
ImageNet-C was saved) into the layout :class:`~classification.eval.benchmark_sets.ImagenetC` reads, with its
``images.txt``. The set lives in a cache folder (``$SYMPIE_CACHE/demo``, default ``~/.cache/sympie/demo``),
is rendered in a temporary folder renamed into place when complete (a killed run leaves no half set),
and is reused while its recipe is unchanged. The photos' labels are :data:`classification.samples.PHOTO_LABELS`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from classification.atomic import atomic_folder, atomic_path, check_output_dir, write_json
from classification.checkpoint import CHECKPOINT_DIR, resolve_colm
from classification.distributed import launched_world_size
from classification.errors import UserInputError
from classification.eval.benchmark_sets import SEVERITIES, SPLIT_FILE
from classification.eval.grids import delta, load_grid, render_heatmap
from classification.eval.render import CROP, RESIZE, RenderPlan, SourceImage, apply_steps, save_jpeg, write_split
from classification.imagenet import imagenet_class_index
from classification.rgb8 import pil_rgb8
from classification.samples import CACHE_ENV, DEMO_PHOTOS_DIR, PHOTO_LABELS, cache_root
from classification.training.corruptions import IMAGENET_C, IMAGENET_C_GROUPS

log = logging.getLogger(__name__)

DEMO_CLASSIFIER = "effnet_lite0"
DEMO_PREFIX = "demo_"
DEMO_SEED = 0
DEMO_PARTS = ("imagenet-c", "clean", "color")
DEMO_RECIPE_VERSION = 2  # bump when the rendering changes, so that cached sets are rendered again
MARKER = "demo_set.json"
VIEWS_PER_PHOTO = 4

# the SyMPIE checkpoints --demo looks for in CHECKPOINT_DIR, in this order: the authors' release, then the demo
# model this repository ships (trained by `train.py --recipe small`, see the checkpoints README)
RELEASED_CHECKPOINT = "sympie.pth"
DEMO_MODEL_CHECKPOINT = "sympie_demo.pth"
SUMMARY_NAME = "demo_summary.txt"

# validate.py flags that choose another dataset or classifier; --demo refuses them when set.
CONTRADICTING_FLAGS = ("root", "split", "bar", "mixed", "quick", "skip_missing", "config", "random_init",
                      "clip_templates")


def cache_dir() -> Path:
    """``$SYMPIE_CACHE/demo`` or ``~/.cache/sympie/demo``."""
    return cache_root() / "demo"


def check_demo_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse ``--demo`` together with a flag that selects another dataset or classifier."""
    for dest in CONTRADICTING_FLAGS:
        if getattr(args, dest) != parser.get_default(dest):
            flag = "--" + dest.replace("_", "-")
            raise UserInputError(f"--demo evaluates {DEMO_CLASSIFIER} on its own mini ImageNet-C of the sample "
                                 f"photos, so it cannot be combined with {flag}; drop one of the two.")
    if launched_world_size() > 1:
        raise UserInputError("--demo runs in a single process; start it with python, not torchrun.")
    if args.clas not in (None, DEMO_CLASSIFIER):
        raise UserInputError(f"--demo evaluates {DEMO_CLASSIFIER} (offline weights), not --clas {args.clas}; drop "
                             f"--clas or run without --demo.")
    check_cache_folder(cache_dir())


def check_cache_folder(folder: Path) -> None:
    """Refuse a cache location that cannot hold the demo set ($SYMPIE_CACHE a file, read-only...)."""
    check_output_dir(folder, f"the demo cache folder (${CACHE_ENV}/demo)")


def demo_checkpoint(colm: str | None, checkpoint_dir: Path | None = None) -> tuple[Path | None, str]:
    """The SyMPIE checkpoint of ``--demo`` and a sentence saying which it is.

    ``--colm`` given: that one (``none``: the classifier alone). Else the released ``sympie.pth`` when it is
    in ``checkpoint_dir`` (default :data:`CHECKPOINT_DIR`), else the shipped demo model ``sympie_demo.pth``,
    else none.
    """
    checkpoint_dir = CHECKPOINT_DIR if checkpoint_dir is None else checkpoint_dir
    if colm is not None:
        path = resolve_colm(colm, checkpoint_dir)
        return path, ("--colm none: the classifier alone" if path is None else f"--colm: {path}")
    released, demo_model = checkpoint_dir / RELEASED_CHECKPOINT, checkpoint_dir / DEMO_MODEL_CHECKPOINT
    if released.is_file():
        return released, f"the released SyMPIE checkpoint {released}"
    if demo_model.is_file():
        return demo_model, (f"the demo model {demo_model} (trained by train.py --recipe small on 400 ImageNet photos, "
                            f"not the paper's model; {RELEASED_CHECKPOINT} is not in {checkpoint_dir})")
    return None, f"no SyMPIE checkpoint ({RELEASED_CHECKPOINT} or {DEMO_MODEL_CHECKPOINT} in {checkpoint_dir}): the classifier alone"


def mean_of_filled(values: np.ndarray) -> float | None:
    """Mean of the cells that hold a value (empty cells are NaN), None when there are none."""
    filled = values[np.isfinite(values)]
    return float(filled.mean()) if filled.size else None


def group_rows() -> dict[str, list[int]]:
    """Summary group -> its rows of the ImageNet-C grid."""
    rows = {name: [IMAGENET_C.index(n) for n in names] for name, names in IMAGENET_C_GROUPS.items()}
    return {"15 corruptions": list(range(len(IMAGENET_C))), **rows, "colour warp": [len(IMAGENET_C)],
            "clean": [len(IMAGENET_C) + 1]}


def mean_and_error(grid: Path, rows: list[int]) -> tuple[float, float] | None:
    """Mean accuracy (percent) over the filled cells of ``rows`` and its binomial standard error over the
    images classified there (from the grid's ``.meta.json`` counts); None when no cell is filled."""
    values = load_grid(grid).values[rows]
    totals = np.asarray(json.loads(grid.with_suffix(".meta.json").read_text())["total"], float)[rows]
    if rows == group_rows()["clean"]:  # the clean images are counted once per column: the same images 5 times
        totals = totals / len(SEVERITIES)
    filled = np.isfinite(values)
    if not filled.any():
        return None
    mean = float(values[filled].mean())
    images = float(totals[filled].sum())
    return mean, 100 * float(np.sqrt(mean / 100 * (1 - mean / 100) / max(images, 1)))


def summary_line(base: Path, data: Path, label: str) -> str:
    """One line: per group (the 15 ImageNet-C corruptions, noise, blur, weather, digital, colour warp, clean) the
    mean accuracy without and with SyMPIE over its cells, each with its standard error, and the difference."""
    parts = []
    for name, rows in group_rows().items():
        a, b = mean_and_error(base, rows), mean_and_error(data, rows)
        if a is None or b is None:  # a whole group left empty (--skip-missing): nothing to compare
            parts.append(f"{name} -")
            continue
        parts.append(f"{name} {a[0]:.1f}±{a[1]:.1f} -> {b[0]:.1f}±{b[1]:.1f} ({b[0] - a[0]:+.1f})")
    return (f"demo, {DEMO_CLASSIFIER} accuracy % without -> with SyMPIE ({label}), ± binomial standard error over "
            f"the images of the group: " + "; ".join(parts))


def write_summary(line: str, folder: Path) -> Path:
    """``line`` into ``folder/demo_summary.txt`` (atomic)."""
    path = folder / SUMMARY_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(line + "\n")
    return path


def demo_photos(folder: Path = DEMO_PHOTOS_DIR) -> list[Path]:
    """The photos of the demo, one per label of :data:`PHOTO_LABELS`; a missing one is the user's to restore."""
    photos = [folder / f"{name}.jpg" for name in sorted(PHOTO_LABELS)]
    missing = [p for p in photos if not p.is_file()]
    if missing:
        raise UserInputError(f"demo photo {missing[0]} is missing; restore assets/demo_photos/ from the repository.")
    return photos


def photo_views(photo: Path, count: int, seed: int = DEMO_SEED) -> list[np.ndarray]:
    """``count`` 224x224 uint8 views of ``photo`` resized to a short side of 256: the centre crop, then seeded
    random crops, each mirrored with probability 1/2 (seeded by the file name)."""
    with Image.open(photo) as image:
        image = pil_rgb8(image)
    scale = RESIZE / min(image.size)
    image = image.resize((max(RESIZE, round(image.width * scale)), max(RESIZE, round(image.height * scale))),
                         Image.BILINEAR)
    rng = random.Random(f"{seed}/{photo.name}")
    views = []
    for k in range(count):
        if k == 0:
            left, top = round((image.width - CROP) / 2), round((image.height - CROP) / 2)
        else:
            left, top = rng.randint(0, image.width - CROP), rng.randint(0, image.height - CROP)
        view = image.crop((left, top, left + CROP, top + CROP))
        views.append(np.asarray(ImageOps.mirror(view) if k and rng.random() < 0.5 else view))
    return views


def demo_sources(photos: list[Path]) -> list[SourceImage]:
    """One benchmark-builder source per view (``<photo>_v<k>``), in the folder of its photo's label's wnid."""
    wnid_of = {index: wnid for wnid, index in imagenet_class_index().items()}
    return [SourceImage(i * VIEWS_PER_PHOTO + k, wnid_of[PHOTO_LABELS[photo.stem]], photo.with_name(f"{photo.stem}_v{k}"))
            for i, photo in enumerate(photos) for k in range(VIEWS_PER_PHOTO)]


def recipe_fingerprint(photos: list[Path]) -> dict:
    """What the cached set depends on: recipe version, seed, views, labels and the photos' bytes."""
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}
    return {"version": DEMO_RECIPE_VERSION, "seed": DEMO_SEED, "views": VIEWS_PER_PHOTO, "labels": PHOTO_LABELS,
            "photos": digests}


def file_sizes(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under ``folder`` but the marker."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER}


def cache_state(folder: Path, fingerprint: dict) -> str:
    """'complete', 'damaged' (made by this recipe, but a file is missing, added or resized) or 'outdated'
    (no marker, another recipe or an unreadable marker)."""
    try:
        recorded = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return "outdated"
    if not isinstance(recorded, dict) or recorded.get("recipe") != fingerprint:
        return "outdated"
    return "complete" if recorded.get("files") == file_sizes(folder) else "damaged"


def render_demo_set(out: Path, photos: list[Path]) -> int:
    """Write every file of the mini ImageNet-C and ``images.txt`` into ``out``; returns the number of images."""
    plan = RenderPlan(out, DEMO_SEED, tuple(IMAGENET_C), DEMO_PARTS)
    sources = demo_sources(photos)
    written = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 224x224 images: more threads only add contention (8x slower on a busy machine)
    try:
        for photo_index, photo in enumerate(photos):
            views = photo_views(photo, VIEWS_PER_PHOTO)
            for k, view in enumerate(views):
                for output in plan.outputs(sources[photo_index * VIEWS_PER_PHOTO + k]):
                    save_jpeg(apply_steps(view, output.steps), output.path)
                    written += 1
    finally:
        torch.set_num_threads(threads)
    write_split(out / SPLIT_FILE, sources)
    return written


def prepare_demo_set(folder: Path | None = None) -> Path:
    """The folder of the mini ImageNet-C, rendered now unless an identical complete one is cached."""
    folder = Path(folder) if folder is not None else cache_dir()
    check_cache_folder(folder)
    photos = demo_photos()
    fingerprint = recipe_fingerprint(photos)
    state = cache_state(folder, fingerprint) if folder.is_dir() else "outdated"
    if state == "complete":
        log.info("demo set: reusing %s", folder)
        return folder
    if state == "damaged":
        log.warning("demo set: %s has missing or changed files; rendering it again", folder)
    if folder.exists():  # an outdated or damaged set
        shutil.rmtree(folder)
    log.info("demo set: rendering %d photos x %d views x %d categories x 5 severities into %s", len(photos),
             VIEWS_PER_PHOTO, len(IMAGENET_C) + 2, folder)
    with atomic_folder(folder) as staging:
        files = render_demo_set(staging, photos)
        write_json(staging / MARKER, {"recipe": fingerprint, "files": file_sizes(staging)}, indent=1)
    log.info("demo set: %d files written", files)
    return folder


def draw_heatmaps(grids: list[Path]) -> list[Path]:
    """The heat map of each demo grid and, with two grids, of their difference (second - first)."""
    pictures = []
    for path in grids:
        title = f"Demo ({len(PHOTO_LABELS)} photos x {VIEWS_PER_PHOTO} views): {path.stem.removeprefix(DEMO_PREFIX)} (accuracy %)"
        pictures.append(render_heatmap(load_grid(path), path.with_suffix(".png"), title))
    if len(grids) == 2:
        base, data = grids
        out = data.with_name(f"{data.stem}_vs_{base.stem}.png")
        title = (f"Demo ({len(PHOTO_LABELS)} photos x {VIEWS_PER_PHOTO} views): {data.stem.removeprefix(DEMO_PREFIX)} - "
                 f"{base.stem.removeprefix(DEMO_PREFIX)} (accuracy points)")
        pictures.append(render_heatmap(delta(load_grid(data), load_grid(base)), out, title, signed=True))
    return pictures
