"""Train SyMPIE on ImageNet with synthetic corruptions, the authors' recipe (README.md in this folder).

    torchrun --nproc-per-node=8 classification/training/train.py --imagenet /data/imagenet/train
    python classification/training/train.py --device cpu --epochs 1 --iters-per-epoch 10 --batch-size 4
    torchrun --nproc-per-node=8 classification/training/train.py --resume      # continue a stopped run
    torchrun --nproc-per-node=2 classification/training/train.py --demo        # a minute on CPU, sample photos

Every recipe number is a flag; ``--recipe`` picks a set of their defaults (classification/training/recipes/).
The log dir (``--logdir``) receives TensorBoard events, ``train.log``, ``run_config.json``, the full training
state ``checkpoint.pth`` after every epoch (and when SIGTERM or SIGUSR1 stop the run), and the NEM
state_dicts ``best_uw.pth``, ``best_uo.pth``, ``best_city.pth``, ``best_acdc.pth``, ``final.pth`` and
``final_ema.pth`` (all usable as ``--colm``).

This file is the wiring: flags (here), recipes (recipes/), data (batches.py), the loop (trainer.py), the log
(run_log.py), stopping (preemption.py), the run record (run_config.py) and checkpoints
(classification/checkpoint.py).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path

import torch
import torch.nn as nn

from classification.atomic import check_output_dir, check_output_file
from classification.cli import add_classifier_args, add_segmenter_args
from classification.distributed import distributed, launched_rank, launched_world_size, use_deterministic_algorithms
from classification.errors import UserInputError, report_user_errors
from classification.imagenet import imagenet_class_index
from classification.paths import add_config_argument, dataset_path
from classification import checkpoint as ckpt
from classification.training import run_config
from classification.training.batches import DataSettings, TrainingBatches
from classification.training.corrupted_folder import VAL_EVERY, scan_image_folder, training_methods
from classification.training.engine import DISTILL_MODES
from classification.training.preemption import Preempted
from classification.training.recipes import RECIPES, parse_command_line, photo_folder
from classification.training.run_log import log_file, setup_logging
from classification.training.trainer import Trainer, TrainerSettings

log = logging.getLogger("sympie.train")

# choices of the flags beyond the paper (checked by check_flags: a wrong value gets one sentence); the
# first of each is the default, the paper's behaviour
INITS = ("random", "identity")
LABELS = ("dataset", "classifier")
BN_CALIBRATION_BATCHES = 8  # default of --bn-calibration-batches
MAX_SEED = 2**63 - 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train SyMPIE (torchrun entry point; also runs as one process).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    add_config_argument(data)
    data.add_argument("--imagenet", help="ImageNet train folder (default: key 'imagenet' of the config)")
    data.add_argument("--cityscapes", help="Cityscapes folder for segmentation validation (default: config)")
    data.add_argument("--acdc", help="ACDC folder for segmentation validation (default: config)")
    add_segmenter_args(data, note=" for segmentation validation (skipped when missing)")
    data.add_argument("--max-corruptions", type=int, default=1, help="each image gets 1 + randrange(N) corruptions")
    data.add_argument("--no-color", action="store_true",
                      help="train without SyMPIE's 4 colour corruptions (also taken out of --corruptions)")
    data.add_argument("--corruptions", nargs="+", metavar="NAME",
                      help="corruptions to draw from instead of the paper's 23, uniformly (a name given twice is "
                           "drawn twice as often; beyond the paper)")
    data.add_argument("--clean-fraction", type=float, default=0.0,
                      help="probability that a crop is left clean (severity 0 for all its corruptions; beyond the "
                           "paper)")
    data.add_argument("--labels", default=LABELS[0],
                      help="training target: 'dataset' (the class folders, the paper's) or 'classifier' (the frozen "
                           "classifier's own output on the clean crop: any folder of photos, flat or not, trains)")
    data.add_argument("--gpu-corruptions", action="store_true",
                      help="corrupt batched on the training device instead of in the loader workers")
    data.add_argument("--resize-size", type=int, default=256)
    data.add_argument("--crop-size", type=int, default=224)
    data.add_argument("--workers", type=int, default=4, help="train loader workers per process")
    data.add_argument("--val-workers", type=int, default=1, help="validation loader workers per process")
    data.add_argument("--val-iters", type=int, default=0, help="validation batches per process (0: the whole split)")

    model = parser.add_argument_group("model")
    add_classifier_args(model, several=True)
    model.add_argument("--classifier-dir", help="folder of the robust classifiers' checkpoints")
    ckpt.add_trust_argument(model)
    model.add_argument("--init", default=INITS[0],
                       help="NEM output layer at the start: 'random' (the paper's) or 'identity' (zero weights, bias "
                            "= the identity warp, so the corrected image starts equal to the input)")

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--epochs", type=int, default=100)
    recipe.add_argument("--iters-per-epoch", type=int, default=500)
    recipe.add_argument("--batch-size", type=int, default=48, help="per process")
    recipe.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine schedule per iteration)")
    recipe.add_argument("--ema-rate", type=float, default=0.9, help="teacher = rate*teacher + (1-rate)*student")
    recipe.add_argument("--round2-weight", type=float, default=0.5, help="weight of the teacher-corrected round")
    recipe.add_argument("--grad-clamp", type=float, default=1.0,
                        help="per-parameter gradients with a norm >= this are rescaled to this norm")
    recipe.add_argument("--distill", default=DISTILL_MODES[0],
                        help="with --labels classifier: 'hard' (cross-entropy to its top-1 class) or 'kl' (KL "
                             "divergence to its softmax at --temperature)")
    recipe.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of --distill kl")
    recipe.add_argument("--pixel-weight", type=float, default=0.0,
                        help="weight of an auxiliary mean squared error between the corrected and the clean crop "
                             "(normalised pixels; beyond the paper, 0 = off)")
    recipe.add_argument("--pixel-pool", type=int, default=1,
                        help="average-pool both crops N x N before --pixel-weight's error (1: every pixel; e.g. 8 "
                             "compares colours and ignores noise and fine detail)")
    recipe.add_argument("--freeze-nem-bn", action=argparse.BooleanOptionalAction, default=False,
                        help="keep the NEM's BatchNorm layers in eval mode while training, with the statistics of "
                             "--bn-calibration-batches training batches (beyond the paper)")
    recipe.add_argument("--bn-calibration-batches", type=int, default=BN_CALIBRATION_BATCHES,
                        help="with --freeze-nem-bn: batches whose mean statistics the frozen BatchNorm layers use (0: "
                             "keep the initial mean 0 / variance 1, which shrinks the NEM's features ~10x)")
    recipe.add_argument("--amp", action="store_true", help="bfloat16 autocast (see classification/distributed.py)")

    run = parser.add_argument_group("run")
    run.add_argument("--recipe", default=RECIPES[0],
                     help="flag defaults from classification/training/recipes/<name>.yaml: 'paper' (the authors'), "
                          "'small' (the small-scale path on 2 CPU cores, effnet_lite0 and the labelled photo folder given "
                          "with --imagenet) or 'smoke' (a minute on the sample photos); "
                          "flags typed on the command line win")
    run.add_argument("--demo", action="store_true", help="the same as --recipe smoke")
    run.add_argument("--logdir", default="logs/sympie_rerun")
    run.add_argument("--export", metavar="PATH",
                     help="also write the final NEM state_dict in float16 to PATH (half the size; every loader "
                          "casts it back to float32)")
    run.add_argument("--resume", action="store_true", help="continue the run in --logdir from its last checkpoint")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", help="cpu, cuda (this process's GPU under torchrun; the default when torch sees one) "
                                      "or cuda:N (a single process only)")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the NEM of the student and the teacher (the first steps are slower)")
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic kernels: slower on GPUs, where they make a run repeatable and --resume "
                          "bit-exact (on the CPU both hold without it)")
    run.add_argument("--print-every", type=int, default=50,
                     help="progress line and TensorBoard train/* values every N steps (the only steps that compute "
                          "and read them)")
    run.add_argument("--image-every", type=int, default=500, help="TensorBoard images every N steps (0: never)")
    parser.set_defaults(photos=None)  # a recipe's bundled photo set, trained on unless --imagenet is given
    return parser



def check_flags(args: argparse.Namespace) -> None:
    """Every flag's value and the flags' combinations, each wrong one refused in one sentence."""
    positive = ("epochs", "iters_per_epoch", "batch_size", "max_corruptions", "resize_size", "crop_size", "print_every",
                "pixel_pool")
    for name in positive:
        if getattr(args, name) < 1:
            raise UserInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    for name in ("workers", "val_workers", "val_iters", "image_every", "bn_calibration_batches", "seed"):
        if getattr(args, name) < 0:
            raise UserInputError(f"--{name.replace('_', '-')} cannot be negative, got {getattr(args, name)}.")
    if args.seed > MAX_SEED:
        raise UserInputError(f"--seed must be at most 2**63 - 1 = {MAX_SEED}, got {args.seed}.")
    for name in ("lr", "grad_clamp", "temperature", "round2_weight", "pixel_weight", "ema_rate", "clean_fraction"):
        if not math.isfinite(getattr(args, name)):
            raise UserInputError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(args, name)}.")
    for name in ("lr", "grad_clamp", "temperature"):
        if not getattr(args, name) > 0:
            raise UserInputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    for name in ("round2_weight", "pixel_weight"):
        if not getattr(args, name) >= 0:
            raise UserInputError(f"--{name.replace('_', '-')} cannot be negative, got {getattr(args, name)}.")
    if not 0 <= args.ema_rate <= 1:
        raise UserInputError(f"--ema-rate must be in [0, 1], got {args.ema_rate}.")
    if not 0 <= args.clean_fraction < 1:
        raise UserInputError(f"--clean-fraction must be in [0, 1) (1 would leave every crop clean), got "
                             f"{args.clean_fraction}.")
    for flag, value, choices in (("--init", args.init, INITS), ("--labels", args.labels, LABELS),
                                 ("--distill", args.distill, DISTILL_MODES), ("--recipe", args.recipe, RECIPES)):
        if value not in choices:
            raise UserInputError(f"{flag} {value!r} is not one of {', '.join(choices)}; pick one of them.")
    if args.labels == "dataset" and args.distill != DISTILL_MODES[0]:
        raise UserInputError(f"--distill {args.distill} needs --labels classifier (with --labels dataset the target "
                             f"is the folder's class); pass --labels classifier or --distill {DISTILL_MODES[0]}.")
    if args.distill == DISTILL_MODES[0] and args.temperature != 1:
        raise UserInputError(f"--temperature {args.temperature} only applies to --distill kl; pass --distill kl "
                             f"or drop --temperature.")
    if not args.freeze_nem_bn and args.bn_calibration_batches != BN_CALIBRATION_BATCHES:
        raise UserInputError(f"--bn-calibration-batches {args.bn_calibration_batches} only applies with "
                             f"--freeze-nem-bn; add --freeze-nem-bn or drop --bn-calibration-batches.")
    if args.crop_size > args.resize_size:
        raise UserInputError(f"--crop-size ({args.crop_size}) cannot exceed --resize-size ({args.resize_size}).")
    training_methods(args.no_color, args.corruptions)  # unknown names, or nothing left without colour


def check_split_sizes(scan: tuple[list[str], list[tuple[str, int]]], args: argparse.Namespace, world_size: int,
                      root: Path) -> None:
    """Both splits must give every process at least one full batch."""
    images = len(scan[1])
    val = math.ceil(images / VAL_EVERY)
    needed = args.batch_size * world_size
    if min(images - val, val) < needed:
        raise UserInputError(f"ImageNet folder {root} has {images} images ({images - val} train, {val} validation: "
                             f"one in {VAL_EVERY}); each split needs at least batch size x processes = {needed}.")


def data_settings(args: argparse.Namespace) -> DataSettings:
    return DataSettings(methods=training_methods(args.no_color, args.corruptions), max_corruptions=args.max_corruptions,
                        clean_fraction=args.clean_fraction, resize_size=args.resize_size, crop_size=args.crop_size,
                        gpu_corruptions=args.gpu_corruptions, labelled=args.labels == "dataset", seed=args.seed,
                        batch_size=args.batch_size, iters_per_epoch=args.iters_per_epoch, workers=args.workers,
                        val_workers=args.val_workers, val_iters=args.val_iters)


VALIDATOR_ENTRY_POINTS = "sympie.training_validators"


def plugin_validators(args: argparse.Namespace, device: torch.device) -> dict:
    """The validators of the installed entry points :data:`VALIDATOR_ENTRY_POINTS` (the segmentation package's:
    Cityscapes and ACDC mIoU; ``pyproject.toml``), each given the parsed flags and the device."""
    found = entry_points(group=VALIDATOR_ENTRY_POINTS)
    if not found:
        log.warning("no %s entry point is installed, so there is no segmentation validation: install the "
                    "repository (pip install -e .) to have it", VALIDATOR_ENTRY_POINTS)
    validators = {}
    for entry in sorted(found, key=lambda e: e.name):
        validators.update(entry.load()(args, device))
    return validators


def trainer_settings(args: argparse.Namespace) -> TrainerSettings:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainerSettings)}
    return TrainerSettings(**{**values, "classifiers": tuple(args.classifiers), "logdir": str(args.logdir)})


def build_classifiers(args: argparse.Namespace) -> list[nn.Module]:
    """The frozen upstream classifiers, built once for the whole run (unknown names fail here). With
    ``--random-init`` their weights are drawn from ``--seed``: the same in every process and every run (a
    resumed run continues with the classifiers it started with)."""
    from classification.classifiers import build_classifier

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return [build_classifier(name, pretrained=not args.random_init, checkpoint_dir=args.classifier_dir,
                                 trusted=args.trust_checkpoint, device=args.device) for name in args.classifiers]


def check_resume(logdir: Path, args: argparse.Namespace, world_size: int) -> bool:
    """Whether there is a checkpoint to continue from; a log dir that holds another run is refused."""
    resume = run_config.check_logdir(logdir, args, world_size)
    if args.resume and not resume:
        if not (logdir / run_config.RUN_CONFIG).exists():  # not even the start of a run: most likely a mistyped folder
            raise UserInputError(f"--resume: log dir {logdir} holds no run to continue (no {run_config.CHECKPOINT}); "
                                 f"check --logdir, or drop --resume to start a new run there.")
        log.info("--resume: %s holds no checkpoint yet, starting from scratch", logdir / run_config.CHECKPOINT)
    return resume


@contextlib.contextmanager
def removed_unless_started(logdir: Path, is_main: bool) -> Iterator[None]:
    """A log dir made by this run is removed again when the run fails before ``run_config.json`` marks it."""
    made = not logdir.exists()
    try:
        yield
    except BaseException:
        if made and is_main and not (logdir / run_config.RUN_CONFIG).exists():
            shutil.rmtree(logdir, ignore_errors=True)
        raise


def train(args: argparse.Namespace, classifiers: Sequence[nn.Module] | None = None) -> Path:
    """Run (or resume) the training described by ``args``; returns the log dir.

    The flags, the data folder and the output paths are checked before the classifiers are built and the
    process group starts; ``run_config.json``, which marks the log dir as holding a run, is written only
    once the trainer is built. ``classifiers`` may be given directly (tests); otherwise they are built from
    the flags. Raises :class:`Preempted` when SIGTERM or SIGUSR1 stopped the run (its checkpoint written).
    """
    setup_logging(is_main=launched_rank() == 0)
    check_flags(args)
    if args.deterministic:
        use_deterministic_algorithms()
    world_size = launched_world_size()
    root = photo_folder(args.photos, args.imagenet) or dataset_path("imagenet", args.config, args.imagenet)
    scan = scan_image_folder(root, labelled=args.labels == "dataset")
    check_split_sizes(scan, args, world_size, root)
    logdir = Path(args.logdir)
    check_output_dir(logdir, "--logdir")
    resume = check_resume(logdir, args, world_size)
    if args.export:
        check_output_file(args.export, "--export")
    if classifiers is None:
        classifiers = build_classifiers(args)
    with distributed(args.device) as ctx, removed_unless_started(logdir, ctx.is_main), log_file(logdir, ctx.is_main):
        if ctx.is_main and args.labels == "dataset" and scan[0] != sorted(imagenet_class_index()):
            log.warning("%s does not hold ImageNet's 1000 class folders (it has %d): the i-th folder in sorted order "
                        "is taken as the classifier's class i; pass --labels classifier to train on other photos",
                        root, len(scan[0]))
        validators = plugin_validators(args, ctx.device)
        data = TrainingBatches(root, scan, data_settings(args), ctx)
        trainer = Trainer(trainer_settings(args), ctx, classifiers, data, run_config.recipe(args, world_size), resume,
                          validators)
        if ctx.is_main:  # only now, so that a wrong segmentation checkpoint leaves no run behind
            run_config.write_run_config(logdir, args, world_size)
        trainer.fit()
    return logdir


@report_user_errors
def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_command_line(build_parser(), argv)
    try:
        return train(args)
    except Preempted as stop:
        raise SystemExit(stop.exit_code) from None


if __name__ == "__main__":
    main()
