"""Accuracy grids on ImageNet-C, ImageNet-C-Bar or ImageNet-C-Mixed, with or without SyMPIE (README.md in this folder).

    python validate.py                         # rn50_2 alone -> json/none_rn50_2.json
    python validate.py --colm sympie           # SyMPIE + rn50_2 -> json/sympie_rn50_2.json
    python validate.py --bar --quick --clas rn18
    python validate.py --demo                  # effnet_lite0 on a mini ImageNet-C of the sample photos
    torchrun --nproc-per-node=8 validate.py    # sharded over 8 processes, same grid

The grid JSON is a list of rows (categories) of 5 accuracies in percent (severities 1..5), written with
``json.dump``; a ``.meta.json`` sidecar holds the counts per cell and the run's provenance.
"""
from __future__ import annotations

from classification.errors import stop_quietly_on_signals

stop_quietly_on_signals(__name__)  # before the imports below (seconds): Ctrl-C or SIGTERM meanwhile is one line

import argparse
import logging
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision

from classification.atomic import check_output_dir, check_output_file
from classification.classifiers import build_classifier, check_classifier_name
from classification.clip.zeroshot import TEMPLATE_MODES, build_clip_classifier
from classification.errors import UserInputError, report_user_errors
from classification.eval.embedded_demo import (DEMO_CLASSIFIER, DEMO_PREFIX, check_demo_arguments, demo_checkpoint,
                                     draw_heatmaps, prepare_demo_set, summary_line, write_summary)
from classification.checkpoint import add_trust_argument, resolve_colm
from classification.cli import add_classifier_args, add_colm_argument, parse_command_line
from classification.distributed import distributed
from classification.eval.benchmark_sets import DATASETS, CorruptionGrid
from classification.eval.evaluate import (GridCounts, build_eval_model, eval_defaults, evaluate_grid,
                                         undecodable_items)
from classification.eval.grids import GRID_DIR, metadata_path, sha256_of, write_grid
from classification.paths import add_config_argument, dataset_path
from classification.samples import CACHE_ENV

log = logging.getLogger("validate")

DEFAULT_OUT = GRID_DIR
DEFAULT_CLASSIFIER = "rn50_2"
MAX_LISTED_MISSING = 20
RANDOM_INIT_SEED = 0  # --random-init: the same random classifier in every process and run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_classifier_args(parser, default=None, default_text=f"{DEFAULT_CLASSIFIER}; {DEMO_CLASSIFIER} with --demo")
    add_colm_argument(parser, default=None, note=" (unset: none; with --demo, sympie.pth when it is in the "
                                                 "checkpoints folder, else sympie_demo.pth)")
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=None,
                        help="images per batch and process (default: 32 on the CPU, 1000 on a GPU)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="loader processes per rank (default: min(8, CPU count))")
    parser.add_argument("--debug", action="store_true", help="evaluate one batch only (output gets a debug_ prefix)")
    parser.add_argument("--quick", action="store_true", help="the authors' 1/50 subset of the (image, severity, category) evaluations")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--bar", action="store_true", help="ImageNet-C-Bar instead of ImageNet-C")
    group.add_argument("--mixed", action="store_true", help="ImageNet-C-Mixed instead of ImageNet-C")
    add_config_argument(parser)
    add_trust_argument(parser)
    parser.add_argument("--root", default=None, help="dataset folder (overrides config_paths.yaml)")
    parser.add_argument("--split", default=None, help="split file (default: <root>/images.txt)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="leave out images that are missing or cannot be decoded (counted, and listed in the "
                             ".meta.json) instead of stopping")
    parser.add_argument("--check-files", action="store_true",
                        help="first decode every file of the split (in --workers processes) and stop, before the "
                             "evaluation, if one cannot be decoded (with --skip-missing: list them and go on)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available; "
                                                       "under torchrun cuda:LOCAL_RANK)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder of the JSON grids (default: json/ beside "
                                                                "this script)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (classification/distributed.py); "
                                                           "the protocol is fp32")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile SyMPIE's NEM (with --colm; the first batch compiles it, then "
                             "benchmarks/bench_inference.py's 'compiled' figures apply)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last memory format (default: on the CPU, where it is faster; off on a GPU)")
    parser.add_argument("--clip-templates", choices=TEMPLATE_MODES, default="single",
                        help="prompts of --clas clip: 'A photo of a {name}.' (single, the protocol, default) or the "
                             "80-template ensemble")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--demo", action="store_true",
                        help=f"evaluate {DEMO_CLASSIFIER} on a mini ImageNet-C rendered from the sample photos (cached "
                             f"in ${CACHE_ENV}/demo or ~/.cache/sympie/demo) without and with SyMPIE (--colm; "
                             f"default sympie.pth when present, else the shipped demo model sympie_demo.pth); "
                             f"writes demo_*.json, heat maps and demo_summary.txt")
    return parser


def dataset_key(args: argparse.Namespace) -> str:
    return "imagenetc-bar" if args.bar else "imagenetc-mixed" if args.mixed else "imagenetc"


def output_name(args: argparse.Namespace, colm_path: Path | None) -> str:
    """``{debug_}{bar_|mixed_}{quick_}{colm}_{clas}.json`` (the authors' naming; debug runs and the CLIP
    template ensemble are marked)."""
    colm = "none" if colm_path is None else colm_path.stem  # a name resolves to <name>.pth
    clas = Path(args.clas).stem if os.sep in args.clas or "/" in args.clas else args.clas
    clas = re.sub(r"[^A-Za-z0-9_.-]", "-", clas)
    if args.clas == "clip" and args.clip_templates != "single":
        clas += f"_{args.clip_templates}"
    prefix = ("debug_" if args.debug else "") + (DEMO_PREFIX if args.demo else "") + \
             ("bar_" if args.bar else "mixed_" if args.mixed else "") + ("quick_" if args.quick else "")
    return f"{prefix}{colm}_{clas}.json"


def make_classifier(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """The ``--clas`` classifier (``clip`` with the chosen prompt templates).

    With ``--random-init`` the weights are drawn from a fixed seed, whatever the process did before, so
    every process of a distributed run (and every run) evaluates the same model.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        if args.clas == "clip" and args.clip_templates != "single":
            return build_clip_classifier(pretrained=not args.random_init, templates=args.clip_templates, device=device)
        return build_classifier(args.clas, pretrained=not args.random_init, trusted=args.trust_checkpoint,
                                device=device)


def versions() -> dict[str, str]:
    import open_clip
    import timm

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "timm": timm.__version__,
            "open_clip": open_clip.__version__}


def metadata(args: argparse.Namespace, dataset: CorruptionGrid, counts: GridCounts, colm_path: Path | None,
             started: datetime, seconds: float, device: torch.device, world: int) -> dict:
    return {
        "grid": counts.accuracy(),
        "rows": list(dataset.categories),
        "columns": ["severity 1", "severity 2", "severity 3", "severity 4", "severity 5"],
        "correct": counts.correct.tolist(),
        "total": counts.total.tolist(),
        "dataset": dataset.describe(),
        "missing_images": [{"path": str(m.path), "line": m.line_no} for m in dataset.missing[:MAX_LISTED_MISSING]],
        "undecodable": len(counts.undecodable),
        "undecodable_images": [{"path": str(item.path), "line": item.line_no}
                               for item in map(dataset.item, counts.undecodable)],
        "classifier": args.clas,
        "clip_templates": args.clip_templates if args.clas == "clip" else None,
        "pretrained": not args.random_init,
        "checkpoint": None if colm_path is None else {"path": str(colm_path.resolve()), "sha256": sha256_of(colm_path)},
        "debug": args.debug,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(dataset) / seconds, 2) if seconds > 0 and not args.debug else None,
        "device": str(device),
        "world_size": world,
        "batch_size": args.batch_size,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "command": " ".join(sys.argv),
        "versions": versions(),
    }


@report_user_errors
def main(argv: list[str] | None = None) -> Path | None:
    """Run the evaluation; returns the path of the grid JSON on rank 0 (None on the other ranks)."""
    parser = build_parser()
    args = parse_command_line(parser, argv, "%(asctime)s %(levelname)s %(message)s")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserInputError(f"--batch_size must be at least 1, got {args.batch_size}.")
    if args.workers < 0:
        raise UserInputError(f"--workers must be 0 (load in this process) or more, got {args.workers}.")
    check_output_dir(args.out, "--out")
    if args.demo:
        check_demo_arguments(args, parser)
        return run_demo(args)
    args.clas = check_classifier_name(args.clas or DEFAULT_CLASSIFIER)
    colm = resolve_colm(args.colm or "none")  # names first: locating the dataset may fail for another reason
    key = dataset_key(args)
    return run(args, key, dataset_path(key, args.config, args.root), colm)


def run_demo(args: argparse.Namespace) -> Path | None:
    """``--demo``: the classifier alone and with SyMPIE (:func:`demo_checkpoint` says which), the heat maps
    and, with SyMPIE, the one-line summary. Returns the last grid written (None on ranks other than 0)."""
    args.clas = DEMO_CLASSIFIER
    colm, which = demo_checkpoint(args.colm)
    log.info("SyMPIE for the demo: %s", which)
    root = prepare_demo_set()
    grids = [run(args, "imagenetc", root, path) for path in ([None] if colm is None else [None, colm])]
    if grids[-1] is None:
        return None
    for picture in draw_heatmaps(grids):
        log.info("wrote %s", picture)
    printed = f"SyMPIE: {which}\ndemo set: {root}\n" + "".join(f"grid: {g}\n" for g in grids)
    printed += f"heat maps: {grids[0].parent}"
    if len(grids) == 2:
        line = summary_line(*grids, label=colm.name)
        printed += f"\nsummary: {write_summary(line, grids[0].parent)}\n{line}"
    print(printed)
    return grids[-1]


def run(args: argparse.Namespace, key: str, root: Path, colm_path: Path | None) -> Path | None:
    """Evaluate ``args.clas`` (with SyMPIE when ``colm_path`` is set) on the dataset ``key`` at ``root``."""
    out = Path(args.out) / output_name(args, colm_path)
    for path in (out, metadata_path(out)):  # before hours of evaluation, not after
        check_output_file(path, "output file")
    with distributed(args.device) as ctx:
        rank, world, device = ctx.rank, ctx.world_size, ctx.device
        args.batch_size, args.channels_last = eval_defaults(device, args.batch_size, args.channels_last)
        dataset = DATASETS[key](root, args.split, quick=args.quick, skip_missing=args.skip_missing)
        if dataset.missing and rank == 0:
            log.warning("%d images listed in %s are missing and were skipped (first: %s, line %d)",
                        len(dataset.missing), dataset.split_file, dataset.missing[0].path, dataset.missing[0].line_no)
        if len(dataset) == 0:
            raise UserInputError(f"no images of {dataset.split_file} were found under {root}.")
        if args.check_files:
            check_files(dataset, args, rank)
        model = build_eval_model(make_classifier(args, device), colm_path, args.trust_checkpoint, args.compile)
        if rank == 0:
            log.info("%s: %d files to classify (%d of the %d split images, %d categories), classifier %s, "
                     "SyMPIE %s, %d process(es) on %s", key, len(dataset), dataset.describe()["images_used"],
                     len(dataset.lines), len(dataset.categories), args.clas, colm_path or "none", world, device)
        started = datetime.now(timezone.utc)
        tic = time.perf_counter()
        counts = evaluate_grid(model, dataset, batch_size=args.batch_size, workers=args.workers, device=device,
                               amp=args.amp, channels_last=args.channels_last, debug=args.debug,
                               progress=not args.no_progress, skip_undecodable=args.skip_missing)
        seconds = time.perf_counter() - tic
        if rank != 0:
            return None
        if counts.undecodable:
            first = dataset.item(counts.undecodable[0])
            log.warning("%d files could not be decoded and were left out (first: %s, line %d; all listed in %s)",
                        len(counts.undecodable), first.path, first.line_no, metadata_path(out))
        write_grid(out, counts.accuracy(), metadata(args, dataset, counts, colm_path, started, seconds, device, world))
        log.info("wrote %s (%.1f s, %.1f images/s)", out, seconds, len(dataset) / max(seconds, 1e-9))
        return out


def check_files(dataset: CorruptionGrid, args: argparse.Namespace, rank: int) -> None:
    """``--check-files``: decode every file first; stop naming the first that fails, unless ``--skip-missing``
    (then the evaluation leaves them out)."""
    bad = undecodable_items(dataset, args.workers, progress=not args.no_progress)
    if not bad:
        if rank == 0:
            log.info("--check-files: all %d files decode", len(dataset))
        return
    first = dataset.item(bad[0])
    if not args.skip_missing:
        raise UserInputError(f"{len(bad)} of the {len(dataset)} files cannot be decoded, e.g. {first.path} (line "
                             f"{first.line_no} of {dataset.split_file}); replace them, remove their lines or pass "
                             f"--skip-missing to leave them out.")
    if rank == 0:
        log.warning("--check-files: %d files cannot be decoded and will be left out (first: %s)", len(bad), first.path)


if __name__ == "__main__":
    main()
