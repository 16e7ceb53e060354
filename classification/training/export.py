"""Export SyMPIE (optionally with a classifier behind it) for deployment: ``torch.export`` and ONNX.

    python classification/training/export.py --colm sympie --out sympie.onnx                 # SyMPIE alone
    python classification/training/export.py --colm sympie --clas rn50_2 --out rn50_2.onnx   # SyMPIE + classifier
    python classification/training/export.py --colm sympie --out sympie.pt2                  # torch.export program

The exported graph takes ImageNet-normalised float32 images (B,3,H,W) of any batch size and image size
and returns the corrected images (or the classifier's logits). Its arithmetic is the eager module's with
three rewrites that a graph of fixed shapes can hold, each giving the same numbers up to float rounding:
the 224x224 estimation view is computed with integer size arithmetic and chosen with ``torch.where``
(a 224x224 image is its own view), the per-image 5x5 kernel is 25 shifted multiply-adds instead of a
grouped convolution (whose group count would be the batch size), and the NEM is the fused one with the
stem as one convolution. ONNX export needs the ``export`` extra (``pip install -e .[export]``).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from classification.atomic import atomic_path, check_output_file
from classification.checkpoint import resolve_colm
from classification.classifiers import build_classifier, check_classifier_name
from classification.cli import add_classifier_args, add_colm_argument, parse_command_line
from classification.errors import UserInputError, report_user_errors
from classification.training.inference import FusedNEM
from classification.training.model import (ESTIMATION_RESIZE, ESTIMATION_SIZE, ColModule, SyMPIE, check_images,
                                           split_params)

log = logging.getLogger(__name__)

ONNX_OPSET = 18  # antialiased Resize (the estimation view) needs opset 18
EXAMPLE_SHAPE = (2, 3, 240, 320)  # the traced example: not 224x224, so that both views are traced


class ExportableSyMPIE(nn.Module):
    """SyMPIE in a form ``torch.export`` and ONNX hold for every batch and image size (module docstring)."""

    def __init__(self, sympie: SyMPIE):
        super().__init__()
        nem = sympie.nem
        self.nem = nem if isinstance(nem, FusedNEM) else FusedNEM(nem)
        self.clamp = sympie.clamp

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        params = self.nem(traceable_estimation_view(images))
        return self.clamp(traceable_warp(images, params))


def traceable_estimation_view(images: torch.Tensor) -> torch.Tensor:
    """:func:`~classification.training.model.estimation_view` without Python branches on the image size."""
    h, w = images.shape[-2:]
    short = torch.sym_min(h, w)
    new_h, new_w = ESTIMATION_RESIZE * h // short, ESTIMATION_RESIZE * w // short  # torchvision's int(232*long/short)
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = round_half_even_half(new_h - ESTIMATION_SIZE), round_half_even_half(new_w - ESTIMATION_SIZE)
    cropped = resized[:, :, top:top + ESTIMATION_SIZE, left:left + ESTIMATION_SIZE]
    own = F.interpolate(images, size=(ESTIMATION_SIZE, ESTIMATION_SIZE), mode="nearest")  # == images at 224x224
    is_view = (torch.tensor(h) == ESTIMATION_SIZE) & (torch.tensor(w) == ESTIMATION_SIZE)
    return torch.where(is_view.to(images.device), own, cropped)


def round_half_even_half(d):
    """``round(d / 2)`` (Python's, ties to even, as torchvision's centre crop) in integer arithmetic."""
    return d // 2 + (d % 2) * ((d // 2) % 2)


def traceable_warp(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """:func:`~classification.training.model.col_warp` as 25 shifted multiply-adds (no grouped convolution)."""
    check_images(images)
    h, w = images.shape[-2:]
    matrix, shift, kernel = split_params(params.to(images.dtype))
    coloured = torch.einsum("bdhw,bdc->bchw", images + shift[:, :, None, None], matrix)
    padded = F.pad(coloured, (2, 2, 2, 2))
    out = torch.zeros_like(coloured)
    for dy in range(5):
        for dx in range(5):
            out = out + kernel[:, dy, dx, None, None, None] * padded[:, :, dy:dy + h, dx:dx + w]
    return out


def dynamic_shapes(model_inputs: int = 1) -> tuple:
    """Batch, height and width of the image input are free."""
    dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    return (dims,) * model_inputs


def deployable(sympie: SyMPIE, classifier: nn.Module | None = None) -> nn.Module:
    """The eval-mode module to export: SyMPIE, or SyMPIE followed by ``classifier``."""
    model = ExportableSyMPIE(sympie)
    return (model if classifier is None else nn.Sequential(model, classifier)).eval()


def export_program(model: nn.Module, example: torch.Tensor | None = None) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (see :func:`deployable`) with dynamic batch and image size."""
    example = torch.randn(EXAMPLE_SHAPE) if example is None else example
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes())


def export_onnx(model: nn.Module, path: str | os.PathLike, example: torch.Tensor | None = None,
                opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` as ONNX (input ``images``, output ``output``; dynamic batch and image size) to
    ``path`` atomically; UserInputError when the ``export`` extra is missing."""
    missing = [name for name in ("onnx", "onnxscript") if not module_available(name)]
    if missing:
        raise UserInputError(f"ONNX export needs {' and '.join(missing)}; install them with pip install -e .[export].")
    example = torch.randn(EXAMPLE_SHAPE) if example is None else example
    with atomic_path(path) as tmp, torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                    input_names=["images"], output_names=["output"],
                                    dynamic_shapes=dynamic_shapes(), external_data=False)
        program.save(str(tmp))
    return Path(path)


def module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export SyMPIE (and a classifier) as ONNX or a torch.export program.")
    add_colm_argument(parser, default="sympie")
    add_classifier_args(parser, default=None, default_text="none: SyMPIE alone")
    parser.add_argument("--out", required=True, help="output file: .onnx (ONNX) or .pt2 (torch.export program)")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset (at least %(default)s)")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow checkpoints that pickle Python objects")
    return parse_command_line(parser, argv)


@report_user_errors
def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    out = Path(args.out)
    if out.suffix not in (".onnx", ".pt2"):
        raise UserInputError(f"--out {out} must end in .onnx (ONNX) or .pt2 (torch.export program).")
    if out.suffix == ".onnx" and args.opset < ONNX_OPSET:
        raise UserInputError(f"--opset {args.opset} is too old: the antialiased resize needs opset {ONNX_OPSET} or later.")
    if args.clas is not None:
        check_classifier_name(args.clas)
    colm = resolve_colm(args.colm)
    if colm is None:
        raise UserInputError("--colm none exports nothing; pass a SyMPIE checkpoint name or path.")
    check_output_file(out, "--out")
    sympie = SyMPIE.from_checkpoint(colm, trusted=args.trust_checkpoint)
    classifier = None if args.clas is None else build_classifier(args.clas, pretrained=not args.random_init)
    model = deployable(sympie, classifier)
    if out.suffix == ".onnx":
        export_onnx(model, out, opset=args.opset)
    else:
        with atomic_path(out) as tmp:
            torch.export.save(export_program(model), str(tmp))
    log.info("wrote %s (SyMPIE %s%s)", out, colm, "" if args.clas is None else f" + {args.clas}")
    return out


if __name__ == "__main__":
    main()
