"""Evaluation throughput: the ImageNet-C loader per worker, and validate.py end to end on CPU.

    python benchmarks/bench_eval_loader.py [--images 128] [--repeats 5] [--e2e-repeats 3] [--workers 2]
                                           [--batch-size N] [--formats effnet_lite0 rn50_1]

1. Loader, one worker (one process, one torch thread): images/s of decode + resize 232 (INTER_AREA) +
   centre crop 224 + normalise on 224x224 JPEGs (quality 85, as ImageNet-C), once with torchvision's
   decoder and once with PIL's, and the time of each stage. The files are the six reference photos of
   tests/fixtures (and their mirror images). (validate.py normalises on the device, in the batch.)
2. End to end: images/s of ``validate.py --mixed --clas rn18 --random-init`` on CPU over the same files
   (loader workers + ResNet-18 forward + counting, validate.py's CPU defaults: batch 32, channels-last),
   as written in the run's .meta.json (start-up included: loader workers, first batch), against the
   classifier's forward-only images/s on the same number of random batches with the same batch size,
   memory format and threads, the two measured in turns (goal: end to end within 10% of forward-only,
   i.e. the loader is not what the evaluation waits for).
3. Memory format: forward-only images/s of effnet_lite0 and ResNet-50 in NCHW and channels-last
   (batch 32, default threads), the measurement behind validate.py's CPU default.
Every figure is the median over the repeats (passes interleaved, so a busy machine slows them alike).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classification.classifiers import build_classifier
from classification.eval import validate
from classification.eval.benchmark_sets import ImagenetCMixed
from classification.eval.evaluate import eval_defaults
from classification.eval.fake_benchmark import write_fake_benchmark
from classification.eval.preprocess import (decode_rgb_pil, decode_rgb_torchvision, normalize_uint8, resize_crop,
                                            to_chw_tensor)

CPU_FORMAT_BATCH = 32
PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference" / "images"


def load_photos() -> list[np.ndarray]:
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(PHOTOS.glob("*.png"))]
    return photos + [p[:, ::-1].copy() for p in photos]  # mirrored copies: 12 distinct files


def loader_rates(paths: list[Path], decoders: dict, repeats: int) -> dict[str, float]:
    """Median images/s of the whole per-image pipeline for each decoder; passes interleaved (fair under load)."""
    def one_pass(decode) -> float:
        start = time.perf_counter()
        for path in paths:
            normalize_uint8(to_chw_tensor(resize_crop(decode(path))))
        return len(paths) / (time.perf_counter() - start)

    rates: dict[str, list[float]] = {name: [] for name in decoders}
    for decode in decoders.values():
        one_pass(decode)  # warm-up (page cache, resampling tables)
    for _ in range(repeats):
        for name, decode in decoders.items():
            rates[name].append(one_pass(decode))
    return {name: statistics.median(r) for name, r in rates.items()}


def stage_times(paths: list[Path], repeats: int) -> dict[str, float]:
    """Median ms per image of each stage (torchvision decode)."""
    images = [decode_rgb_torchvision(p) for p in paths]
    crops = [resize_crop(i) for i in images]
    stages = {
        "decode (torchvision)": lambda: [decode_rgb_torchvision(p) for p in paths],
        "decode (PIL)": lambda: [decode_rgb_pil(p) for p in paths],
        "resize 232 + crop 224": lambda: [resize_crop(i) for i in images],
        "to tensor + normalise": lambda: [normalize_uint8(to_chw_tensor(c)) for c in crops],
    }
    result = {}
    for name, run in stages.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) / len(paths) * 1000)
        result[name] = statistics.median(times)
    return result


def end_to_end_rate(root: Path, out: Path, workers: int, batch_size: int | None) -> float:
    """images/s of one ``validate.py`` run (rn18, random weights, CPU), as its .meta.json records it."""
    size = [] if batch_size is None else ["--batch_size", str(batch_size)]
    grid = validate.main(["--mixed", "--root", str(root), "--clas", "rn18", "--random-init", "--device", "cpu",
                          "--workers", str(workers), *size, "--out", str(out), "--no-progress"])
    return json.loads(grid.with_suffix(".meta.json").read_text())["images_per_second"]


def end_to_end_against_forward(root: Path, out: Path, workers: int, batch_size: int, channels_last: bool,
                               images: int, repeats: int) -> tuple[float, float]:
    """Median images/s of validate.py end to end and of rn18's forward pass alone (same batches, format and
    threads), the two measured in turns so that a busy machine slows both alike."""
    model = {"rn18": in_format("rn18", channels_last)}
    e2e, forward = [], []
    for _ in range(repeats):
        e2e.append(end_to_end_rate(root, out, workers, batch_size))
        forward.append(forward_rates(model, images, batch_size, 1)["rn18"])
    return statistics.median(e2e), statistics.median(forward)


def forward_rates(models: dict[str, tuple[torch.nn.Module, torch.memory_format]], images: int, batch_size: int,
                  repeats: int) -> dict[str, float]:
    """Median images/s of each (model, memory format)'s forward pass over ``images`` random images in batches of
    ``batch_size``; passes interleaved."""
    sizes = [min(batch_size, images - start) for start in range(0, images, batch_size)]
    rates: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for name, (model, fmt) in models.items():  # warm-up
            model(torch.randn(sizes[0], 3, 224, 224).contiguous(memory_format=fmt))
        for _ in range(repeats):
            for name, (model, fmt) in models.items():
                batches = [torch.randn(n, 3, 224, 224).contiguous(memory_format=fmt) for n in sizes]
                start = time.perf_counter()
                for batch in batches:
                    model(batch)
                rates[name].append(images / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def in_format(name: str, channels_last: bool) -> tuple[torch.nn.Module, torch.memory_format]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_classifier(name, pretrained=name == "effnet_lite0")  # effnet_lite0's weights ship offline
    return model.to(memory_format=fmt), fmt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128,
                        help="split lines (x5 severities = files; 640 amortise the start-up as real runs do)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--e2e-repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the end-to-end run")
    parser.add_argument("--batch-size", type=int, default=None, help="end-to-end batch size (default: validate.py's)")
    parser.add_argument("--formats", nargs="*", default=["effnet_lite0", "rn50_1"],
                        help="classifiers of the memory-format comparison (none: skip it)")
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fake_benchmark(Path(tmp) / "mixed", "imagenetc-mixed", num_images=args.images,
                                    photos=load_photos())
        dataset = ImagenetCMixed(root)
        paths = [dataset.item(i).path for i in range(len(dataset))]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what a DataLoader worker gets
        decoders = {"torchvision": decode_rgb_torchvision, "PIL": decode_rgb_pil}
        for name, rate in loader_rates(paths, decoders, args.repeats).items():
            print(f"loader, 1 worker, {name:>11} decode: {rate:7.1f} images/s ({1000 / rate:.2f} ms/image, "
                  f"median of {args.repeats} passes over {len(paths)} 224x224 JPEGs)")
        for name, ms in stage_times(paths, args.repeats).items():
            print(f"  {name:<22} {ms:.3f} ms/image")
        torch.set_num_threads(threads)

        batch_size, channels_last = eval_defaults(torch.device("cpu"), args.batch_size, None)
        rate, forward = end_to_end_against_forward(root, Path(tmp) / "json", args.workers, batch_size, channels_last,
                                                   len(paths), args.e2e_repeats)
        layout = "channels-last" if channels_last else "NCHW"
        print(f"validate.py end to end, rn18 (random weights) on CPU, {args.workers} workers, batch {batch_size}, "
              f"{layout}: {rate:7.1f} images/s (median of {args.e2e_repeats}); forward only {forward:.1f} images/s: "
              f"end to end = {100 * rate / forward:.0f}% of forward (goal >= 90%)")

    if args.formats:
        models = {f"{name} {label}": in_format(name, label == "channels-last")
                  for name in args.formats for label in ("NCHW", "channels-last")}
        rates = forward_rates(models, 2 * CPU_FORMAT_BATCH, CPU_FORMAT_BATCH, args.e2e_repeats)
        for name in args.formats:
            nchw, nhwc = rates[f"{name} NCHW"], rates[f"{name} channels-last"]
            print(f"forward only, {name}, batch {CPU_FORMAT_BATCH}, {threads} threads: NCHW {nchw:.1f} images/s, "
                  f"channels-last {nhwc:.1f} images/s (x{nhwc / nchw:.2f})")


if __name__ == "__main__":
    main()
