"""Does a SyMPIE checkpoint help effnet_lite0 on photos it never trained on? The held-out table of the demo model.

    python benchmarks/bench_demo_model.py --photos ../shared/photos/imagenet-sample-even         # sympie_demo.pth
    python benchmarks/bench_demo_model.py --photos PATH --colm logs/a/final.pth logs/b/final.pth --views 2

``--photos`` is the labelled photo folder the demo model is trained from (one sub-folder per ImageNet wnid;
model card: classification/training/checkpoints/README.md). Its held-out photos
(:func:`classification.training.photo_folder.split_photos`: every 5th photo in sorted order, which the small
recipe never trains on) give ``--views`` 224x224 views each (the embedded demo's ``photo_views``): view 0 is
Resize(256) + CenterCrop(224), the others seeded random crops of the Resize(256) photo, mirrored with
probability 1/2.
Every view is corrupted by this repository's engine with the 15 ImageNet-C corruptions and the four colour
warps at severities 1..5 (one seed per view, corruption and severity; JPEG quality 85 as ImageNet-C was
saved) and classified by ``effnet_lite0`` alone and behind each SyMPIE checkpoint (eval mode). The label of
a view is its folder's ImageNet class; every view counts. The rendered set is cached as JPEG files
(``$SYMPIE_CACHE`` or ``~/.cache/sympie``).

Rows (accuracy %, each corruption the mean over severities 1..5): clean; the six colour rows
(brightness, contrast, darken, sunset, night, white) and their mean; the other 13 ImageNet-C corruptions'
mean; the four ImageNet-C groups. The delta column carries its standard error over the views (each view's
with-minus-without difference, averaged over the row's corruptions and severities).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classification.atomic import atomic_folder, write_json
from classification.checkpoint import CHECKPOINT_DIR
from classification.classifiers import build_classifier
from classification.eval.embedded_demo import photo_views
from classification.errors import report_user_errors
from classification.normalization import normalize
from classification.samples import cache_root
from classification.training.corrupted_folder import sample_seed
from classification.training.corruptions import IMAGENET_C, IMAGENET_C_GROUPS, corrupt
from classification.training.model import SyMPIE
from classification.training.photo_folder import labelled_photos, split_photos

DEFAULT_COLM = CHECKPOINT_DIR / "sympie_demo.pth"
COLOR_WARPS = ("darken", "sunset", "night", "white")
COLOR_ROWS = ("brightness", "contrast", *COLOR_WARPS)
OTHER_IMAGENET_C = tuple(name for name in IMAGENET_C if name not in COLOR_ROWS)
CATEGORIES = (*IMAGENET_C, *COLOR_WARPS)
SEVERITIES = (1, 2, 3, 4, 5)
CROP, JPEG_QUALITY = 224, 85
CACHE_VERSION = 2


def jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def render(folder: Path, photos: list[Path], count: int, seed: int) -> None:
    """Clean views ``<i>.png`` and corrupted ones ``<i>_<category>_<severity>.jpg`` of every view ``i``."""
    torch.set_num_threads(1)  # small images: one thread is faster than contention
    clean = [v for photo in photos for v in photo_views(photo, count, seed)]
    for i, view in enumerate(clean):
        Image.fromarray(view).save(folder / f"{i}.png")
        for c, name in enumerate(CATEGORIES):
            for severity in SEVERITIES:
                image = corrupt(view, name, severity, seed=sample_seed(seed, i, c, severity))
                (folder / f"{i}_{name}_{severity}.jpg").write_bytes(jpeg_bytes(image))


def rendered_set(photos: list[Path], count: int, seed: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(clean views (N,224,224,3), corrupted views (N, categories, severities, 224,224,3)), uint8, of the first
    ``limit`` photos (default all), rendered once for all ``photos`` into the cache (keyed by the version, the
    photos' bytes, the view count and the seed)."""
    digest = hashlib.sha256(f"{CACHE_VERSION}/{count}/{seed}".encode())
    for photo in photos:
        digest.update(photo.name.encode() + photo.read_bytes())
    folder = cache_root() / f"bench_demo_model_{digest.hexdigest()[:12]}"
    if not folder.is_dir():
        threads = torch.get_num_threads()
        try:
            with atomic_folder(folder) as staging:
                render(staging, photos, count, seed)
        finally:
            torch.set_num_threads(threads)
    n = len(photos[:limit]) * count
    clean = np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in range(n)])
    corrupted = np.stack([np.stack([np.stack([np.asarray(Image.open(folder / f"{i}_{name}_{s}.jpg").convert("RGB"))
                                              for s in SEVERITIES]) for name in CATEGORIES]) for i in range(n)])
    return clean, corrupted


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch: int = 50) -> np.ndarray:
    """Top-1 class of every uint8 image (..., 224, 224, 3)."""
    flat = images.reshape(-1, CROP, CROP, 3)
    classes = []
    for start in range(0, len(flat), batch):
        x = torch.from_numpy(flat[start:start + batch]).permute(0, 3, 1, 2).float().div(255)
        classes.append(model(normalize(x)).argmax(1).numpy())
    return np.concatenate(classes).reshape(images.shape[:-3])


def per_view_rows(clean_correct: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Row -> per-view accuracy (N,), percent: clean (N,) and corrupted (N, categories, severities) correctness."""
    per_category = {name: 100 * correct[:, c].mean(1) for c, name in enumerate(CATEGORIES)}
    rows = {"clean": 100 * clean_correct.astype(float)}
    rows.update({name: per_category[name] for name in COLOR_ROWS})
    rows["colour rows (mean of 6)"] = np.mean([per_category[n] for n in COLOR_ROWS], 0)
    rows["other 13 ImageNet-C (mean)"] = np.mean([per_category[n] for n in OTHER_IMAGENET_C], 0)
    rows.update({f"{group} ({len(names)})": np.mean([per_category[n] for n in names], 0)
                 for group, names in IMAGENET_C_GROUPS.items()})
    return rows


def standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True,
                        help="the labelled photo folder (one sub-folder per wnid); its held-out photos are measured")
    parser.add_argument("--colm", nargs="+", type=Path, default=[DEFAULT_COLM], help="SyMPIE checkpoint(s)")
    parser.add_argument("--views", type=int, default=1, help="views per held-out photo (the first: the centre crop)")
    parser.add_argument("--max-photos", type=int, help="only the first N held-out photos (quick comparisons)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", type=Path, help="also write the tables here")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    for colm in args.colm:
        if not colm.is_file():
            sys.exit(f"error: SyMPIE checkpoint {colm} does not exist; train one (train.py --recipe small) or "
                     f"pass --colm PATH.")
    heldout = split_photos(labelled_photos(args.photos))[1]
    photos, labels = zip(*heldout[:args.max_photos])
    tic = time.perf_counter()
    clean, corrupted = rendered_set([path for path, _ in heldout], args.views, args.seed, args.max_photos)
    labels = np.repeat(np.array(labels), args.views)
    print(f"{len(photos)} held-out photos of {args.photos} x {args.views} views = {len(clean)} views, every one "
          f"counted; {len(CATEGORIES)} corruptions x 5 severities ({time.perf_counter() - tic:.0f} s to render/load)")
    classifier = build_classifier("effnet_lite0")
    base = per_view_rows(predict(classifier, clean) == labels, predict(classifier, corrupted) == labels[:, None, None])
    results = {"photos": args.photos.name, "heldout_photos": len(photos), "views": len(clean),
               "without": {k: float(v.mean()) for k, v in base.items()}, "with": {}}
    for colm in args.colm:
        tic = time.perf_counter()
        model = torch.nn.Sequential(SyMPIE.from_checkpoint(colm), classifier).eval()
        rows = per_view_rows(predict(model, clean) == labels, predict(model, corrupted) == labels[:, None, None])
        results["with"][str(colm)] = {k: float(v.mean()) for k, v in rows.items()}
        print(f"\n{colm} ({time.perf_counter() - tic:.0f} s)\n")
        print(f"| effnet_lite0, {len(clean)} held-out views | without SyMPIE | with SyMPIE | delta ± s.e. |")
        print("|---|---:|---:|---:|")
        for name, value in rows.items():
            diff = value - base[name]
            print(f"| {name} | {base[name].mean():.1f} | {value.mean():.1f} | {diff.mean():+.1f} ± {standard_error(diff):.1f} |")
    if args.json:
        write_json(args.json, results, indent=1)
    return results


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
