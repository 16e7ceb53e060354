"""Training speed: seconds per step and peak memory, and the data pipeline's images/s.

    python benchmarks/bench_train_step.py                        # CPU, batch 8, both classifiers
    python benchmarks/bench_train_step.py --device cuda --batch-size 48 --steps 20

1. One full training step (teacher pass, two student rounds with backward, Adam, cosine, EMA) at
   224x224 for EfficientNet-Lite0 (offline pretrained weights) and ResNet-50 (random weights); each
   configuration runs in a fresh process so that its peak memory (RSS on CPU, allocator peak on CUDA)
   is its own.
2. Samples per second: decoding and cropping alone, the loader path (decode, crop and corrupt one
   image at a time, as the DataLoader workers do) and ``--gpu-corruptions`` (decode and crop in the
   loader, the batch corrupted on the device; the decode + crop time is included).
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classification.classifiers import build_classifier
from classification.training.corrupted_folder import DistortImageFolder, training_methods
from classification.training.ema import add_gradient_clamp_hooks
from classification.training.engine import DeviceCorruptions, prepare_batch, train_step
from classification.training.model import CorrectColMulti

CLASSIFIERS = {"effnet_lite0": True, "rn50_2": False}  # name -> pretrained (ResNet-50 with random weights)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def time_steps(name: str, batch_size: int, steps: int, device_name: str, threads: int) -> dict:
    """Runs in its own process: build the models, one warm-up step, then ``steps`` timed steps."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device_name)
    student = CorrectColMulti([build_classifier(name, pretrained=CLASSIFIERS[name])]).to(device)
    teacher = CorrectColMulti(student.classifiers).to(device).eval().requires_grad_(False)
    add_gradient_clamp_hooks(student.nem.parameters())
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps + 1)
    x, z = torch.randn(2, batch_size, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    baseline = peak_memory_mib(device)
    seconds = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_step(student, teacher, x, y, z, clasid=0, optimizer=optimizer, scheduler=scheduler).metrics["loss"].item()
        if step:  # the first step is a warm-up
            seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "peak_mib": peak_memory_mib(device), "before_mib": baseline}


def write_images(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        (folder / "cls").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)  # a typical ImageNet size
        Image.fromarray(pixels).save(folder / "cls" / f"{i:04d}.jpg", quality=90)


def images_per_second(root: Path, batch_size: int, batches: int, device: torch.device) -> dict[str, float]:
    """Samples per second, one process, no workers: decode + crop only, the loader path (corrupted one by
    one), and the device path (decode + crop in the loader, the batch corrupted on ``device``)."""
    methods = training_methods()
    count = batch_size * batches
    crop_set = DistortImageFolder(root, "train", methods=methods, seed=0, corrupt_in_loader=False)
    start = time.perf_counter()
    crops = [crop_set[i % len(crop_set)] for i in range(count)]
    crop_seconds = time.perf_counter() - start

    loader_set = DistortImageFolder(root, "train", methods=methods, seed=0)
    start = time.perf_counter()
    for i in range(count):
        loader_set[i % len(loader_set)]
    loader_seconds = time.perf_counter() - start

    corruptions = DeviceCorruptions(methods, 1, seed=0)
    start = time.perf_counter()
    for b in range(batches):
        items = crops[b * batch_size:(b + 1) * batch_size]
        batch = (torch.stack([c for c, _ in items]), torch.tensor([label for _, label in items]))
        x, _, _ = prepare_batch(batch, device, corruptions, 0, 0, b)
        x.sum().item()
    device_seconds = crop_seconds + time.perf_counter() - start
    return {"decode + crop only": count / crop_seconds, "loader path (per-image corruptions)": count / loader_seconds,
            f"--gpu-corruptions on {device.type} (batched)": count / device_seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per classifier (after one warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-batches", type=int, default=20, help="batches for the images/s comparison")
    parser.add_argument("--skip-steps", action="store_true", help="only measure the data pipeline")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}")

    if not args.skip_steps:
        context = multiprocessing.get_context("spawn")
        for name in CLASSIFIERS:
            with context.Pool(1) as pool:
                result = pool.apply(time_steps, (name, args.batch_size, args.steps, args.device, args.threads))
            label = name if CLASSIFIERS[name] else f"{name} (random weights)"
            print(f"train step  {label:28s} median {statistics.median(result['seconds']):7.2f} s/step "
                  f"(min {min(result['seconds']):.2f}, {len(result['seconds'])} steps)  "
                  f"peak memory {result['peak_mib']:7.0f} MiB (models built: {result['before_mib']:.0f} MiB)")

    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), 64)
        rates = images_per_second(Path(tmp), args.batch_size, args.data_batches, torch.device(args.device))
    for label, rate in rates.items():
        print(f"data        {label:40s} {rate:7.1f} images/s per process")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
