"""Does a SyMPIE checkpoint help effnet_lite0 on photos it never trained on? The held-out table of the demo model.

    python benchmarks/bench_demo_model.py --photos ../shared/photos/imagenet-sample-even         # sympie_demo.pth
    python benchmarks/bench_demo_model.py --photos PATH --colm logs/a/final.pth logs/b/final.pth --views 2
    python benchmarks/bench_demo_model.py --photos PATH --oracle colour   # + the least-squares colour fit

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

``--oracle colour`` adds what the warp could do with parameters no NEM can know: each corrupted view warped
with the colour matrix and shift fitted to its own clean view by least squares (identity kernel;
:func:`classification.training.warp_fit.fit_warp`), then clamped and classified: what a NEM trained on
pixel error, and perfect at it, would reach. ``--oracle warp`` fits the 5x5 kernel too (alternating least
squares, about 0.4 s per view and thread: 100 photos take about an hour); a pixel-error kernel blurs noise
away, which the classifier does not reward, so it is a reference for the colour rows, not a ceiling of accuracy.

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
from classification.training.model import Clamp, SyMPIE, col_warp
from classification.training.warp_fit import fit_warp
from classification.training.photo_folder import labelled_photos, split_photos

DEFAULT_COLM = CHECKPOINT_DIR / "sympie_demo.pth"
COLOR_WARPS = ("darken", "sunset", "night", "white")
COLOR_ROWS = ("brightness", "contrast", *COLOR_WARPS)
OTHER_IMAGENET_C = tuple(name for name in IMAGENET_C if name not in COLOR_ROWS)
CATEGORIES = (*IMAGENET_C, *COLOR_WARPS)
SEVERITIES = (1, 2, 3, 4, 5)
CROP, JPEG_QUALITY = 224, 85
CACHE_VERSION = 2
ORACLES = ("colour", "warp")


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
        classes.append(model(to_normalised(flat[start:start + batch])).argmax(1).numpy())
    return np.concatenate(classes).reshape(images.shape[:-3])


def to_normalised(images: np.ndarray) -> torch.Tensor:
    return normalize(torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255))


@torch.no_grad()
def predict_oracle(classifier: torch.nn.Module, corrupted: np.ndarray, clean: np.ndarray, kernel: bool,
                   batch: int = 50) -> np.ndarray:
    """Top-1 class of every corrupted view (N, categories, severities, 224, 224, 3) warped by the least-squares
    parameters fitted to its clean view (N, 224, 224, 3; the kernel too if ``kernel``), clamped as SyMPIE does."""
    clamp = Clamp().eval()
    classes = np.zeros(corrupted.shape[:3], dtype=np.int64)
    for start in range(0, len(clean), batch):
        z = to_normalised(clean[start:start + batch])
        for c in range(corrupted.shape[1]):
            for s in range(corrupted.shape[2]):
                x = to_normalised(corrupted[start:start + batch, c, s])
                corrected = clamp(col_warp(x, fit_warp(x, z, kernel)))
                classes[start:start + batch, c, s] = classifier(corrected).argmax(1).numpy()
    return classes


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


def print_table(title: str, views: int, base: dict[str, np.ndarray], rows: dict[str, np.ndarray]) -> None:
    print(f"\n{title}\n")
    print(f"| effnet_lite0, {views} held-out views | without SyMPIE | with SyMPIE | delta ± s.e. |")
    print("|---|---:|---:|---:|")
    for name, value in rows.items():
        diff = value - base[name]
        print(f"| {name} | {base[name].mean():.1f} | {value.mean():.1f} | {diff.mean():+.1f} ± {standard_error(diff):.1f} |")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True,
                        help="the labelled photo folder (one sub-folder per wnid); its held-out photos are measured")
    parser.add_argument("--colm", nargs="+", type=Path, default=[DEFAULT_COLM], help="SyMPIE checkpoint(s)")
    parser.add_argument("--views", type=int, default=1, help="views per held-out photo (the first: the centre crop)")
    parser.add_argument("--max-photos", type=int, help="only the first N held-out photos (quick comparisons)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--oracle", choices=ORACLES,
                        help="also the table of the least-squares parameters fitted to each clean view: the colour "
                             "matrix and shift, or the whole warp (slow)")
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
    clean_correct = predict(classifier, clean) == labels
    base = per_view_rows(clean_correct, predict(classifier, corrupted) == labels[:, None, None])
    results = {"photos": args.photos.name, "heldout_photos": len(photos), "views": len(clean),
               "without": {k: float(v.mean()) for k, v in base.items()}, "with": {}}
    for colm in args.colm:
        tic = time.perf_counter()
        model = torch.nn.Sequential(SyMPIE.from_checkpoint(colm), classifier).eval()
        rows = per_view_rows(predict(model, clean) == labels, predict(model, corrupted) == labels[:, None, None])
        results["with"][str(colm)] = {k: float(v.mean()) for k, v in rows.items()}
        print_table(f"{colm} ({time.perf_counter() - tic:.0f} s)", len(clean), base, rows)
    if args.oracle:
        tic = time.perf_counter()
        # the warp fitted from a clean view to itself is the identity: its clean row is the classifier's
        classes = predict_oracle(classifier, corrupted, clean, kernel=args.oracle == "warp")
        rows = per_view_rows(clean_correct, classes == labels[:, None, None])
        results[f"oracle_{args.oracle}"] = {k: float(v.mean()) for k, v in rows.items()}
        what = "colour matrix and shift" if args.oracle == "colour" else "warp (colour and kernel)"
        print_table(f"least-squares {what} fitted to each clean view ({time.perf_counter() - tic:.0f} s)",
                    len(clean), base, rows)
    if args.json:
        write_json(args.json, results, indent=1)
    return results


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
