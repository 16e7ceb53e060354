"""SyMPIE's inference cost: images/s of the plain, fused, compiled and ONNX paths, alone and in front of
ResNet-50 and EfficientNet-Lite0, beside the classifiers alone.

    python benchmarks/bench_inference.py                      # CPU (and CUDA when present), default sizes
    python benchmarks/bench_inference.py --paths plain fused --repeats 3
    python benchmarks/bench_inference.py --device cuda        # CUDA only (bf16 autocast, as gpu_check.py)

Paths: ``plain`` is SyMPIE with the training module (``fused=False``), ``fused`` what
``SyMPIE.from_checkpoint`` gives (folded BatchNorm, fused stem + pool), ``compiled`` the fused NEM through
``torch.compile``, ``onnx`` the exported graph (``classification/training/export.py``) in onnxruntime (CPU only).
All timed configurations run in turns, once per repeat, so that a shared machine's load falls on all of
them alike; the table gives medians. At 224x224 every model is timed; at 1920x1080 SyMPIE alone (the
estimate is on a 224x224 view, the warp at full resolution; classifiers take resized images).
Weights are random (speed does not depend on them). ``gpu_check.py`` runs the CUDA part
(:func:`gpu_check_lines`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from classification.classifiers import build_classifier
from classification.distributed import autocast
from classification.training.model import SyMPIE

PATHS = ("plain", "fused", "compiled", "onnx")
CLASSIFIERS = {"ResNet-50": lambda: torchvision.models.resnet50(),
               "EfficientNet-Lite0": lambda: build_classifier("effnet_lite0", pretrained=False)}
CPU_SIZES = ((32, 224, 224), (2, 1080, 1920))      # (batch, height, width)
CUDA_SIZES = ((256, 224, 224), (16, 1080, 1920))
TARGETS = {"cpu": (1.30, 3.5, None), "cuda": (1.35, None, 50_000)}  # (+RN50 time ratio, RN50 speed multiple, images/s)


@dataclass
class Config:
    """One timed configuration: ``run()`` handles ``batch`` images."""

    path: str
    model: str
    batch: int
    size: tuple[int, int]
    run: object
    seconds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.batch / statistics.median(self.seconds)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sympie_for(path: str, device: torch.device) -> nn.Module:
    """SyMPIE (random NEM, seed 0) the way ``path`` runs it; ``onnx`` is handled by :func:`onnx_runner`."""
    torch.manual_seed(0)
    plain = SyMPIE().eval()
    if path == "plain":
        return plain.to(device)
    fused = plain.fused().to(device)
    if path == "compiled":
        fused.nem = torch.compile(fused.nem)
    return fused


def onnx_runner(model: nn.Module, workdir: Path, name: str):
    """Export ``model`` (classification/training/export.py) and return ``numpy images -> output`` in onnxruntime."""
    import onnxruntime as ort

    from classification.training.export import export_onnx

    path = export_onnx(model, workdir / f"{name}.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda array: session.run(None, {"images": array})[0]


def build_configs(device: torch.device, sizes, paths, classifiers, workdir: Path) -> list[Config]:
    """Every (path, model, size) to time, with its input."""
    from classification.training.export import deployable

    cl = torch.channels_last
    nets = {name: make().eval().to(device, memory_format=cl) for name, make in CLASSIFIERS.items() if name in classifiers}
    configs = []
    for batch, h, w in sizes:
        x = torch.randn(batch, 3, h, w, device=device).contiguous(memory_format=cl)
        full_size = (h, w) == (224, 224)
        if full_size:
            configs += [Config("-", name, batch, (h, w), (lambda x=x, n=net: n(x))) for name, net in nets.items()]
        for path in paths:
            if path == "onnx":
                sympie = SyMPIE().eval()
                models = {"SyMPIE": deployable(sympie)}
                if full_size:
                    models.update({f"SyMPIE + {n}": deployable(sympie, net) for n, net in nets.items()})
                array = x.contiguous().numpy()
                for label, model in models.items():
                    run = onnx_runner(model, workdir, label.replace(" + ", "_"))
                    configs.append(Config(path, label, batch, (h, w), (lambda a=array, r=run: r(a))))
                continue
            sympie = sympie_for(path, device).to(memory_format=cl)
            configs.append(Config(path, "SyMPIE", batch, (h, w), (lambda x=x, s=sympie: s(x))))
            if full_size:
                configs += [Config(path, f"SyMPIE + {name}", batch, (h, w), (lambda x=x, s=sympie, n=net: n(s(x))))
                            for name, net in nets.items()]
    return configs


def measure(configs: list[Config], device: torch.device, repeats: int, amp: bool) -> None:
    """A warm-up call of each, then ``repeats`` rounds timing each configuration once, in turns."""
    with torch.inference_mode(), autocast(device, amp):
        for config in configs:
            config.run()
            config.run()  # compiled paths: compiled at the first call; onnxruntime: first-call allocation
        for _ in range(repeats):
            for config in configs:
                synchronize(device)
                start = time.perf_counter()
                config.run()
                synchronize(device)
                config.seconds.append(time.perf_counter() - start)


def table(configs: list[Config]) -> list[str]:
    lines = ["| path | model | batch | size | images/s | ms/batch (median) |", "|---|---|---|---|---|---|"]
    for c in configs:
        lines.append(f"| {c.path} | {c.model} | {c.batch} | {c.size[1]}x{c.size[0]} | {c.rate:.1f} | "
                     f"{1000 * statistics.median(c.seconds):.0f} |")
    return lines


def verdicts(configs: list[Config], device: torch.device) -> list[str]:
    """The targets at 224x224 for each SyMPIE path against ResNet-50 alone."""
    at224 = {(c.path, c.model): c.rate for c in configs if c.size == (224, 224)}
    if ("-", "ResNet-50") not in at224:
        return []
    resnet = at224[("-", "ResNet-50")]
    max_ratio, min_multiple, min_rate = TARGETS[device.type]
    lines = []
    for path in PATHS:
        if (path, "SyMPIE") not in at224:
            continue
        alone, behind = at224[(path, "SyMPIE")], at224.get((path, "SyMPIE + ResNet-50"))
        parts = [f"{path}: SyMPIE alone {alone / resnet:.2f}x ResNet-50's images/s"]
        if min_multiple is not None:
            parts[-1] += f" (target >= {min_multiple})"
        if min_rate is not None:
            parts.append(f"{alone:.0f} images/s (target >= {min_rate})")
        if behind is not None:
            parts.append(f"SyMPIE + ResNet-50 {resnet / behind:.2f}x ResNet-50's time (target <= {max_ratio})")
        lines.append("; ".join(parts))
    return lines


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_device(device: torch.device, sizes, paths, classifiers, repeats: int) -> list[str]:
    """The table and verdicts for one device (bf16 autocast on CUDA, float32 on the CPU)."""
    amp = device.type == "cuda"
    paths = [p for p in paths if not (p == "onnx" and device.type != "cpu")]
    before = load()
    with tempfile.TemporaryDirectory() as workdir:
        configs = build_configs(device, sizes, paths, classifiers, Path(workdir))
        measure(configs, device, repeats, amp)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    head = [f"{name}, {'bf16 autocast' if amp else 'float32'}, channels-last, median of {repeats}; "
            f"before: {before}; after: {load()}"]
    return head + table(configs) + verdicts(configs, device)


def gpu_check_lines(device: torch.device, reduced: bool) -> list[str]:
    """The part ``gpu_check.py`` runs: on CUDA plain, fused and compiled at :data:`CUDA_SIZES`, alone and in
    front of both classifiers; ``reduced`` (its CPU run) plain and fused in front of ResNet-50 at small sizes."""
    if reduced:
        return run_device(device, ((2, 224, 224), (1, 270, 480)), ("plain", "fused"), ("ResNet-50",), repeats=1)
    return run_device(device, CUDA_SIZES, ("plain", "fused", "compiled"), tuple(CLASSIFIERS), repeats=3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="all: the CPU, and CUDA when present (default)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--classifiers", nargs="*", choices=tuple(CLASSIFIERS), default=list(CLASSIFIERS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if "onnx" in args.paths and not all(_available(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        print("onnx path left out: install the export extra (pip install -e .[export])")
        args.paths.remove("onnx")
    if args.device in ("all", "cpu"):
        print("\n".join(run_device(torch.device("cpu"), CPU_SIZES, args.paths, args.classifiers, args.repeats)))
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            print("\n".join(run_device(torch.device("cuda"), CUDA_SIZES, args.paths, args.classifiers, args.repeats)))
        else:
            print("CUDA: no GPU on this machine, not measured")


def _available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
