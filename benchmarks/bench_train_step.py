"""Training speed: seconds per step, its ratio to one plain step, peak memory, and the data pipeline's images/s.

    python benchmarks/bench_train_step.py                        # CPU, batch 8, rn18, effnet_lite0, rn50_2
    python benchmarks/bench_train_step.py --classifiers rn18 --threads 1 --steps 7
    python benchmarks/bench_train_step.py --device cuda --batch-size 48 --steps 20

1. One training step as the loop runs it on a step that logs nothing (teacher correction, two student
   rounds with backward, Adam, cosine, EMA), against one plain step of the same batch and precision
   (NEM + frozen classifier forward and backward, cross-entropy, Adam), timed alternately, in fp32 and
   with ``--amp``; at 224x224 for each classifier (effnet_lite0 pretrained offline, the others random);
   each configuration runs in a fresh process so that its peak memory (RSS on CPU, allocator peak on
   CUDA) is its own. The recipe's step does about 2.3 plain steps of work (two student rounds and a
   teacher pass without the classifier): the target is a ratio of at most 2.4 on the CPU.
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
import torch.nn.functional as F
from PIL import Image

from classification.classifiers import build_classifier
from classification.distributed import autocast
from classification.training.corrupted_folder import DistortImageFolder, training_methods
from classification.training.ema import add_gradient_clamp_hooks
from classification.training.engine import DeviceCorruptions, prepare_batch, train_step
from classification.training.model import CorrectColMulti

CLASSIFIERS = {"rn18": False, "effnet_lite0": True, "rn50_2": False}  # name -> pretrained (offline weights only)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step(model: CorrectColMulti, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               amp: bool) -> None:
    """NEM + frozen classifier forward and backward, cross-entropy, Adam: what one student round costs."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, amp):
        logits, _, _ = model(x, 0)
    F.cross_entropy(logits.float(), y).backward()
    optimizer.step()


def time_steps(name: str, batch_size: int, steps: int, device_name: str, threads: int, amp: bool) -> dict:
    """Runs in its own process: build the models, one warm-up of each, then ``steps`` timed pairs (a plain
    step, then a training step)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device_name)
    student = CorrectColMulti([build_classifier(name, pretrained=CLASSIFIERS.get(name, False))]).to(device)
    teacher = CorrectColMulti(student.classifiers).to(device).eval().requires_grad_(False)
    plain = CorrectColMulti(student.classifiers).to(device)
    if device.type == "cuda":  # as train.py does
        student.classifiers.to(memory_format=torch.channels_last)
    add_gradient_clamp_hooks(student.nem.parameters())
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    plain_optimizer = torch.optim.Adam([p for p in plain.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps + 1)
    x, z = torch.randn(2, batch_size, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    baseline = peak_memory_mib(device)
    seconds = {"plain": [], "train": []}
    for step in range(steps + 1):
        for kind in ("plain", "train"):
            synchronize(device)
            start = time.perf_counter()
            if kind == "plain":
                plain_step(plain, x, y, plain_optimizer, amp)
            else:
                train_step(student, teacher, x, y, z, clasid=0, optimizer=optimizer, scheduler=scheduler, amp=amp,
                           with_metrics=False)
            synchronize(device)
            if step:  # the first of each is a warm-up
                seconds[kind].append(time.perf_counter() - start)
    return {**seconds, "peak_mib": peak_memory_mib(device), "before_mib": baseline}


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
    parser.add_argument("--steps", type=int, default=3, help="timed step pairs per configuration (after a warm-up)")
    parser.add_argument("--classifiers", nargs="+", default=list(CLASSIFIERS), choices=list(CLASSIFIERS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-batches", type=int, default=20, help="batches for the images/s comparison")
    parser.add_argument("--skip-steps", action="store_true", help="only measure the data pipeline")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}")

    if not args.skip_steps:
        context = multiprocessing.get_context("spawn")
        for name in args.classifiers:
            for amp in (False, True):
                with context.Pool(1) as pool:
                    result = pool.apply(time_steps, (name, args.batch_size, args.steps, args.device, args.threads, amp))
                train, plain = statistics.median(result["train"]), statistics.median(result["plain"])
                label = (name if CLASSIFIERS.get(name) else f"{name} (random weights)") + (" --amp" if amp else "")
                print(f"train step  {label:36s} median {train:7.3f} s/step, plain step {plain:7.3f} s: ratio "
                      f"{train / plain:4.2f} ({len(result['train'])} pairs)  peak memory {result['peak_mib']:7.0f} MiB "
                      f"(models built: {result['before_mib']:.0f} MiB)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), 64)
        rates = images_per_second(Path(tmp), args.batch_size, args.data_batches, torch.device(args.device))
    for label, rate in rates.items():
        print(f"data        {label:40s} {rate:7.1f} images/s per process")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
