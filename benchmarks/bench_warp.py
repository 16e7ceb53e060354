"""SyMPIE cost on CPU: ColWarp + Clamp throughput and the NEM's multiply-accumulates.

    python benchmarks/bench_warp.py [--repeats 7] [--threads N]

Reports the median images/s over ``--repeats`` timed runs for a batch of 64 at 224x224 and a batch of 8
at 1920x1080, and the NEM's GMACs for one 224x224 image (counted by torch.utils.flop_counter; the paper
quotes ~1 GMAC for the estimator, ~2 GFLOPs).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from classification.training.model import NUM_PARAMS, Clamp, ColModule, col_warp


def nem_gmacs(size: int = 224) -> float:
    nem = ColModule().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        nem(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 2 / 1e9


def warp_images_per_second(batch: int, height: int, width: int, repeats: int) -> float:
    x = torch.randn(batch, 3, height, width)
    params = torch.randn(batch, NUM_PARAMS)
    clamp = Clamp().eval()
    with torch.no_grad():
        clamp(col_warp(x, params))  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            clamp(col_warp(x, params))
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}")
    print(f"NEM at 224x224: {nem_gmacs():.3f} GMAC per image")
    for batch, h, w in ((64, 224, 224), (8, 1080, 1920)):
        rate = warp_images_per_second(batch, h, w, args.repeats)
        print(f"ColWarp+Clamp, batch {batch:>2} at {w}x{h}: {rate:8.1f} images/s (median of {args.repeats})")


if __name__ == "__main__":
    main()
