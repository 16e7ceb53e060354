"""Predictions on VizWiz-Classification with and without SyMPIE (layout: data/README.md).

    python eval_vizwiz.py --clas rn50_2 --colm sympie    # -> vizwiz/pred_orig.json, vizwiz/pred_warp.json

Each file maps image file names to the predicted category id; the accuracy is printed when the
annotations carry labels (see classification/eval/vizwiz.py).
"""
from __future__ import annotations

from classification.errors import stop_quietly_on_signals

stop_quietly_on_signals(__name__)  # before the imports below: Ctrl-C or SIGTERM meanwhile is one line

import argparse
import logging
import os
from pathlib import Path

import torch

from classification.atomic import check_output_dir, check_output_file, write_json
from classification.classifiers import build_classifier, check_classifier_name
from classification.errors import UserInputError, report_user_errors
from classification.checkpoint import add_trust_argument, resolve_colm
from classification.cli import add_classifier_args, add_colm_argument, parse_command_line
from classification.distributed import resolve_device
from classification.eval.evaluate import build_eval_model, eval_defaults
from classification.eval.vizwiz import VizWiz, accuracy, predict_vizwiz
from classification.paths import add_config_argument, dataset_path

log = logging.getLogger("eval_vizwiz")

DEFAULT_OUT = Path(__file__).resolve().parent / "vizwiz"
OUTPUT_FILES = {"orig": "pred_orig.json", "warp": "pred_warp.json"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_classifier_args(parser)
    add_colm_argument(parser, "sympie", note=" ('none': only pred_orig.json is written)")
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=None,
                        help="images per batch (default: 32 on the CPU, 1000 on a GPU)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="loader processes (default: min(8, CPU count))")
    add_config_argument(parser)
    add_trust_argument(parser)
    parser.add_argument("--root", default=None, help="VizWiz folder (overrides config_paths.yaml)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for pred_orig.json / pred_warp.json (default: vizwiz/ beside this script)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last memory format (default: on the CPU, where it is faster; off on a GPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = parse_command_line(build_parser(), argv, "%(asctime)s %(levelname)s %(message)s")
    if (args.batch_size is not None and args.batch_size < 1) or args.workers < 0:
        raise UserInputError(f"--batch_size must be at least 1 and --workers at least 0, got {args.batch_size} and "
                             f"{args.workers}.")
    check_output_dir(args.out, "--out")
    for name in OUTPUT_FILES.values():  # before the predictions, not after
        check_output_file(Path(args.out) / name, "output file")
    check_classifier_name(args.clas)
    colm_path = resolve_colm(args.colm)  # names first: locating the dataset may fail for another reason
    root = dataset_path("vizwiz", args.config, args.root)
    dataset = VizWiz(root)
    device = resolve_device(args.device)
    classifier = build_classifier(args.clas, pretrained=not args.random_init, trusted=args.trust_checkpoint,
                                  device=device)
    models = {"orig": build_eval_model(classifier, None)}
    if colm_path is not None:
        models["warp"] = build_eval_model(classifier, colm_path, args.trust_checkpoint)
    batch_size, channels_last = eval_defaults(device, args.batch_size, args.channels_last)
    if channels_last:  # the first convolution converts the (NCHW) input batch
        models = {key: model.to(memory_format=torch.channels_last) for key, model in models.items()}
    predictions = predict_vizwiz(models, dataset, batch_size=batch_size, workers=args.workers, device=device,
                                 progress=not args.no_progress)
    written = {}
    for key, preds in predictions.items():
        path = Path(args.out) / OUTPUT_FILES[key]
        write_json(path, preds)
        written[key] = path
        acc, scored = accuracy(preds, dataset.annotations.labels)
        if scored:
            print(f"{key}: accuracy {acc:.2f}% over {scored} labelled images ({path})")
        else:
            print(f"{key}: {len(preds)} predictions written to {path} (the annotations carry no labels)")
    return written


if __name__ == "__main__":
    main()
