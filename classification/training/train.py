"""Train SyMPIE on ImageNet with synthetic corruptions, the authors' recipe (README.md in this folder).

    torchrun --nproc-per-node=8 classification/training/train.py --imagenet /data/imagenet/train
    python classification/training/train.py --device cpu --epochs 1 --iters-per-epoch 10 --batch-size 4
    torchrun --nproc-per-node=8 classification/training/train.py --resume      # continue a killed run
    torchrun --nproc-per-node=2 classification/training/train.py --demo        # a minute on CPU, sample photos

Every recipe number is a flag. The log dir (``--logdir``) receives TensorBoard events, ``train.log``,
``run_config.json``, the full training state ``checkpoint.pth`` after every epoch, and the NEM
state_dicts ``best_uw.pth``, ``best_uo.pth``, ``best_city.pth``, ``best_acdc.pth``, ``final.pth`` and
``final_ema.pth`` (all usable as ``--colm``).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from classification.cli import add_classifier_args, add_segmenter_args
from classification.errors import UserInputError, report_user_errors
from classification.imagenet import imagenet_class_index
from classification.atomic import check_output_dir, check_output_file, torch_save
from classification.paths import add_config_argument, dataset_path
from classification.training import checkpointing as ckpt
from classification.distributed import (DistributedContext, all_gather_objects, all_reduce_mean, barrier,
                                        distributed, launched_rank, launched_world_size, use_deterministic_algorithms)
from classification.training.ema import add_gradient_clamp_hooks
from classification.training.engine import (DISTILL_MODES, TRAIN_METRICS, DeviceCorruptions, calibrate_batchnorm,
                                            classifier_targets, freeze_batchnorm, prepare_batch, train_step, validate)
from classification.training.corrupted_folder import (DistortImageFolder, sample_seed, scan_image_folder,
                                                     training_methods)
from classification.training.model import CorrectColMulti, estimation_view, identity_init_
from classification.training.visualize import image_grid, parameter_images
from classification.weights import add_trust_argument
from segmentation.validation import Validator, build_validators

log = logging.getLogger("sympie.train")

TRAIN_PHASE, VAL_PHASE, CALIBRATION_PHASE = 0, 1, 2   # keys of the random streams
# choices of the flags beyond the paper (checked by check_flags: a wrong value gets one sentence); the
# first of each is the default, the paper's behaviour
INITS = ("random", "identity")
LABELS = ("dataset", "classifier")
RECIPES = ("paper", "small")
BN_CALIBRATION_BATCHES = 8  # default of --bn-calibration-batches


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
    add_trust_argument(model)
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
    recipe.add_argument("--freeze-nem-bn", action=argparse.BooleanOptionalAction, default=False,
                        help="keep the NEM's BatchNorm layers in eval mode while training, with the statistics of "
                             "--bn-calibration-batches training batches (beyond the paper)")
    recipe.add_argument("--bn-calibration-batches", type=int, default=BN_CALIBRATION_BATCHES,
                        help="with --freeze-nem-bn: batches whose mean statistics the frozen BatchNorm layers use (0: "
                             "keep the initial mean 0 / variance 1, which shrinks the NEM's features ~10x)")
    recipe.add_argument("--amp", action="store_true", help="bfloat16 autocast (see classification/distributed.py)")

    run = parser.add_argument_group("run")
    run.add_argument("--demo", action="store_true",
                     help="smoke run on the sample photos with effnet_lite0 on CPU (a minute; logs/sympie_demo)")
    run.add_argument("--recipe", default=RECIPES[0],
                     help="'paper' (the flags' defaults) or 'small': the small-scale path on 2 CPU cores, effnet_lite0 "
                          "and the public-domain photos of classification/training/demo_photos/train (explicit "
                          "flags override it; see classification/training/README.md)")
    run.add_argument("--logdir", default="logs/sympie_rerun")
    run.add_argument("--export", metavar="PATH",
                     help="also write the final NEM state_dict in float16 to PATH (half the size; every loader "
                          "casts it back to float32)")
    run.add_argument("--resume", action="store_true", help="continue the run in --logdir from its last checkpoint")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic kernels: slower on GPUs, where they make a run repeatable and --resume "
                          "bit-exact (on the CPU both hold without it)")
    run.add_argument("--print-every", type=int, default=50, help="progress line every N steps")
    run.add_argument("--image-every", type=int, default=500, help="TensorBoard images every N steps (0: never)")
    return parser


def check_flags(args: argparse.Namespace) -> None:
    """Every flag's value and the flags' combinations, each wrong one refused in one sentence."""
    positive = ("epochs", "iters_per_epoch", "batch_size", "max_corruptions", "resize_size", "crop_size", "print_every")
    for name in positive:
        if getattr(args, name) < 1:
            raise UserInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    for name in ("workers", "val_workers", "val_iters", "image_every", "bn_calibration_batches", "seed"):
        if getattr(args, name) < 0:
            raise UserInputError(f"--{name.replace('_', '-')} cannot be negative, got {getattr(args, name)}.")
    for name in ("lr", "grad_clamp", "temperature"):  # written so that NaN fails too
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


def build_classifiers(args: argparse.Namespace) -> list[nn.Module]:
    """The frozen upstream classifiers, built once for the whole run (unknown names fail here)."""
    from classification.classifiers import build_classifier

    return [build_classifier(name, pretrained=not args.random_init, checkpoint_dir=args.classifier_dir,
                             trusted=args.trust_checkpoint) for name in args.classifiers]


class Trainer:
    """Owns the models, optimizer, data and outputs of one run; :meth:`fit` runs (or continues) it.

    ``validators`` score the student's NEM after every epoch besides the held-out split (``{name:
    validator(nem) -> score}``, higher is better; each best is saved as ``best_<name>.pth``).
    """

    def __init__(self, args: argparse.Namespace, ctx: DistributedContext, classifiers: Sequence[nn.Module],
                 image_folder: tuple[list[str], list[tuple[str, int]]], root: Path, resume: bool = False,
                 validators: Mapping[str, Validator] | None = None):
        self.args, self.ctx = args, ctx
        self.logdir = Path(args.logdir)
        self.total_steps = args.epochs * args.iters_per_epoch
        device = ctx.device

        torch.manual_seed(args.seed)  # identical student and teacher initialisations on every process
        self.student = CorrectColMulti([c.to(device) for c in classifiers]).to(device)
        self.teacher = CorrectColMulti(self.student.classifiers).to(device).eval()
        self.teacher.requires_grad_(False)
        if args.init == "identity":
            identity_init_(self.student.nem)
            identity_init_(self.teacher.nem)
        self.sync_bn = ctx.distributed and device.type == "cuda"
        if self.sync_bn:
            self.student.nem = nn.SyncBatchNorm.convert_sync_batchnorm(self.student.nem)
        elif ctx.distributed:
            log.info("SyncBatchNorm needs CUDA: on CPU the batch statistics are per process and the running "
                     "statistics are averaged after every step")
        add_gradient_clamp_hooks(self.student.nem.parameters(), args.grad_clamp)
        self.optimizer = torch.optim.Adam([p for p in self.student.parameters() if p.requires_grad], lr=args.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_steps)

        methods = training_methods(args.no_color, args.corruptions)
        common = dict(methods=methods, max_corruptions=args.max_corruptions, resize_size=args.resize_size,
                      crop_size=args.crop_size, corrupt_in_loader=not args.gpu_corruptions, scan=image_folder,
                      clean_fraction=args.clean_fraction, labelled=args.labels == "dataset")
        self.train_set = DistortImageFolder(root, "train", seed=args.seed, **common)
        self.val_set = DistortImageFolder(root, "val", seed=sample_seed(args.seed, VAL_PHASE), **common)
        self.train_sampler, self.train_loader = self._loader(self.train_set, args.workers)
        self.val_sampler, self.val_loader = self._loader(self.val_set, args.val_workers)
        self.passes_per_epoch = math.ceil(args.iters_per_epoch / len(self.train_loader))
        self.corruptions = (DeviceCorruptions(methods, args.max_corruptions, args.seed, args.clean_fraction)
                            if args.gpu_corruptions else None)
        self.validators = dict(validators or {})

        self.start_epoch, self.best = 0, {}
        if resume:
            self._load_checkpoint()
        elif args.freeze_nem_bn and args.bn_calibration_batches:
            self._calibrate_batchnorm()
        self.model: nn.Module = self.student
        if ctx.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.student, device_ids=[device] if device.type == "cuda" else None, forward_sync_buffers=False)
        self.writer = None
        if ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # on resume, drop the events logged after the checkpoint by the interrupted process (all of them when
            # it was killed before its first checkpoint)
            self.writer = SummaryWriter(str(self.logdir),
                                        purge_step=self.start_epoch * args.iters_per_epoch if args.resume else None)

    def _loader(self, dataset: DistortImageFolder, workers: int) -> tuple[DistributedSampler, DataLoader]:
        sampler = DistributedSampler(dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank, shuffle=True,
                                     seed=self.args.seed, drop_last=True)
        loader = DataLoader(dataset, batch_size=self.args.batch_size, sampler=sampler, num_workers=workers,
                            pin_memory=self.ctx.device.type == "cuda", drop_last=True)
        return sampler, loader

    # ------------------------------------------------------------------ loop

    def fit(self) -> None:
        args = self.args
        log.info("training %d epochs x %d iterations, batch %d x %d processes, classifiers %s, from epoch %d",
                 args.epochs, args.iters_per_epoch, args.batch_size, self.ctx.world_size,
                 ", ".join(args.classifiers), self.start_epoch)
        self.started, self.first_step = time.monotonic(), self.start_epoch * args.iters_per_epoch
        for epoch in range(self.start_epoch, args.epochs):
            self.train_epoch(epoch)
            self.end_of_epoch(epoch)
        if self.ctx.is_main:
            ckpt.save_nem(self.logdir / "final.pth", self.student)
            ckpt.save_nem(self.logdir / "final_ema.pth", self.teacher)
            self.writer.close()
            log.info("done: %s and %s", self.logdir / "final.pth", self.logdir / "final_ema.pth")
            if args.export:
                export_half(self.student, Path(args.export))
                log.info("exported the final NEM in float16 to %s", args.export)
        barrier(self.ctx)

    def train_epoch(self, epoch: int) -> None:
        args, ctx = self.args, self.ctx
        for i, batch in enumerate(self.epoch_batches(epoch)):
            step = epoch * args.iters_per_epoch + i
            x, y, z = prepare_batch(batch, ctx.device, self.corruptions, TRAIN_PHASE, ctx.rank, step)
            clasid = step % len(self.student.classifiers)
            if args.labels == "classifier":
                y = classifier_targets(self.student.classifiers[clasid], z, args.distill, args.temperature, args.amp)
            if args.freeze_nem_bn:  # every step: validation puts the NEM back in training mode
                freeze_batchnorm(self.student.nem)
            show = bool(args.image_every) and step % args.image_every == 0 and ctx.is_main
            out = train_step(self.model, self.teacher, x, y, z, clasid=clasid,
                             optimizer=self.optimizer, scheduler=self.scheduler, ema_rate=args.ema_rate,
                             round2_weight=args.round2_weight, amp=args.amp,
                             keep_visuals=show, sync_buffers=self._average_batchnorm_statistics,
                             temperature=args.temperature, pixel_weight=args.pixel_weight)
            metrics = all_reduce_mean(torch.stack([out.metrics[k] for k in TRAIN_METRICS]), ctx).tolist()
            if ctx.is_main:
                self._log_step(step, dict(zip(TRAIN_METRICS, metrics)), out.visuals)

    def epoch_batches(self, epoch: int) -> Iterator:
        """``iters_per_epoch`` batches; a loader shorter than that is gone through again (a new shuffle)."""
        produced = 0
        for p in range(self.passes_per_epoch):
            stream = epoch * self.passes_per_epoch + p
            self.train_sampler.set_epoch(stream)
            self.train_set.set_epoch(stream)
            for batch in worker_errors_in_one_sentence(self.train_loader):
                yield batch
                produced += 1
                if produced == self.args.iters_per_epoch:
                    return

    def _calibrate_batchnorm(self) -> None:
        """``--freeze-nem-bn``: the student's and the teacher's NEM BatchNorm statistics are the mean over the
        first ``--bn-calibration-batches`` x batch size training crops of epoch 0 (corrupted as in training)."""
        size, rank, world = self.args.batch_size, self.ctx.rank, self.ctx.world_size
        self.train_set.set_epoch(0)
        views = []
        for j in range(self.args.bn_calibration_batches):
            first = (j * world + rank) * size
            items = [self.train_set[(first + k) % len(self.train_set)] for k in range(size)]
            x, _, _ = prepare_batch(default_collate(items), self.ctx.device, self.corruptions, CALIBRATION_PHASE,
                                    rank, j)
            views.append(estimation_view(x))
        for model in (self.student, self.teacher):
            calibrate_batchnorm(model.nem, views)
            if self.ctx.distributed:
                for buffer in model.nem.buffers():
                    if buffer.is_floating_point():
                        buffer.copy_(all_reduce_mean(buffer, self.ctx))
        log.info("NEM BatchNorm statistics from %d training crops, frozen from now on", len(views) * size * world)

    def _average_batchnorm_statistics(self) -> None:
        """Without SyncBatchNorm, keep the processes' running statistics (and so the teachers) identical."""
        if not self.ctx.distributed or self.sync_bn:
            return
        for buffer in self.student.nem.buffers():
            if buffer.is_floating_point():
                buffer.copy_(all_reduce_mean(buffer, self.ctx))

    def validation_batches(self) -> Iterator:
        """The held-out split, the same crops and corruptions every epoch."""
        self.val_sampler.set_epoch(0)
        for j, batch in enumerate(worker_errors_in_one_sentence(self.val_loader)):
            if self.args.val_iters and j == self.args.val_iters:
                return
            x, y, z = prepare_batch(batch, self.ctx.device, self.corruptions, VAL_PHASE, self.ctx.rank, j)
            if self.args.labels == "classifier":  # accuracy against the classifier's top-1 on the clean crop
                y = classifier_targets(self.student.classifiers[j % len(self.student.classifiers)], z, "hard",
                                       amp=self.args.amp)
            yield x, y, z

    def end_of_epoch(self, epoch: int) -> None:
        """Validation, best checkpoints, the full training checkpoint."""
        metrics = validate(self.student, self.validation_batches(), self.ctx, self.args.amp)
        scores = {"uw": metrics["dacc_uw"], "uo": metrics["dacc_uo"]}
        scores.update({name: validator(self.student.nem) for name, validator in self.validators.items()})
        step = (epoch + 1) * self.args.iters_per_epoch
        improved = [name for name, value in scores.items() if value > self.best.get(name, -math.inf)]
        self.best.update({name: scores[name] for name in improved})
        state = self._training_state(epoch + 1)  # collective: every process takes part
        if self.ctx.is_main:
            log.info("epoch %d/%d validation on %d images: %s%s", epoch + 1, self.args.epochs, metrics["images"],
                     "  ".join(f"{k} {v:+.2f}" if k in ("uw", "uo") else f"{k} {v:.2f}" for k, v in scores.items()),
                     f"  (new best: {', '.join(improved)})" if improved else "")
            tags = {"uw": "val/dacc_uw", "uo": "val/dacc_uo"}
            for name, value in scores.items():
                self.writer.add_scalar(tags.get(name, f"val/{name}"), value, step)
            for name in improved:
                ckpt.save_nem(self.logdir / f"best_{name}.pth", self.student)
            ckpt.save_training_checkpoint(self.logdir / ckpt.CHECKPOINT, state)
            self.writer.flush()
        barrier(self.ctx)

    # ------------------------------------------------------------------ outputs

    def _log_step(self, step: int, metrics: dict[str, float], visuals: dict[str, torch.Tensor]) -> None:
        w = self.writer
        w.add_scalar("train/lr", self.scheduler.get_last_lr()[0], step)
        w.add_scalar("train/loss", metrics["loss"], step)
        w.add_scalar("train/ce/round1", metrics["ce_round1"], step)
        w.add_scalar("train/ce/round2", metrics["ce_round2"], step)
        for name in ("original", "warped", "unwarped"):
            w.add_scalar(f"train/acc/{name}", metrics[f"acc_{name}"], step)
        w.add_scalar("train/dacc_uw", metrics["acc_unwarped"] - metrics["acc_warped"], step)
        w.add_scalar("train/dacc_uo", metrics["acc_unwarped"] - metrics["acc_original"], step)
        if visuals:
            for name in ("input", "teacher_corrected", "student_round1", "student_round2"):
                w.add_image(f"images/{name}", image_grid(visuals[name]), step)
            for name, image in parameter_images(visuals["params"]).items():
                w.add_image(f"params/{name}", image, step)
        done = step + 1
        if done % self.args.print_every == 0 or done == self.total_steps:
            elapsed = time.monotonic() - self.started
            rate = (done - self.first_step) / max(elapsed, 1e-9)
            eta = (self.total_steps - done) / max(rate, 1e-9)
            log.info("step %d/%d (epoch %d)  loss %.3f  acc orig/warped/unwarped %.1f/%.1f/%.1f  lr %.2e  "
                     "%.2f it/s  eta %s", done, self.total_steps, step // self.args.iters_per_epoch + 1,
                     metrics["loss"], metrics["acc_original"], metrics["acc_warped"], metrics["acc_unwarped"],
                     self.scheduler.get_last_lr()[0], rate, format_duration(eta))

    def _training_state(self, epochs_done: int) -> dict:
        return {
            "epoch": epochs_done,
            "step": epochs_done * self.args.iters_per_epoch,
            "recipe": ckpt.recipe(self.args, self.ctx.world_size),
            "student": ckpt.trainable_state(self.student),
            "teacher": ckpt.trainable_state(self.teacher),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": dict(self.best),
            "train_images": len(self.train_set),  # the sampler state is (seed, epoch, this count)
            "rng": all_gather_objects(ckpt.rng_state(), self.ctx),
        }

    def _load_checkpoint(self) -> None:
        path = self.logdir / ckpt.CHECKPOINT
        state = ckpt.load_training_checkpoint(path)
        ckpt.load_trainable_state(self.student, state["student"], path)
        ckpt.load_trainable_state(self.teacher, state["teacher"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch, self.best = state["epoch"], dict(state["best"])
        ckpt.set_rng_state(state["rng"][self.ctx.rank])
        if state["train_images"] != len(self.train_set):
            log.warning("the training split had %d images when %s was written and has %d now: the run continues, "
                        "but not with the batches it would have seen", state["train_images"], path,
                        len(self.train_set))
        log.info("resumed %s at epoch %d (step %d)", path, self.start_epoch, state["step"])


def worker_errors_in_one_sentence(loader: Iterable) -> Iterator:
    """The batches of ``loader``; a UserInputError raised in a DataLoader worker (e.g. a folder of undecodable
    images), which DataLoader re-raises with the worker's traceback as its message, is reduced to its sentence."""
    try:
        yield from loader
    except UserInputError as err:
        lines = str(err).strip().splitlines()
        if len(lines) == 1:
            raise
        raise UserInputError(lines[-1].split("UserInputError: ", 1)[-1]) from None


def export_half(model: nn.Module, path: Path) -> None:
    """The NEM state_dict of ``model`` with floating tensors in float16, written atomically."""
    torch_save({k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
                for k, v in model.nem.state_dict().items()}, path)


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    text = time.strftime("%H:%M:%S", time.gmtime(rest))
    return f"{days}d {text}" if days else text


LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
STDERR_HANDLER = "sympie.train.stderr"  # the name of the handler setup_logging adds


def setup_logging() -> None:
    """Rank 0 logs INFO to stderr, the other processes only warnings (each line once, however often
    :func:`main` runs in a process: the handler of an earlier call is replaced)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == STDERR_HANDLER]:
        root.removeHandler(old)
    handler = logging.StreamHandler()
    handler.set_name(STDERR_HANDLER)
    handler.setFormatter(LOG_FORMAT)
    root.addHandler(handler)
    root.setLevel(logging.INFO if launched_rank() == 0 else logging.WARNING)


@contextlib.contextmanager
def run_logging(logdir: Path, is_main: bool) -> Iterator[None]:
    """For the duration of a run: INFO on rank 0 (WARNING elsewhere), and rank 0's log in ``logdir/train.log``."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    handler = None
    if is_main:
        logdir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logdir / "train.log")
        handler.setFormatter(LOG_FORMAT)
        root.addHandler(handler)
    try:
        yield
    finally:
        root.setLevel(level)
        if handler is not None:
            root.removeHandler(handler)
            handler.close()


def train(args: argparse.Namespace, classifiers: Sequence[nn.Module] | None = None,
          build: Callable[[argparse.Namespace], Sequence[nn.Module]] = build_classifiers) -> Path:
    """Run (or resume) the training described by ``args``; returns the log dir.

    The flags, the data folder and the output paths are checked before the classifiers are built and the
    process group starts; ``run_config.json``, which marks the log dir as holding a run, is written only
    once the trainer is built. ``classifiers`` may be given directly (tests, demos); otherwise
    ``build(args)`` makes them.
    """
    check_flags(args)
    if args.deterministic:
        use_deterministic_algorithms()
    world_size = launched_world_size()
    root = dataset_path("imagenet", args.config, args.imagenet)
    image_folder = scan_image_folder(root, labelled=args.labels == "dataset")
    check_split_sizes(image_folder, args, world_size, root)
    logdir = Path(args.logdir)
    check_output_dir(logdir, "--logdir")
    resume = ckpt.check_logdir(logdir, args, world_size)
    if args.resume and not resume:
        if not (logdir / ckpt.RUN_CONFIG).exists():  # not even the start of a run: most likely a mistyped folder
            raise UserInputError(f"--resume: log dir {logdir} holds no run to continue (no {ckpt.CHECKPOINT}); check "
                                 f"--logdir, or drop --resume to start a new run there.")
        log.info("--resume: %s holds no checkpoint yet, starting from scratch", logdir / ckpt.CHECKPOINT)
    if args.export:
        check_output_file(args.export, "--export")
    if classifiers is None:
        classifiers = build(args)
    with distributed(args.device) as ctx, run_logging(logdir, ctx.is_main):
        if ctx.is_main and args.labels == "dataset" and image_folder[0] != sorted(imagenet_class_index()):
            log.warning("%s does not hold ImageNet's 1000 class folders (it has %d): the i-th folder in sorted order "
                        "is taken as the classifier's class i; pass --labels classifier to train on other photos",
                        root, len(image_folder[0]))
        validators = build_validators(args.seg_checkpoint, {"city": args.cityscapes, "acdc": args.acdc}, args.config,
                                      args.val_workers, ctx.device, trusted=args.trust_checkpoint)
        trainer = Trainer(args, ctx, classifiers, image_folder, root, resume=resume, validators=validators)
        if ctx.is_main:  # only now, so that a wrong segmentation checkpoint leaves no run behind
            ckpt.write_run_config(logdir, args, world_size)
        trainer.fit()
    return logdir


def check_split_sizes(image_folder: tuple[list[str], list[tuple[str, int]]], args: argparse.Namespace,
                      world_size: int, root: Path) -> None:
    """Both splits must give every process at least one full batch."""
    images = len(image_folder[1])
    val = math.ceil(images / 50)
    needed = args.batch_size * world_size
    if min(images - val, val) < needed:
        raise UserInputError(f"ImageNet folder {root} has {images} images ({images - val} train, {val} validation: "
                             f"one in 50); each split needs at least batch size x processes = {needed}.")


@report_user_errors
def main(argv: Sequence[str] | None = None) -> Path:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo and args.recipe != RECIPES[0]:
        raise UserInputError(f"--demo is a smoke run of the paper's recipe, so it cannot be combined with --recipe "
                             f"{args.recipe}; drop one of the two.")
    if args.demo:
        from classification.training.demo import parse_demo_arguments

        args = parse_demo_arguments(parser, args, argv)
    elif args.recipe == "small":
        from classification.training.small import parse_small_arguments

        args = parse_small_arguments(parser, argv)
    setup_logging()
    return train(args)


if __name__ == "__main__":
    main()
