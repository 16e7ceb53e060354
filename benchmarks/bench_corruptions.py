"""Speed of the corruption engine (SPEC §4.5): ms/image per corruption, the training mix, batched throughput.

    python benchmarks/bench_corruptions.py [--repeats 7] [--mix-images 230] [--batch 64] [--threads 1]
                                           [--size 224] [--device cpu] [--clock wall|cpu] [--strict]

1. Every corruption at every severity on one 224x224 photo through ``corrupt_batch``: the median of
   ``--repeats`` calls, by wall clock and by CPU time (process time; on a shared machine the CPU time
   is the one to trust). Any severity above 25 ms/image is flagged.
2. The training mix: one image at a time, as a data-loader worker does, with the corruption drawn
   uniformly from the 23 of the training set and the severity uniformly from 0..5; mean ms/image over
   ``--mix-images`` images, median over the repeats; flagged above 4.5 ms. The mix expected from
   table 1 (severity 0 costing nothing) is printed beside it.
3. Batched throughput: batches of ``--batch`` images with one mixed draw per image, images/s.

Single-threaded by default (``torch.set_num_threads(1)``), as the targets are stated.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classification.training.corruptions import (
    CORRUPTIONS,
    MAX_SEVERITY,
    TRAINING_SET,
    corrupt_batch,
    sample_corruption,
)

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference" / "images"
METHOD_LIMIT_MS = 25.0
MIX_LIMIT_MS = 4.5


def load_photos(size: int, device: torch.device) -> torch.Tensor:
    """The reference photos resized to ``size`` x ``size``, (N,3,size,size) float in [0,1]."""
    images = []
    for path in sorted(PHOTOS.glob("*.png")):
        with Image.open(path) as photo:
            images.append(np.asarray(photo.convert("RGB").resize((size, size), Image.BILINEAR)))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device, torch.float32) / 255


class Clock:
    """Wall and CPU seconds of a block, synchronising CUDA so that queued kernels are counted."""

    def __init__(self, device: torch.device):
        self.device = device

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> "Clock":
        self._sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_method(
    image: torch.Tensor, name: str, severity: int, repeats: int, generator: torch.Generator
) -> tuple[float, float]:
    """Median (wall, CPU) ms of one call on one image; the first call (caches, lazy loading) is not counted."""
    corrupt_batch(image, name, severity, generator)
    walls, cpus = [], []
    for _ in range(repeats):
        with Clock(image.device) as clock:
            corrupt_batch(image, name, severity, generator)
        walls.append(clock.wall * 1e3)
        cpus.append(clock.cpu * 1e3)
    return statistics.median(walls), statistics.median(cpus)


def time_mix(
    photos: torch.Tensor, count: int, repeats: int, generator: torch.Generator, rng: random.Random
) -> tuple[float, float]:
    """Median over ``repeats`` of the mean (wall, CPU) ms per image of the training mix, one image per call."""
    walls, cpus = [], []
    for _ in range(repeats):
        draws = [sample_corruption(rng, TRAINING_SET) for _ in range(count)]
        with Clock(photos.device) as clock:
            for i, (name, severity) in enumerate(draws):
                corrupt_batch(photos[i % len(photos)][None], name, severity, generator)
        walls.append(clock.wall * 1e3 / count)
        cpus.append(clock.cpu * 1e3 / count)
    return statistics.median(walls), statistics.median(cpus)


def time_batched(
    photos: torch.Tensor, batch: int, repeats: int, generator: torch.Generator, rng: random.Random
) -> tuple[float, float]:
    """Median images/s (wall, CPU) of ``corrupt_batch`` on batches with one training-mix draw per image."""
    images = photos[torch.arange(batch, device=photos.device) % len(photos)]
    walls, cpus = [], []
    for run in range(repeats + 1):
        draws = [sample_corruption(rng, TRAINING_SET) for _ in range(batch)]
        names, severities = zip(*draws)
        with Clock(photos.device) as clock:
            corrupt_batch(images, list(names), list(severities), generator)
        if run > 0:  # the first batch warms caches up
            walls.append(batch / clock.wall)
            cpus.append(batch / clock.cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per measurement (median taken)")
    parser.add_argument("--mix-images", type=int, default=230, help="images per training-mix measurement")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the throughput measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the targets are single-threaded)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="clock the flags are based on")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    photos = load_photos(args.size, device)
    generator = torch.Generator(device=device).manual_seed(0)
    rng = random.Random(0)
    pick = 0 if args.clock == "wall" else 1
    other = "cpu" if args.clock == "wall" else "wall"
    print(f"corruption engine, {args.size}x{args.size}, {args.threads} thread(s), {device}, median of {args.repeats}; "
          f"flags by {args.clock} clock")

    header = "".join(f"{'sev ' + str(s):>9}" for s in range(1, MAX_SEVERITY + 1))
    print(f"\n{'ms/image (' + args.clock + ')':<18}{header}{'mean':>9}{other + ' mean':>11}")
    slow, expected_mix = [], 0.0
    for name in sorted(CORRUPTIONS):
        timings = [time_method(photos[:1], name, s, args.repeats, generator) for s in range(1, MAX_SEVERITY + 1)]
        chosen = [t[pick] for t in timings]
        over = [s for s, ms in enumerate(chosen, start=1) if ms > METHOD_LIMIT_MS]
        if over:
            slow.append(name)
        if name in TRAINING_SET:
            expected_mix += sum(chosen) / (MAX_SEVERITY + 1) / len(TRAINING_SET)
        flag = f"  SLOW (> {METHOD_LIMIT_MS:g} ms at severity {', '.join(map(str, over))})" if over else ""
        cells = "".join(f"{ms:9.2f}" for ms in chosen)
        other_mean = statistics.mean(t[1 - pick] for t in timings)
        print(f"{name:<18}{cells}{statistics.mean(chosen):9.2f}{other_mean:11.2f}{flag}")

    mix_wall, mix_cpu = time_mix(photos, args.mix_images, args.repeats, generator, rng)
    mix = (mix_wall, mix_cpu)[pick]
    mix_flag = f"  OVER the {MIX_LIMIT_MS:g} ms target" if mix > MIX_LIMIT_MS else f"  (target <= {MIX_LIMIT_MS:g} ms)"
    print(f"\ntraining mix (23 methods, severity 0..5): {mix_wall:.2f} ms/image wall, {mix_cpu:.2f} ms/image CPU"
          f"{mix_flag}; expected from the table: {expected_mix:.2f} ms")
    wall_rate, cpu_rate = time_batched(photos, args.batch, args.repeats, generator, rng)
    print(f"batched training mix, batch {args.batch}: {wall_rate:.1f} images/s wall ({1e3 / wall_rate:.2f} ms/image), "
          f"{cpu_rate:.1f} images/s by CPU time")
    if slow:
        print(f"methods over {METHOD_LIMIT_MS:g} ms/image: {', '.join(slow)}")
    missed = bool(slow) or mix > MIX_LIMIT_MS
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
