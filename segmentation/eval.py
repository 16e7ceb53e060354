"""Semantic segmentation on Cityscapes, ACDC and Dark Zurich, with and without SyMPIE (README.md in this folder).

Library use (e.g. training's per-epoch validation)::

    metrics = evaluate_acdc(deeplab, sympie)        # {'miou': ..., 'iou': array(19), ...}

Command line (add ``torchrun --nproc_per_node N`` in front for distributed evaluation)::

    python segmentation/eval.py --colm sympie --dataset all
"""
from __future__ import annotations

from classification.errors import stop_quietly_on_signals

stop_quietly_on_signals(__name__)  # before the imports below: Ctrl-C or SIGTERM meanwhile is one line

import argparse
import logging

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from classification.atomic import check_output_file, write_json
from classification.checkpoint import add_trust_argument, resolve_colm
from classification.cli import add_colm_argument, add_segmenter_args, parse_command_line
from classification.distributed import ShardSampler, distributed, rank_world, unwrap
from classification.errors import UserInputError, report_user_errors
from classification.frozen import eval_mode
from classification.paths import add_config_argument, dataset_path
from classification.training.model import SyMPIE
from segmentation.cityscapes import CLASS_NAMES, LONG_SIDE, NUM_CLASSES, Cityscapes, collate_by_size
from segmentation.deeplab import DeeplabNW, load_deeplab
from segmentation.metrics import ConfusionMatrix, format_table
from segmentation.renorm import ImagenetInput

log = logging.getLogger(__name__)

BENCHMARKS = {  # CLI name -> (classification.paths key, display name)
    "city": ("cityscapes", "Cityscapes"),
    "acdc": ("acdc", "ACDC"),
    "zurich": ("darkzurich", "Dark Zurich"),
}


def as_segmenter(model: nn.Module) -> nn.Module:
    """A model taking ImageNet-normalised images: a bare :class:`DeeplabNW` (also inside DDP) gets
    the Caffe renormalisation in front; anything else is assumed to take ImageNet-normalised input already."""
    return ImagenetInput(model) if isinstance(unwrap(model), DeeplabNW) else model


def _logits(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def predict(segmenter: nn.Module, images: torch.Tensor, sympie: nn.Module | None = None,
            flip: bool = True) -> torch.Tensor:
    """Class scores (B, C, H, W) of ImageNet-normalised ``images``: SyMPIE correction first (if given), then
    the segmenter, plus the flipped-back scores of the horizontally flipped image when ``flip``."""
    if sympie is not None:
        images = sympie(images)
    logits = _logits(segmenter(images))
    if flip:
        logits = logits + _logits(segmenter(images.flip(-1))).flip(-1)
    return logits


def _module_device(module: nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _worker_error(err: UserInputError) -> UserInputError:
    """A UserInputError re-raised by a DataLoader worker carries the worker's traceback: keep the sentence."""
    text = str(err).strip()
    if "Traceback" not in text:
        return err
    return UserInputError(text.splitlines()[-1].split("UserInputError: ", 1)[-1])


def evaluate(segmenter: nn.Module, dataset: Dataset, sympie: nn.Module | None = None, batch_size: int = 2,
             workers: int = 2, device: str | torch.device | None = None, flip: bool = True,
             desc: str = "evaluating") -> dict:
    """Segment every sample of ``dataset`` and return :meth:`ConfusionMatrix.summary` plus ``num_images``.

    ``segmenter`` takes ImageNet-normalised images (a bare :class:`DeeplabNW` is wrapped); it and ``sympie``
    are moved to ``device`` (default: the segmenter's) and temporarily put in eval mode. Under
    torch.distributed every process must call this: each takes every world_size-th sample and the confusion
    matrices are summed, so every process returns the same metrics.
    """
    segmenter = as_segmenter(segmenter)
    device = torch.device(device) if device is not None else _module_device(segmenter)
    segmenter.to(device)
    if sympie is not None:
        sympie.to(device)
    rank, world = rank_world()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world),
                        num_workers=workers, collate_fn=collate_by_size, pin_memory=device.type == "cuda")
    matrix = ConfusionMatrix(NUM_CLASSES, device)
    with eval_mode(segmenter, sympie), torch.inference_mode():
        progress = tqdm(loader, desc=desc, disable=rank != 0, dynamic_ncols=True)
        try:
            for groups in progress:
                for images, labels in groups:
                    images = images.to(device, non_blocking=True)
                    labels = labels.to(device, non_blocking=True)
                    matrix.update(predict(segmenter, images, sympie, flip).argmax(dim=1), labels)
                progress.set_postfix(mIoU=f"{matrix.miou():.2f}")
        except UserInputError as err:
            raise _worker_error(err) from None
    matrix.all_reduce()
    return {**matrix.summary(), "num_images": len(dataset)}


def evaluate_benchmark(name: str, segmenter: nn.Module, sympie: nn.Module | None = None, config=None,
                       root=None, batch_size: int = 2, workers: int = 2, device=None, flip: bool = True,
                       long_side: int = LONG_SIDE) -> dict:
    """Evaluate on benchmark ``name`` (``city``, ``acdc`` or ``zurich``), its folder from ``root`` or the config."""
    if name not in BENCHMARKS:
        raise UserInputError(f"unknown dataset {name!r}; choose one of {', '.join(BENCHMARKS)}.")
    key, title = BENCHMARKS[name]
    dataset = Cityscapes(dataset_path(key, config, root), long_side=long_side)
    variant = "SyMPIE" if sympie is not None else "baseline"
    return evaluate(segmenter, dataset, sympie, batch_size, workers, device, flip, desc=f"{title} ({variant})")


def evaluate_city(segmenter, sympie=None, config=None, root=None, batch_size=2, workers=2, device=None, flip=True,
                  long_side=LONG_SIDE):
    """mIoU and per-class metrics on Cityscapes val (see :func:`evaluate`)."""
    return evaluate_benchmark("city", segmenter, sympie, config, root, batch_size, workers, device, flip, long_side)


def evaluate_acdc(segmenter, sympie=None, config=None, root=None, batch_size=2, workers=2, device=None, flip=True,
                  long_side=LONG_SIDE):
    """mIoU and per-class metrics on ACDC val (see :func:`evaluate`)."""
    return evaluate_benchmark("acdc", segmenter, sympie, config, root, batch_size, workers, device, flip, long_side)


def evaluate_zurich(segmenter, sympie=None, config=None, root=None, batch_size=2, workers=2, device=None, flip=True,
                  long_side=LONG_SIDE):
    """mIoU and per-class metrics on Dark Zurich val (see :func:`evaluate`)."""
    return evaluate_benchmark("zurich", segmenter, sympie, config, root, batch_size, workers, device, flip, long_side)


# --------------------------------------------------------------------------- command line

def load_sympie(value: str, device: torch.device, trusted: bool = False) -> SyMPIE | None:
    """The SyMPIE module named by ``--colm`` (None for ``none``), in eval mode on ``device``."""
    path = resolve_colm(value)
    return None if path is None else SyMPIE.from_checkpoint(path, trusted=trusted).to(device).eval()


def _jsonable(metrics: dict) -> dict:
    def clean(v):
        if isinstance(v, np.ndarray):
            return [clean(x) for x in v.tolist()]
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, float) and not np.isfinite(v):
            return None
        return v
    return {k: clean(v) for k, v in metrics.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_trust_argument(parser)
    parser.add_argument("--dataset", choices=(*BENCHMARKS, "all"), default="all")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true",
                        help="with --colm, skip the evaluation without SyMPIE")
    parser.add_argument("--out", "--output", dest="out", default=None, help="also write the results to this JSON file")
    add_model_args(parser)
    return parser


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The flags of every segmentation script: SyMPIE and DeepLab checkpoints, input size, device, flip TTA,
    dataset config."""
    add_colm_argument(parser, "sympie")
    add_segmenter_args(parser)
    parser.add_argument("--long-side", type=int, default=LONG_SIDE, help="images are resized to this long side")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--no-flip", action="store_true", help="disable the flip test-time augmentation")
    add_config_argument(parser)


@report_user_errors
def main(argv: list[str] | None = None) -> dict:
    args = parse_command_line(build_parser(), argv)
    if args.batch_size < 1 or args.workers < 0 or args.long_side < 1:
        raise UserInputError(f"--batch-size ({args.batch_size}) and --long-side ({args.long_side}) must be positive "
                             f"and --workers ({args.workers}) at least 0.")
    if args.out is not None:
        check_output_file(args.out, "--out")
    with distributed(args.device) as ctx:
        return _run(args, ctx.device)


def _run(args: argparse.Namespace, device: torch.device) -> dict:
    is_main = rank_world()[0] == 0
    names = list(BENCHMARKS) if args.dataset == "all" else [args.dataset]
    datasets = {name: Cityscapes(dataset_path(BENCHMARKS[name][0], args.config), long_side=args.long_side)
                for name in names}
    segmenter = as_segmenter(load_deeplab(args.seg_checkpoint, trusted=args.trust_checkpoint)).to(device)
    sympie = load_sympie(args.colm, device, args.trust_checkpoint)
    variants = [] if sympie is not None and args.no_baseline else [("baseline", None)]
    if sympie is not None:
        variants.append(("sympie", sympie))
    scores: dict[str, dict[str, dict]] = {}
    for name, dataset in datasets.items():
        title = BENCHMARKS[name][1]
        for variant, module in variants:
            metrics = evaluate(segmenter, dataset, module, args.batch_size, args.workers, device,
                               not args.no_flip, desc=f"{title} ({variant})")
            scores.setdefault(name, {})[variant] = metrics
            if is_main:
                print(f"{title}, {variant}: mIoU {metrics['miou']:.2f} over {metrics['num_images']} images")
                print(format_table(metrics, CLASS_NAMES), flush=True)
    if is_main:
        print("mIoU %: " + "; ".join(
            f"{BENCHMARKS[n][1]} " + ", ".join(f"{v} {scores[n][v]['miou']:.2f}" for v, _ in variants)
            for n in names), flush=True)
    results = {"seg_checkpoint": str(args.seg_checkpoint), "colm": args.colm, "flip": not args.no_flip,
               "scores": scores}
    if is_main and args.out:
        write_json(args.out, {**results, "scores": {n: {v: _jsonable(m) for v, m in per.items()}
                                                      for n, per in scores.items()}}, indent=2)
        log.info("results written to %s", args.out)
    return results


if __name__ == "__main__":
    main()
