"""Does a SyMPIE checkpoint help effnet_lite0 on photos it never saw? The held-out table of the demo model.

    python benchmarks/bench_demo_model.py                                  # the shipped sympie_demo.pth
    python benchmarks/bench_demo_model.py --colm logs/a/final.pth logs/b/final.pth --crops 4

The held-out photos (``classification/training/demo_photos/heldout``: the six demo samples' sources and
one more public-domain photo, none used for training) give ``--crops`` seeded views each (short side
256, a random 224x224 crop, mirrored with probability 1/2). Every view is corrupted by our engine with
the 15 ImageNet-C corruptions and the four colour warps at severities 1..5 (one seed per view,
corruption and severity; JPEG quality 85 as ImageNet-C was saved) and classified by ``effnet_lite0``
alone and behind each SyMPIE checkpoint (eval mode). The label of a view is ``effnet_lite0``'s top-1 on
the clean view, so the "without" clean accuracy is 100 % by construction and the "with" one counts the
views whose prediction SyMPIE changed. A view whose clean top-1 probability is below ``--min-confidence``
(default 0.2) has no label worth the name (astronaut and hubble_deep_field: 0.02-0.10, where any change of
the image flips the top-1) and is left out; ``--min-confidence 0`` keeps every view. The rendered set is
cached (``$SYMPIE_CACHE`` or ``~/.cache/sympie``).

Rows (accuracy %, mean over severities 1..5): clean; brightness, contrast, colour warp (darken, sunset,
night, white) and their mean ("colour rows"); the four ImageNet-C groups; the 15-corruption mean.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from classification.atomic import atomic_path, write_json
from classification.checkpoint import CHECKPOINT_DIR
from classification.classifiers import build_classifier
from classification.normalization import normalize
from classification.samples import cache_root
from classification.training.corrupted_folder import sample_seed
from classification.training.corruptions import IMAGENET_C, corrupt
from classification.training.model import SyMPIE

HELDOUT_DIR = Path(__file__).resolve().parents[1] / "classification" / "training" / "demo_photos" / "heldout"
DEFAULT_COLM = CHECKPOINT_DIR / "sympie_demo.pth"
COLOR_WARPS = ("darken", "sunset", "night", "white")
CATEGORIES = (*IMAGENET_C, *COLOR_WARPS)
SEVERITIES = (1, 2, 3, 4, 5)
RESIZE, CROP, JPEG_QUALITY = 256, 224, 85
GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CACHE_VERSION = 1


def views(photo: Path, crops: int, seed: int) -> list[np.ndarray]:
    """``crops`` seeded 224x224 views of ``photo`` (Resize(256) short side, random crop, random mirror)."""
    with Image.open(photo) as image:
        image = image.convert("RGB")
    scale = RESIZE / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    rng = random.Random(sample_seed(seed, *photo.name.encode()))
    out = []
    for _ in range(crops):
        left, top = rng.randint(0, image.width - CROP), rng.randint(0, image.height - CROP)
        view = image.crop((left, top, left + CROP, top + CROP))
        out.append(np.asarray(ImageOps.mirror(view) if rng.random() < 0.5 else view))
    return out


def jpeg(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def render(photos: list[Path], crops: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(clean views (N,224,224,3), corrupted views (N, categories, severities, 224,224,3)), uint8."""
    clean = np.stack([v for photo in photos for v in views(photo, crops, seed)])
    torch.set_num_threads(1)  # small images: one thread is faster than contention
    corrupted = np.empty((len(clean), len(CATEGORIES), len(SEVERITIES), CROP, CROP, 3), np.uint8)
    for i, view in enumerate(clean):
        for c, name in enumerate(CATEGORIES):
            for s, severity in enumerate(SEVERITIES):
                corrupted[i, c, s] = jpeg(corrupt(view, name, severity, seed=sample_seed(seed, i, c, severity)))
    return clean, corrupted


def rendered_set(photos: list[Path], crops: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render`, cached by (version, photos' bytes, crops, seed)."""
    digest = hashlib.sha256(f"{CACHE_VERSION}/{crops}/{seed}".encode())
    for photo in photos:
        digest.update(photo.name.encode() + photo.read_bytes())
    path = cache_root() / f"bench_demo_model_{digest.hexdigest()[:12]}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["clean"], data["corrupted"]
    threads = torch.get_num_threads()
    try:
        clean, corrupted = render(photos, crops, seed)
    finally:
        torch.set_num_threads(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, clean=clean, corrupted=corrupted)
    return clean, corrupted


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 class and its probability for every uint8 image (..., 224, 224, 3)."""
    flat = images.reshape(-1, CROP, CROP, 3)
    classes, confidences = [], []
    for start in range(0, len(flat), batch):
        x = torch.from_numpy(flat[start:start + batch]).permute(0, 3, 1, 2).float().div(255)
        top = model(normalize(x)).softmax(1).max(1)
        classes.append(top.indices.numpy())
        confidences.append(top.values.numpy())
    shape = images.shape[:-3]
    return np.concatenate(classes).reshape(shape), np.concatenate(confidences).reshape(shape)


def table(clean_correct: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """Accuracy rows (percent) from per-view correctness: clean (N,) and corrupted (N, categories, severities)."""
    per_category = {name: 100 * correct[:, c].mean() for c, name in enumerate(CATEGORIES)}
    rows = {"clean": 100 * clean_correct.mean(),
            "brightness": per_category["brightness"], "contrast": per_category["contrast"],
            "colour warp": float(np.mean([per_category[n] for n in COLOR_WARPS]))}
    rows["colour rows (mean of 3)"] = float(np.mean([rows["brightness"], rows["contrast"], rows["colour warp"]]))
    rows.update({f"{group} ({len(names)})": float(np.mean([per_category[n] for n in names]))
                 for group, names in GROUPS.items()})
    rows["15 ImageNet-C (mean)"] = float(np.mean([per_category[n] for n in IMAGENET_C]))
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--colm", nargs="+", type=Path, default=[DEFAULT_COLM], help="SyMPIE checkpoint(s)")
    parser.add_argument("--photos", type=Path, default=HELDOUT_DIR, help="folder of held-out photos")
    parser.add_argument("--crops", type=int, default=8, help="seeded views per photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-confidence", type=float, default=0.2,
                        help="leave out views whose clean top-1 probability is below this (0: keep all)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", type=Path, help="also write the tables here")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    for colm in args.colm:
        if not colm.is_file():
            sys.exit(f"error: SyMPIE checkpoint {colm} does not exist; train one (train.py --recipe small) or "
                     f"pass --colm PATH.")
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    tic = time.perf_counter()
    clean, corrupted = rendered_set(photos, args.crops, args.seed)
    classifier = build_classifier("effnet_lite0").eval()
    labels, confidence = predict(classifier, clean)
    keep = confidence >= args.min_confidence
    clean, corrupted, labels = clean[keep], corrupted[keep], labels[keep]
    print(f"{len(photos)} held-out photos x {args.crops} views, {len(clean)} kept (clean top-1 probability >= "
          f"{args.min_confidence}), {corrupted.shape[1]} corruptions x 5 severities "
          f"({time.perf_counter() - tic:.0f} s to render/load)")
    base = table(np.ones(len(clean), bool), predict(classifier, corrupted)[0] == labels[:, None, None])
    results = {"photos": [p.name for p in photos], "views": len(clean), "min_confidence": args.min_confidence,
               "without": base, "with": {}}
    for colm in args.colm:
        tic = time.perf_counter()
        model = torch.nn.Sequential(SyMPIE.from_checkpoint(colm), classifier).eval()
        rows = table(predict(model, clean)[0] == labels, predict(model, corrupted)[0] == labels[:, None, None])
        results["with"][str(colm)] = rows
        print(f"\n{colm} ({time.perf_counter() - tic:.0f} s)\n")
        print(f"| effnet_lite0, {len(clean)} held-out views | without SyMPIE | with SyMPIE | delta |")
        print("|---|---:|---:|---:|")
        for name, value in rows.items():
            print(f"| {name} | {base[name]:.1f} | {value:.1f} | {value - base[name]:+.1f} |")
    if args.json:
        write_json(args.json, results, indent=1)
    return results


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
