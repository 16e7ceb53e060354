"""Qualitative results: for each image, the (SyMPIE-corrected) input, ground truth and prediction as PNGs.

Label maps are drawn in the Cityscapes palette (ignored pixels black). Output layout::

    OUT/image/0000.png  OUT/gt/0000.png  OUT/pred/0000.png  ...

    python segmentation/qualitatives.py --dataset acdc --colm sympie --out qualitatives/acdc --num 20
"""
from __future__ import annotations

from classification.errors import stop_quietly_on_signals

stop_quietly_on_signals(__name__)  # before the imports below: Ctrl-C or SIGTERM meanwhile is one line

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from classification.atomic import atomic_path, check_output_dir
from classification.cli import parse_command_line
from classification.distributed import resolve_device
from classification.errors import UserInputError, report_user_errors
from classification.normalization import denormalize
from classification.paths import dataset_path
from classification.checkpoint import add_trust_argument
from segmentation.cityscapes import IGNORE_COLOR, NUM_CLASSES, PALETTE, Cityscapes
from segmentation.eval import BENCHMARKS, add_model_args, as_segmenter, load_sympie, predict
from segmentation.deeplab import load_deeplab

log = logging.getLogger(__name__)

_PALETTE_TABLE = np.array([*PALETTE, *[IGNORE_COLOR] * (256 - NUM_CLASSES)], dtype=np.uint8)


def colorize(label: torch.Tensor | np.ndarray) -> Image.Image:
    """Train-id map (H, W) -> RGB image in the Cityscapes palette; ids outside 0..18 are black."""
    label = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    index = np.where((label >= 0) & (label < NUM_CLASSES), label, NUM_CLASSES).astype(np.uint8)
    return Image.fromarray(_PALETTE_TABLE[index])


def to_image(x: torch.Tensor) -> Image.Image:
    """ImageNet-normalised (3, H, W) -> RGB image (clipped to [0, 1], rounded)."""
    rgb = denormalize(x.detach().float().cpu()[None])[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(rgb.permute(1, 2, 0).numpy())


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_qualitative(out_dir: str | os.PathLike, index: int, image: torch.Tensor, label: torch.Tensor,
                     pred: torch.Tensor) -> None:
    """Write ``image/NNNN.png``, ``gt/NNNN.png`` and ``pred/NNNN.png`` under ``out_dir``."""
    out_dir = Path(out_dir)
    name = f"{index:04d}.png"
    save_png(to_image(image), out_dir / "image" / name)
    save_png(colorize(label), out_dir / "gt" / name)
    save_png(colorize(pred), out_dir / "pred" / name)


@torch.inference_mode()
def write_qualitatives(segmenter: torch.nn.Module, dataset: Dataset, out_dir: str | os.PathLike,
                       sympie: torch.nn.Module | None = None, device: str | torch.device = "cpu",
                       flip: bool = True) -> None:
    """Segment each sample of ``dataset`` and save the triplet (the image shown is what the segmenter saw)."""
    segmenter = as_segmenter(segmenter).to(device).eval()
    for index in tqdm(range(len(dataset)), desc="qualitatives"):
        image, label = dataset[index]
        x = image[None].to(device)
        if sympie is not None:
            x = sympie(x)
        pred = predict(segmenter, x, None, flip).argmax(dim=1)[0]
        save_qualitative(out_dir, index, x[0], label, pred)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", choices=tuple(BENCHMARKS), default="acdc")
    add_trust_argument(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num", type=int, default=10, help="number of images (from the start of val.txt)")
    add_model_args(parser)
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    args = parse_command_line(build_parser(), argv)
    if args.num < 1 or args.long_side < 1:
        raise UserInputError(f"--num and --long-side must be positive, got {args.num} and {args.long_side}.")
    check_output_dir(args.out, "--out")
    device = resolve_device(args.device)
    dataset = Cityscapes(dataset_path(BENCHMARKS[args.dataset][0], args.config), long_side=args.long_side)
    segmenter = load_deeplab(args.seg_checkpoint, trusted=args.trust_checkpoint)
    sympie = load_sympie(args.colm, device, args.trust_checkpoint)
    subset = Subset(dataset, range(min(args.num, len(dataset))))
    write_qualitatives(segmenter, subset, args.out, sympie, device, not args.no_flip)
    log.info("wrote %d image/gt/pred triplets to %s", len(subset), args.out)


if __name__ == "__main__":
    main()
