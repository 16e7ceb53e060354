"""One command that runs every accelerator path and prints a pass/fail table with figures.

    python benchmarks/gpu_check.py                 # on a CUDA machine: full sizes, under 10 minutes on one GPU
    python benchmarks/gpu_check.py --reduced       # small sizes (what CI runs on the CPU)
    python benchmarks/gpu_check.py --device cpu    # the same steps on the CPU (gloo), smaller sizes

Steps (each in its own process, so that peak memory is per step):

- ``corruptions``: ``corrupt_batch`` on the device, every corruption at severity 3, batch 256 of 224x224
  images (CPU: 8): images/s per corruption; outputs finite, on the uint8 grid, same shape.
- ``warp``: SyMPIE (NEM on the 224 view + ColWarp + Clamp) at 224x224 (batch 64; CPU 4) and 1920x1080
  (batch 8; CPU 1): images/s.
- ``process group``: NCCL on CUDA (gloo on the CPU) with one rank: all_reduce and broadcast.
- ``train``: ``train.py`` in one process, 50 iterations (CPU: 4) with ``--gpu-corruptions --amp`` (on the
  CPU without ``--amp``: bfloat16 is many times slower on CPUs without bf16 instructions) and
  random-weight classifiers on a synthetic ImageFolder: s/iteration, images/s.
- ``resume``: the same run stopped after the first epoch's checkpoint plus one step, then ``--resume``:
  final.pth and final_ema.pth must equal the uninterrupted run's bit for bit (both runs with
  ``--deterministic``, without which cuDNN and cuBLAS kernels differ from run to run in the last bits).
- ``torchrun``: ``torchrun --nproc-per-node=2 train.py`` (NCCL when 2 GPUs are there; gloo on the CPU;
  skipped with one GPU, where the process-group step covers NCCL).
- ``validate``: ``validate.py --demo --amp --channels-last`` on the demo set (mini ImageNet-C of the
  sample photos; ``--reduced`` adds ``--debug``): images/s.
- ``segmentation``: random-weight DeepLab-V2 with and without SyMPIE on synthetic Cityscapes-sized images
  (2048x1024 evaluated at long side 1024; CPU 256x128 at 128), flip test-time augmentation: images/s.

Peak memory: CUDA's max allocated on the GPU, else the process's maximum resident set. Nothing is
downloaded and no dataset is needed (random weights, effnet_lite0's packaged weights, the sample photos).
Exit status 1 when a step fails.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
TRAIN = REPO / "classification" / "training" / "train.py"
VALIDATE = REPO / "classification" / "eval" / "validate.py"
STEPS = ("corruptions", "warp", "process group", "train", "resume", "torchrun", "validate", "segmentation")
MARK = "GPU_CHECK_RESULT "


class Sizes:
    """Batch sizes and image sizes of a full (accelerator) or small (CPU, --reduced) run."""

    def __init__(self, full: bool):
        self.corrupt_batch = 256 if full else 8
        self.warp_batches = ((64, 224, 224), (8, 1080, 1920)) if full else ((4, 224, 224), (1, 1080, 1920))
        self.train = (["--clas", "rn50_2", "--batch-size", "32", "--crop-size", "224", "--resize-size", "256",
                       "--epochs", "2", "--iters-per-epoch", "25", "--workers", "4"] if full else
                      ["--clas", "rn18", "--batch-size", "2", "--crop-size", "64", "--resize-size", "72",
                       "--epochs", "2", "--iters-per-epoch", "2", "--workers", "0"])
        self.train_images = 50 * 32 + 50 if full else 200  # one in 50 validates: >= batch x 2 processes
        self.iterations = 50 if full else 4
        self.images_per_iteration = 32 if full else 2
        self.segmentation = ((2048, 1024), 1024) if full else ((256, 128), 128)


# ------------------------------------------------------------------------------------- the steps


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (GPU)"
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return f"{rss / 2**20:.2f} GiB (RSS)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn, count: int, device: torch.device, repeats: int = 3) -> float:
    """Best items/s of ``fn()`` (which handles ``count`` items) over ``repeats`` timed calls after a warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return count / best


def step_corruptions(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    from classification.training.corruptions import CORRUPTIONS, corrupt_batch

    x = torch.rand(sizes.corrupt_batch, 3, 224, 224, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    figures = {}
    for name in sorted(CORRUPTIONS):
        out = corrupt_batch(x, name, 3, generator)
        if out.shape != x.shape or not bool(torch.isfinite(out).all()) or not torch.equal(out, (out * 255).round() / 255):
            raise AssertionError(f"{name}: wrong shape, non-finite values or off the uint8 grid")
        figures[name] = rate(lambda: corrupt_batch(x, name, 3, generator), len(x), device, repeats=1)
    slowest = min(figures, key=figures.get)
    table = ", ".join(f"{name} {value:.0f}" for name, value in figures.items())
    return f"batch {len(x)}: slowest {slowest} {figures[slowest]:.0f} images/s; all: {table}"


def step_warp(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    from classification.training.model import SyMPIE

    model = SyMPIE().to(device).eval()
    parts = []
    with torch.inference_mode():
        for batch, h, w in sizes.warp_batches:
            x = torch.rand(batch, 3, h, w, device=device)
            out = model(x)
            if out.shape != x.shape or not bool(torch.isfinite(out).all()):
                raise AssertionError(f"SyMPIE at {w}x{h}: wrong shape or non-finite values")
            parts.append(f"{w}x{h} batch {batch}: {rate(lambda: model(x), batch, device):.1f} images/s")
    return "; ".join(parts)


def step_process_group(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    store = dist.FileStore(str(workdir / "store"), 1)
    dist.init_process_group(backend, store=store, rank=0, world_size=1)
    try:
        x = torch.arange(4.0, device=device)
        dist.all_reduce(x)
        dist.broadcast(x, 0)
        if x.tolist() != [0.0, 1.0, 2.0, 3.0]:
            raise AssertionError(f"{backend} all_reduce over one rank changed the tensor: {x.tolist()}")
    finally:
        dist.destroy_process_group()
    return f"{backend}, one rank: all_reduce and broadcast"


def write_image_folder(root: Path, count: int) -> Path:
    """``count`` small noisy images in two class folders (a synthetic ImageNet train folder)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"n{i % 2:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    (root.parent / "no_datasets.yaml").write_text("{}\n")
    return root


def train_args(device: torch.device, sizes: Sizes, workdir: Path, logdir: Path) -> list[str]:
    images = workdir / "imagenet"
    if not images.is_dir():
        write_image_folder(images, sizes.train_images)
    # bfloat16 autocast is the accelerator path; on CPUs without bf16 instructions it is many times slower.
    amp = ["--amp"] if device.type == "cuda" else []
    # --deterministic: cuDNN's and cuBLAS's default kernels make two GPU runs differ in the last bits, and the
    # resume step compares two runs bit for bit.
    return ["--imagenet", str(images), "--config", str(workdir / "no_datasets.yaml"), "--logdir", str(logdir),
            "--random-init", "--gpu-corruptions", *amp, "--deterministic", "--device", str(device),
            "--val-iters", "1", "--val-workers", "0", "--print-every", "10", "--image-every", "0", "--seed", "1",
            *sizes.train]


def run_train(argv: list[str]) -> Path:
    """``train.py`` in this process; the random classifier weights are seeded, so every run gets the same ones."""
    from classification.training import train

    torch.manual_seed(0)
    return train.main(argv)


def step_train(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    from classification.checkpoint import read_checkpoint

    start = time.perf_counter()
    logdir = run_train(train_args(device, sizes, workdir, workdir / "whole"))
    seconds = time.perf_counter() - start
    for name in ("final.pth", "final_ema.pth"):
        state = read_checkpoint(logdir / name)
        if not all(bool(torch.isfinite(v.float()).all()) for v in state.values()):
            raise AssertionError(f"{name} holds non-finite weights")
    per_iteration = seconds / sizes.iterations
    return (f"{sizes.iterations} iterations in {seconds:.1f} s including validation and start-up "
            f"({per_iteration:.2f} s/iteration, {sizes.images_per_iteration / per_iteration:.1f} images/s)")


class Stop(Exception):
    pass


def step_resume(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    from classification.checkpoint import read_checkpoint
    from classification.training import train

    whole = workdir / "whole"
    if not (whole / "final.pth").is_file():
        raise AssertionError("needs the train step's run")
    real_step, calls = train.train_step, []
    stop_at = sizes.iterations // 2 + 1  # one step into the second epoch, after the first checkpoint

    def stopping_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            raise Stop
        return real_step(*args, **kwargs)

    args = train_args(device, sizes, workdir, workdir / "split")
    train.train_step = stopping_step
    try:
        run_train(args)
        raise AssertionError("the run was not interrupted")
    except Stop:
        pass
    finally:
        train.train_step = real_step
    start = time.perf_counter()
    run_train([*args, "--resume"])
    seconds = time.perf_counter() - start
    for name in ("final.pth", "final_ema.pth"):
        a = read_checkpoint(whole / name)
        b = read_checkpoint(workdir / "split" / name)
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            raise AssertionError(f"{name} of the resumed run differs from the uninterrupted run's")
    return f"stopped at iteration {stop_at}, resumed in {seconds:.1f} s: final.pth and final_ema.pth bit-exact"


def step_torchrun(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        return "SKIP: one GPU (NCCL checked by the process-group step)"
    args = train_args(device, sizes, workdir, workdir / "torchrun")
    args[args.index("--iters-per-epoch") + 1] = "1"
    args[args.index("--epochs") + 1] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(TRAIN), *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "Error" in line] or done.stderr.splitlines()[-1:]
        raise AssertionError(f"torchrun failed: {errors[-1] if errors else 'no output'}")
    backend = "nccl" if device.type == "cuda" else "gloo"
    return f"2 processes ({backend}), one iteration and validation in {time.perf_counter() - start:.1f} s"


def step_validate(device: torch.device, sizes: Sizes, workdir: Path, reduced: bool) -> str:
    from classification.eval import validate

    out = workdir / "grids"
    out.mkdir(exist_ok=True)
    argv = ["--demo", "--amp", "--channels-last", "--device", str(device), "--out", str(out), "--no-progress",
            "--workers", "2"] + (["--debug"] if reduced else [])
    grid = validate.main(argv)
    meta = json.loads(grid.with_suffix(".meta.json").read_text())
    accuracy = json.loads(grid.read_text())
    if not accuracy:
        raise AssertionError(f"{grid} is empty")
    speed = meta.get("images_per_second")
    return f"{grid.name}: {'' if speed is None else f'{speed:.1f} images/s, '}batch {meta['batch_size']}"


def step_segmentation(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    from classification.training.model import SyMPIE
    from segmentation.deeplab import DeeplabNW
    from segmentation.eval import evaluate_city
    from segmentation.synthetic import make_synthetic_cityscapes

    (width, height), long_side = sizes.segmentation
    root = make_synthetic_cityscapes(workdir / "cityscapes", sizes=((width, height),) * 2)
    torch.manual_seed(0)
    segmenter = DeeplabNW().to(device).eval()
    sympie = SyMPIE().to(device).eval()
    parts = []
    for label, pre in (("alone", None), ("with SyMPIE", sympie)):
        start = time.perf_counter()
        metrics = evaluate_city(segmenter, pre, root=root, batch_size=1, workers=0, device=device, long_side=long_side)
        seconds = time.perf_counter() - start
        if metrics["num_images"] != 2:
            raise AssertionError(f"evaluated {metrics['num_images']} images instead of 2")
        parts.append(f"{label} {2 / seconds:.2f} images/s")
    return f"{width}x{height} at long side {long_side}, flip TTA: " + ", ".join(parts)


def run_step(name: str, device: torch.device, reduced: bool, workdir: Path) -> dict:
    sizes = Sizes(full=device.type == "cuda" and not reduced)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        if name == "validate":
            figures = step_validate(device, sizes, workdir, reduced)
        else:
            figures = STEP_FUNCTIONS[name](device, sizes, workdir)
        status = "SKIP" if figures.startswith("SKIP") else "PASS"
    except (Exception, SystemExit) as error:  # a failed step is reported in the table, not raised
        status, figures = "FAIL", f"{type(error).__name__}: {error}"
    return {"step": name, "status": status, "figures": figures, "seconds": time.perf_counter() - start,
            "memory": peak_memory(device)}


STEP_FUNCTIONS = {
    "corruptions": step_corruptions, "warp": step_warp, "process group": step_process_group, "train": step_train,
    "resume": step_resume, "torchrun": step_torchrun, "segmentation": step_segmentation,
}


# ------------------------------------------------------------------------------------------ driver


def child(name: str, device: str, reduced: bool, workdir: Path) -> dict:
    """Run one step in its own process and read its result line."""
    command = [sys.executable, str(HERE), "--step", name, "--device", device, "--workdir", str(workdir)]
    done = subprocess.run(command + (["--reduced"] if reduced else []), capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"step": name, "status": "FAIL", "figures": f"the step's process died: {tail}", "seconds": 0.0, "memory": "-"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: cuda when available)")
    parser.add_argument("--reduced", action="store_true", help="small sizes and iteration counts (CI)")
    parser.add_argument("--only", nargs="+", choices=STEPS, help="run only these steps")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # internal: one step, in this process
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.step:
        if torch.device(device).type == "cuda":
            torch.cuda.set_device(torch.device(device))
        print(MARK + json.dumps(run_step(args.step, torch.device(device), args.reduced, args.workdir)), flush=True)
        return 0

    gpu = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "CPU"
    full = torch.device(device).type == "cuda" and not args.reduced
    print(f"gpu_check on {device} ({gpu}), {'full' if full else 'reduced'} sizes, torch {torch.__version__}")
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in args.only or STEPS:
            result = child(name, device, args.reduced, Path(tmp))
            results.append(result)
            print(f"  {result['status']:<4} {name} ({result['seconds']:.0f} s)", flush=True)
    width = max(len(name) for name in STEPS)
    print(f"\n{'step':<{width}}  status  seconds  peak memory          figures")
    for r in results:
        print(f"{r['step']:<{width}}  {r['status']:<6}  {r['seconds']:7.1f}  {r['memory']:<19}  {r['figures']}")
    failed = [r["step"] for r in results if r["status"] == "FAIL"]
    print(f"\n{len(results) - len(failed)} of {len(results)} steps passed or skipped in "
          f"{time.perf_counter() - start:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
