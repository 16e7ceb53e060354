"""One command that runs every accelerator path, measures what a user plans with, and prints a table.

    python benchmarks/gpu_check.py                 # on a CUDA machine: full sizes, about 8 minutes on one GPU
    python benchmarks/gpu_check.py --reduced       # small sizes (what CI runs on the CPU)
    python benchmarks/gpu_check.py --device cpu    # the same steps on the CPU (gloo), smaller sizes

``--device`` means what it means for ``train.py`` (``classification.distributed.resolve_device``): the
default is this machine's GPU when torch sees one. Steps (each in its own process, so that peak memory is
per step):

- ``corruptions``: ``corrupt_batch`` on the device, every corruption at severity 3, batch 256 of 224x224
  images (CPU: 8): images/s per corruption; outputs finite, on the uint8 grid, same shape.
- ``warp``: SyMPIE (NEM on the 224 view + ColWarp + Clamp) at 224x224 (batch 64; CPU 4) and 1920x1080
  (batch 8; CPU 1): images/s.
- ``inference``: ResNet-50 (random weights; CPU reduced: ResNet-18) alone and behind SyMPIE, batch 64 at
  224x224 (CPU 2), bfloat16 autocast on CUDA: images/s of each and the time SyMPIE adds.
- ``inference cost``: ``bench_inference.py``'s CUDA part: SyMPIE's plain, fused and compiled paths alone
  and in front of ResNet-50 and EfficientNet-Lite0 (batch 256 at 224x224, batch 16 at 1920x1080, bf16),
  its verdicts against the targets in the table and its whole table after it (CPU: plain and fused in front
  of ResNet-50 at batch 2, once).
- ``process group``: NCCL on CUDA (gloo on the CPU) with one rank: all_reduce and broadcast.
- ``train step``: ``train_step`` (teacher pass, two student rounds, Adam, EMA) against one plain step
  (the student's forward and backward, cross-entropy, Adam) at the paper's batch 48 and 224x224 with
  ResNet-50, without and with ``--amp`` (CPU: ResNet-18, batch 2, 64x64): ms per step and the ratio.
- ``train``: ``train.py`` in one process at the paper's batch 48 (CPU: 2) with ``--gpu-corruptions --amp``
  (on the CPU without ``--amp``: bfloat16 is many times slower on CPUs without bf16 instructions), loader
  workers, random-weight classifiers and a synthetic ImageFolder of 500x375 JPEGs (CPU: 64x48 PNGs); a
  short and a long run with the same validations and checkpoints, so that their difference is the
  steady-state rate: s/iteration and images/s per GPU. After the table, the paper's schedule (50,000
  iterations x 48 images x 8 processes) at that rate.
- ``resume``: a short run with ``--deterministic`` (without it cuDNN and cuBLAS kernels differ from run
  to run in the last bits), the same run stopped after the first epoch's checkpoint plus one step, then
  ``--resume``: final.pth and final_ema.pth must equal the uninterrupted run's bit for bit.
- ``torchrun``: ``torchrun --nproc-per-node=2 train.py --device cuda`` (NCCL when 2 GPUs are there, each
  process on its own; gloo on the CPU; skipped with one GPU, where the process-group step covers NCCL).
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
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classification.distributed import resolve_device
from classification.errors import report_user_errors

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
TRAIN = REPO / "classification" / "training" / "train.py"
VALIDATE = REPO / "classification" / "eval" / "validate.py"
STEPS = ("corruptions", "warp", "inference", "inference cost", "process group", "train step", "train", "resume",
         "torchrun", "validate", "segmentation")
MARK = "GPU_CHECK_RESULT "
PAPER_ITERATIONS, PAPER_BATCH, PAPER_PROCESSES = 50_000, 48, 8  # the paper's schedule


class Sizes:
    """Batch sizes, image sizes and run lengths of a full (accelerator) or small (CPU, --reduced) run."""

    def __init__(self, full: bool, reduced: bool):
        self.full, self.reduced = full, reduced
        self.corrupt_batch = 256 if full else 8
        self.warp_batches = ((64, 224, 224), (8, 1080, 1920)) if full else ((4, 224, 224), (1, 1080, 1920))
        self.classifier = "rn50_2" if full else "rn18"
        self.inference_batch = 64 if full else 2
        self.batch = PAPER_BATCH if full else 2
        self.crop = 224 if full else 64
        self.steps, self.warm_up = (10, 3) if full else (2, 1)  # timed train_step and plain steps, warm-up steps
        workers = min(14, (os.cpu_count() or 2) - 2) if full else 0
        self.train = ["--clas", self.classifier, "--batch-size", str(self.batch), "--crop-size", str(self.crop),
                      "--resize-size", str(self.crop * 8 // 7), "--workers", str(workers), "--epochs", "2"]
        # Iterations per epoch of the short and the long train run (two epochs each: the same validations and
        # checkpoints, so the difference of their times is the steady state), and of the resume step's runs.
        self.short, self.long, self.resume = (5, 35, 3) if full else (1, 3, 2)
        # One in 50 images validates: at least a batch, and the torchrun step's 2 processes x batch 2; the long
        # run's epoch takes one pass of the train split.
        self.train_images = max(50 * self.batch, 50 * 2 * 2, self.long * self.batch * 50 // 49 + 1)
        self.image_size = (375, 500) if full else (48, 64)
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


def per_second(value: float) -> str:
    """A rate with the digits that matter: 2132, 38.4, 0.52."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


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


def step_inference(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    from classification.classifiers import build_classifier
    from classification.distributed import autocast
    from classification.training.model import CorrectColMulti

    torch.manual_seed(0)
    classifier = build_classifier(sizes.classifier, pretrained=False).to(device).eval()
    sympie = CorrectColMulti([classifier]).to(device).eval()
    x = torch.rand(sizes.inference_batch, 3, 224, 224, device=device)
    amp = device.type == "cuda"
    rates = {}
    with torch.inference_mode(), autocast(device, amp):
        for label, model in (("alone", classifier), ("behind SyMPIE", lambda batch: sympie(batch)[0])):
            if not bool(torch.isfinite(model(x).float()).all()):
                raise AssertionError(f"{sizes.classifier} {label}: non-finite logits")
            rates[label] = rate(lambda: model(x), len(x), device)
    added = rates["alone"] / rates["behind SyMPIE"] - 1
    return (f"{sizes.classifier} batch {len(x)} 224x224{', bf16' if amp else ''}: "
            f"alone {per_second(rates['alone'])} images/s, behind SyMPIE {per_second(rates['behind SyMPIE'])} "
            f"images/s ({100 * added:+.0f} % time)")


def step_inference_cost(device: torch.device, sizes: Sizes, workdir: Path) -> tuple[str, dict]:
    import bench_inference  # beside this script

    lines = bench_inference.gpu_check_lines(device, reduced=not sizes.full)
    verdicts = [line for line in lines if line.split(":")[0] in bench_inference.PATHS]
    return "; ".join(verdicts) or lines[0], {"table": lines}


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


def median_seconds(fn, device: torch.device, steps: int, warm_up: int) -> float:
    """Median seconds of ``fn()`` over ``steps`` calls, each timed to the device's end, after ``warm_up`` calls."""
    seconds = []
    for i in range(warm_up + steps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warm_up:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def step_train_step(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    import torch.nn.functional as F

    from classification.classifiers import build_classifier
    from classification.distributed import autocast
    from classification.training.ema import add_gradient_clamp_hooks
    from classification.training.engine import train_step
    from classification.training.model import CorrectColMulti

    torch.manual_seed(0)
    student = CorrectColMulti([build_classifier(sizes.classifier, pretrained=False)]).to(device)
    teacher = CorrectColMulti(student.classifiers).to(device).eval().requires_grad_(False)
    add_gradient_clamp_hooks(student.nem.parameters())
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10**6)
    x, z = torch.rand(2, sizes.batch, 3, sizes.crop, sizes.crop, device=device)
    y = torch.randint(0, 1000, (sizes.batch,), device=device)

    def plain_step(amp: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits, _, _ = student(x, 0)
        F.cross_entropy(logits.float(), y).backward()
        optimizer.step()

    parts = []
    for amp in (False, True) if device.type == "cuda" else (False,):
        full = median_seconds(lambda: train_step(student, teacher, x, y, z, clasid=0, optimizer=optimizer,
                                                 scheduler=scheduler, amp=amp), device, sizes.steps, sizes.warm_up)
        plain = median_seconds(lambda: plain_step(amp), device, sizes.steps, sizes.warm_up)
        parts.append(f"{'--amp (bf16)' if amp else 'float32'}: train_step {1e3 * full:.0f} ms "
                     f"({per_second(sizes.batch / full)} images/s), plain step {1e3 * plain:.0f} ms, "
                     f"x{full / plain:.2f}")
    if not all(bool(torch.isfinite(p).all()) for p in student.nem.parameters()):
        raise AssertionError("the NEM's weights became non-finite")
    return f"{sizes.classifier}, batch {sizes.batch} at {sizes.crop}x{sizes.crop}: " + "; ".join(parts)


def write_image(path: Path, seed: int, size: tuple[int, int]) -> None:
    """A smooth random picture (a coarse random field, upscaled, plus grain): decodes like a photo, not noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    coarse = coarse.resize(size[::-1], Image.Resampling.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (*size, 3), dtype=np.int16)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def write_image_folder(root: Path, count: int, size: tuple[int, int], suffix: str) -> Path:
    """``count`` images of ``size`` (H, W) in two class folders (a synthetic ImageNet train folder)."""
    for i in range(2):
        (root / f"n{i:08d}").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # PIL encodes without the GIL
        list(pool.map(lambda i: write_image(root / f"n{i % 2:08d}" / f"{i:05d}{suffix}", i, size), range(count)))
    (root.parent / "no_datasets.yaml").write_text("{}\n")
    return root


def train_args(device: torch.device, sizes: Sizes, workdir: Path, logdir: Path, iterations_per_epoch: int,
               deterministic: bool = False) -> list[str]:
    images = workdir / "imagenet"
    if not images.is_dir():
        write_image_folder(images, sizes.train_images, sizes.image_size, ".jpg" if sizes.full else ".png")
    # bfloat16 autocast is the accelerator path; on CPUs without bf16 instructions it is many times slower.
    amp = ["--amp"] if device.type == "cuda" else []
    # --deterministic: cuDNN's and cuBLAS's default kernels make two GPU runs differ in the last bits (the
    # resume step compares two runs bit for bit); the speed runs go without, as users train.
    return ["--imagenet", str(images), "--config", str(workdir / "no_datasets.yaml"), "--logdir", str(logdir),
            "--random-init", "--gpu-corruptions", *amp, *(["--deterministic"] if deterministic else []),
            "--device", str(device), "--val-iters", "1", "--val-workers", "0", "--print-every", "10",
            "--image-every", "0", "--seed", "1", *sizes.train, "--iters-per-epoch", str(iterations_per_epoch)]


def run_train(argv: list[str]) -> Path:
    """``train.py`` in this process; the random classifier weights are seeded, so every run gets the same ones."""
    from classification.training import train

    torch.manual_seed(0)
    return train.main(argv)


def check_finite(logdir: Path) -> None:
    from classification.checkpoint import read_checkpoint

    for name in ("final.pth", "final_ema.pth"):
        state = read_checkpoint(logdir / name)
        if not all(bool(torch.isfinite(v.float()).all()) for v in state.values()):
            raise AssertionError(f"{name} holds non-finite weights")


def step_train(device: torch.device, sizes: Sizes, workdir: Path) -> tuple[str, dict]:
    seconds = {}
    # At full sizes a first short run, untimed, takes the one-time costs (cuDNN's autotuning, first allocations).
    runs = (("warm-up", sizes.short), ("short", sizes.short), ("long", sizes.long))
    for label, per_epoch in runs if sizes.full else runs[1:]:
        args = train_args(device, sizes, workdir, workdir / label, per_epoch)  # the images are written untimed
        start = time.perf_counter()
        check_finite(run_train(args))
        seconds[label] = time.perf_counter() - start
    per_iteration = (seconds["long"] - seconds["short"]) / (2 * (sizes.long - sizes.short))
    runs = (f"batch {sizes.batch}: {2 * sizes.short} and {2 * sizes.long} iterations in {seconds['short']:.1f} and "
            f"{seconds['long']:.1f} s (start-up and validation included)")
    if per_iteration <= 0:
        return f"{runs}; too short to tell the steady state apart", {}
    images_per_second = sizes.batch / per_iteration
    return (f"{runs}; steady state {per_iteration:.3f} s/iteration = {per_second(images_per_second)} images/s "
            "per process", {"images_per_second": images_per_second})


class Stop(Exception):
    pass


def step_resume(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    from classification.checkpoint import read_checkpoint
    from classification.training import trainer

    if not (workdir / "imagenet").is_dir():
        raise AssertionError("needs the train step's run (its image folder)")
    whole = run_train(train_args(device, sizes, workdir, workdir / "whole", sizes.resume, deterministic=True))
    real_step, calls = trainer.train_step, []
    stop_at = sizes.resume + 1  # one step into the second epoch, after the first checkpoint

    def stopping_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            raise Stop
        return real_step(*args, **kwargs)

    args = train_args(device, sizes, workdir, workdir / "split", sizes.resume, deterministic=True)
    trainer.train_step = stopping_step
    try:
        run_train(args)
        raise AssertionError("the run was not interrupted")
    except Stop:
        pass
    finally:
        trainer.train_step = real_step
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
    args = train_args(device, sizes, workdir, workdir / "torchrun", 1)
    args[args.index("--epochs") + 1] = "1"
    args[args.index("--batch-size") + 1] = "2"  # the validation split holds a batch per process
    args[args.index("--device") + 1] = device.type  # each process its own GPU (cuda:LOCAL_RANK)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(TRAIN), *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "Error" in line] or done.stderr.splitlines()[-1:]
        raise AssertionError(f"torchrun failed: {errors[-1] if errors else 'no output'}")
    backend = "nccl" if device.type == "cuda" else "gloo"
    return f"2 processes ({backend}), one iteration and validation in {time.perf_counter() - start:.1f} s"


def step_validate(device: torch.device, sizes: Sizes, workdir: Path) -> str:
    from classification.eval import validate

    out = workdir / "grids"
    out.mkdir(exist_ok=True)
    argv = ["--demo", "--amp", "--channels-last", "--device", str(device), "--out", str(out), "--no-progress",
            "--workers", "2"] + (["--debug"] if sizes.reduced else [])
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
    sizes = Sizes(full=device.type == "cuda" and not reduced, reduced=reduced)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    numbers = {}
    try:
        figures = STEP_FUNCTIONS[name](device, sizes, workdir)
        if isinstance(figures, tuple):  # figures, and numbers for the summary
            figures, numbers = figures
        status = "SKIP" if figures.startswith("SKIP") else "PASS"
    except (Exception, SystemExit) as error:  # a failed step is reported in the table, not raised
        status, figures = "FAIL", f"{type(error).__name__}: {error}"
    return {"step": name, "status": status, "figures": figures, "seconds": time.perf_counter() - start,
            "memory": peak_memory(device), "numbers": numbers}


STEP_FUNCTIONS = {
    "corruptions": step_corruptions, "warp": step_warp, "inference": step_inference,
    "inference cost": step_inference_cost, "process group": step_process_group, "train step": step_train_step,
    "train": step_train, "resume": step_resume, "torchrun": step_torchrun, "validate": step_validate, "segmentation": step_segmentation,
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


def schedule_line(results: list[dict], device: torch.device, full: bool) -> str:
    """What the paper's schedule takes at the train step's steady-state rate, per GPU like this one."""
    images = PAPER_ITERATIONS * PAPER_BATCH * PAPER_PROCESSES
    what = f"the paper's schedule ({PAPER_ITERATIONS:,} iterations x {PAPER_BATCH} x {PAPER_PROCESSES} processes)"
    rates = [r["numbers"]["images_per_second"] for r in results if r.get("numbers", {}).get("images_per_second")]
    if not full or not rates:
        return f"{what}: no estimate (it needs the train step at full sizes on a GPU)"
    hours = images / rates[0] / 3600
    name = torch.cuda.get_device_name(device)
    return (f"{what} on {PAPER_PROCESSES} GPUs like this one ({name}): {hours / PAPER_PROCESSES:.1f} hours "
            f"(on one: {hours:.1f} hours), at the train step's {rates[0]:.0f} images/s per GPU")


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: this machine's GPU if any)")
    parser.add_argument("--reduced", action="store_true", help="small sizes and iteration counts (CI)")
    parser.add_argument("--only", nargs="+", choices=STEPS, help="run only these steps")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # internal: one step, in this process
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.step:
        print(MARK + json.dumps(run_step(args.step, device, args.reduced, args.workdir)), flush=True)
        return 0

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    full = device.type == "cuda" and not args.reduced
    print(f"gpu_check on {device} ({gpu}), {'full' if full else 'reduced'} sizes, torch {torch.__version__}")
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in args.only or STEPS:
            result = child(name, str(device), args.reduced, Path(tmp))
            results.append(result)
            print(f"  {result['status']:<4} {name} ({result['seconds']:.0f} s)", flush=True)
    width = max(len(name) for name in STEPS)
    print(f"\n{'step':<{width}}  status  seconds  peak memory          figures")
    for r in results:
        print(f"{r['step']:<{width}}  {r['status']:<6}  {r['seconds']:7.1f}  {r['memory']:<19}  {r['figures']}")
    failed = [r["step"] for r in results if r["status"] == "FAIL"]
    print(f"\n{len(results) - len(failed)} of {len(results)} steps passed or skipped in "
          f"{time.perf_counter() - start:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    print(schedule_line(results, device, full))
    for r in results:
        if r.get("numbers", {}).get("table"):
            print(f"\n{r['step']}:\n" + "\n".join(r["numbers"]["table"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
