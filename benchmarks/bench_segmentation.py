"""Segmentation throughput with and without SyMPIE: DeepLab-V2 (ResNet-50) at 1024x512.

    python benchmarks/bench_segmentation.py [--repeats 5] [--batch 1] [--threads N] [--device cpu] [--flip]

Random weights (speed does not depend on them). Runs with and without SyMPIE alternate, so load
changes on a shared machine hit both alike. Reported: median wall-clock images/s and CPU seconds per
image of DeepLab alone, SyMPIE + DeepLab and SyMPIE alone; the overhead ratio (time with / without
SyMPIE) by both clocks; and the GFLOPs of both networks (counted on the meta device by
torch.utils.flop_counter, so counting costs nothing). On a shared machine prefer ``--threads 1`` and
the CPU-time ratio.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from classification.training.model import ColModule, SyMPIE
from segmentation.deeplab import DeeplabNW
from segmentation.eval import as_segmenter, predict

WIDTH, HEIGHT = 1024, 512


def gflops(build, height: int, width: int) -> float:
    """FLOPs (2 per multiply-accumulate) of one image through ``build()``, counted on the meta device."""
    with torch.device("meta"):
        module = build().eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            module(torch.empty(1, 3, height, width))
    return counter.get_total_flops() / 1e9


def timed(fn) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()`` (CPU time is steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--flip", action="store_true", help="include the flip test-time augmentation (2 forwards)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    segmenter = as_segmenter(DeeplabNW()).to(device).eval()
    sympie = SyMPIE(ColModule()).to(device).eval()
    x = torch.randn(args.batch, 3, HEIGHT, WIDTH, device=device)

    def run(with_sympie: bool):
        return lambda: (predict(segmenter, x, sympie if with_sympie else None, args.flip), sync())

    times: dict[str, list[tuple[float, float]]] = {"without": [], "with": [], "alone": []}
    with torch.inference_mode():
        run(True)()  # warm-up
        for _ in range(args.repeats):
            times["without"].append(timed(run(False)))
            times["with"].append(timed(run(True)))
            times["alone"].append(timed(lambda: (sympie(x), sync())))

    def per_image(name: str, clock: int) -> float:
        return statistics.median(t[clock] for t in times[name]) / args.batch

    seg_gflops = gflops(lambda: as_segmenter(DeeplabNW()), HEIGHT, WIDTH)
    sympie_gflops = gflops(lambda: SyMPIE(ColModule()), HEIGHT, WIDTH)
    passes = 2 if args.flip else 1
    print(f"machine: {platform.processor() or platform.machine()}, device {device}, {args.threads} torch threads, "
          f"torch {torch.__version__}; batch {args.batch} at {WIDTH}x{HEIGHT}, flip TTA {'on' if args.flip else 'off'}, "
          f"median of {args.repeats}")
    print(f"{'':18}{'wall images/s':>15}{'CPU s/image':>13}")
    for label, name in (("DeepLab-V2", "without"), ("SyMPIE + DeepLab", "with"), ("SyMPIE alone", "alone")):
        print(f"{label:18}{1 / per_image(name, 0):>15.3f}{per_image(name, 1):>13.2f}")
    print(f"GFLOPs per image: DeepLab-V2 {passes} x {seg_gflops:.1f}, SyMPIE {sympie_gflops:.2f} "
          f"(NEM at 224x224 + warp at full size)")
    for clock, name in ((0, "wall"), (1, "CPU")):
        print(f"overhead ratio ({name} time with / without SyMPIE): "
              f"{per_image('with', clock) / per_image('without', clock):.3f}")
    print(f"overhead ratio (FLOPs): {1 + sympie_gflops / (passes * seg_gflops):.3f}")


if __name__ == "__main__":
    main()
