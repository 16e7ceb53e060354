"""Throughput of the benchmark builder (classification/eval/render.py) on CPU.

Renders a synthetic val folder (the reference photos, resized to ImageNet's typical 500x375) into a
fresh output folder several times, in this process (``--workers 0``) and with a worker pool, and
prints the median source images/s and files/s (one source image = 86 files: 15 corruptions x 5
severities, clean, 5 colour, 5 mixed). Pool start-up (spawning workers, importing torch) is included.

    python benchmarks/bench_render.py --images 6 --workers 2 --repeats 3
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from classification.eval.render import PARTS, render

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "tests" / "fixtures" / "reference" / "images"
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331")


def make_val(root: Path, count: int) -> Path:
    photos = sorted(PHOTOS.glob("*.png"))
    for i in range(count):
        folder = root / WNIDS[i % len(WNIDS)]
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(photos[i % len(photos)]) as photo:
            photo.convert("RGB").resize((500, 375), Image.BILINEAR).save(
                folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=90)
    return root


def measure(val: Path, scratch: Path, workers: int, repeats: int, parts: list[str]) -> tuple[float, int]:
    """Median seconds of ``repeats`` full renders into new folders, and the number of files per render."""
    seconds, files = [], 0
    for run in range(repeats):
        out = scratch / f"w{workers}_r{run}"
        start = time.perf_counter()
        summary = render(val, out, seed=0, parts=parts, workers=workers)
        seconds.append(time.perf_counter() - start)
        files = summary["written"]
    return statistics.median(seconds), files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6, help="source images per render")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts to compare (0 = in process)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        val = make_val(Path(tmp) / "val", args.images)
        print(f"{args.images} source images, parts {' '.join(args.parts)}, median of {args.repeats} runs")
        for workers in args.workers:
            seconds, files = measure(val, Path(tmp), workers, args.repeats, args.parts)
            print(f"workers={workers}: {seconds:7.2f} s  {args.images / seconds:6.2f} images/s  "
                  f"{files / seconds:7.1f} files/s  ({files} files)")


if __name__ == "__main__":
    main()
