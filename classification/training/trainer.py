"""The training loop of ``train.py``: models, steps, validation and every output of one run (or its resumption).

Logged values are read from the device on logging steps only (``--print-every``); a non-finite loss is
tracked on the device every step and stops the run at the next logging step or checkpoint, whichever comes
first, before anything of the diverged weights is written. SIGTERM/SIGUSR1 stop it at the end of the current
step with its checkpoint written (:mod:`classification.training.preemption`).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from classification.distributed import DistributedContext, all_gather_objects, all_reduce_mean, barrier
from classification.errors import UserInputError
from classification import checkpoint as ckpt
from classification.training import run_config
from classification.training.batches import TrainingBatches
from classification.training.ema import add_gradient_clamp_hooks
from classification.training.engine import (TRAIN_METRICS, calibrate_batchnorm, classifier_targets, freeze_batchnorm,
                                            train_step, validate)
from classification.training.model import CorrectColMulti, estimation_view, identity_init_
from classification.training.preemption import Preempted, StopRequests, signal_name
from classification.training.run_log import TrainingLog

log = logging.getLogger("sympie.train")

Validator = Callable[[nn.Module], float]  # NEM -> score, higher is better


def average_floating_buffers(module: nn.Module, ctx: DistributedContext) -> None:
    """Every floating buffer of ``module`` (BatchNorm statistics) replaced by its mean over the processes."""
    if ctx.distributed:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.copy_(all_reduce_mean(buffer, ctx))


class Divergence:
    """The first step whose loss was not finite, tracked on the device (no host synchronisation per step)."""

    NONE = 2**62

    def __init__(self, device: torch.device):
        self.first = torch.full((), self.NONE, dtype=torch.int64, device=device)

    def track(self, step: int, loss: torch.Tensor) -> None:
        self.first = torch.where(torch.isfinite(loss) | (self.first < self.NONE), self.first, step)

    def first_step(self, ctx: DistributedContext) -> int | None:
        """The first non-finite step of any process (collective), or None."""
        first = self.first.clone()
        if ctx.distributed:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        value = int(first.item())
        return None if value == self.NONE else value


@dataclass(frozen=True)
class TrainerSettings:
    """The flags the training loop reads (``train.py``'s ``trainer_settings`` fills it from the command line;
    the data's own flags are :class:`~classification.training.batches.DataSettings`)."""

    classifiers: tuple[str, ...]
    init: str
    labels: str
    distill: str
    temperature: float
    lr: float
    epochs: int
    iters_per_epoch: int
    batch_size: int
    ema_rate: float
    round2_weight: float
    grad_clamp: float
    pixel_weight: float
    pixel_pool: int
    freeze_nem_bn: bool
    bn_calibration_batches: int
    amp: bool
    compile: bool
    seed: int
    logdir: str
    print_every: int
    image_every: int
    export: str | None


class Trainer:
    """Owns the models, optimizer, data and outputs of one run; :meth:`fit` runs (or continues) it.

    ``validators`` score the student's NEM after every epoch besides the held-out split (``{name:
    validator(nem) -> score}``, higher is better; each best is saved as ``best_<name>.pth``). ``record`` is the
    run's recipe as :func:`run_config.recipe` writes it into every checkpoint.
    """

    def __init__(self, settings: TrainerSettings, ctx: DistributedContext, classifiers: Sequence[nn.Module],
                 data: TrainingBatches, record: dict, resume: bool = False,
                 validators: Mapping[str, Validator] | None = None):
        self.settings, self.ctx, self.data, self.record = settings, ctx, data, record
        self.logdir = Path(settings.logdir)
        self.iters = settings.iters_per_epoch
        self.total_steps = settings.epochs * self.iters
        self.validators = dict(validators or {})
        self._build_models(classifiers)
        self.start_step, self.best = 0, {}
        if resume:
            self._load_checkpoint()
        elif settings.freeze_nem_bn and settings.bn_calibration_batches:
            self._calibrate_batchnorm()
        self.model: nn.Module = self.student
        if ctx.distributed:
            device = ctx.device
            self.model = nn.parallel.DistributedDataParallel(
                self.student, device_ids=[device] if device.type == "cuda" else None, forward_sync_buffers=False)
        self.divergence = Divergence(ctx.device)
        self.stops = StopRequests(ctx)
        self.log = (TrainingLog(self.logdir, self.start_step, self.total_steps, self.iters, settings.print_every)
                    if ctx.is_main else None)

    def _build_models(self, classifiers: Sequence[nn.Module]) -> None:
        settings, device = self.settings, self.ctx.device
        torch.manual_seed(settings.seed)  # identical student and teacher initialisations on every process
        self.student = CorrectColMulti([c.to(device) for c in classifiers]).to(device)
        self.teacher = CorrectColMulti(self.student.classifiers).to(device).eval()
        self.teacher.requires_grad_(False)
        if device.type == "cuda":  # the frozen classifiers' convolutions run faster in channels_last
            self.student.classifiers.to(memory_format=torch.channels_last)
        if settings.init == "identity":
            identity_init_(self.student.nem)
            identity_init_(self.teacher.nem)
        self.sync_bn = self.ctx.distributed and device.type == "cuda"
        if self.sync_bn:
            self.student.nem = nn.SyncBatchNorm.convert_sync_batchnorm(self.student.nem)
        elif self.ctx.distributed:
            log.info("SyncBatchNorm needs CUDA: on CPU the batch statistics are per process and the running "
                     "statistics are averaged after every step")
        add_gradient_clamp_hooks(self.student.nem.parameters(), settings.grad_clamp)
        self.optimizer = torch.optim.Adam([p for p in self.student.parameters() if p.requires_grad], lr=settings.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_steps)
        if settings.compile:  # in place: the state_dict keys stay those of the plain modules
            self.student.nem.compile()
            self.teacher.nem.compile()

    # ------------------------------------------------------------------ loop

    def fit(self) -> None:
        """Train from :attr:`start_step` to the end; raises :class:`Preempted` after writing the checkpoint when
        SIGTERM or SIGUSR1 arrive."""
        settings = self.settings
        log.info("training %d epochs x %d iterations, batch %d x %d processes, classifiers %s, from step %d",
                 settings.epochs, self.iters, settings.batch_size, self.ctx.world_size, ", ".join(settings.classifiers),
                 self.start_step)
        try:
            with self.stops.installed():
                self._run()
            if self.ctx.is_main:
                ckpt.save_nem(self.logdir / "final.pth", self.student)
                ckpt.save_nem(self.logdir / "final_ema.pth", self.teacher)
                log.info("done: %s and %s", self.logdir / "final.pth", self.logdir / "final_ema.pth")
                if settings.export:
                    export_half(self.student, Path(settings.export))
                    log.info("exported the final NEM in float16 to %s", settings.export)
        finally:
            if self.log is not None:
                self.log.close()
        barrier(self.ctx)

    def _run(self) -> None:
        step = self.start_step
        while step < self.total_steps:
            for step, batch in self.data.training(step):
                self._train_step(step, *batch)
                if (step + 1) % self.iters:  # an epoch's last step is followed by its validation and checkpoint
                    self._stop_if_asked(step + 1, save=True)
            step += 1
            self._end_of_epoch(step)
            self._stop_if_asked(step, save=False)

    def _train_step(self, step: int, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> None:
        s, ctx = self.settings, self.ctx
        clasid = step % len(self.student.classifiers)
        if s.labels == "classifier":
            y = classifier_targets(self.student.classifiers[clasid], z, s.distill, s.temperature, s.amp)
        if s.freeze_nem_bn:  # every step: validation puts the NEM back in training mode
            freeze_batchnorm(self.student.nem)
        logging_step = (step + 1) % s.print_every == 0 or step + 1 == self.total_steps
        show = bool(s.image_every) and step % s.image_every == 0 and ctx.is_main
        out = train_step(self.model, self.teacher, x, y, z, clasid=clasid, optimizer=self.optimizer,
                         scheduler=self.scheduler, ema_rate=s.ema_rate, round2_weight=s.round2_weight,
                         amp=s.amp, with_metrics=logging_step, keep_visuals=show,
                         sync_buffers=None if self.sync_bn else self._average_student_statistics,
                         temperature=s.temperature, pixel_weight=s.pixel_weight,
                         pixel_pool=s.pixel_pool)
        self.divergence.track(step, out.losses["loss"])
        if logging_step:
            self._stop_if_diverged()
            metrics = all_reduce_mean(torch.stack([out.metrics[k] for k in TRAIN_METRICS]), ctx).tolist()
            if ctx.is_main:
                self.log.scalars(step, dict(zip(TRAIN_METRICS, metrics)), self.scheduler.get_last_lr()[0])
        if show:
            self.log.images(step, out.visuals)

    def _average_student_statistics(self) -> None:
        """Without SyncBatchNorm, keep the processes' running statistics (and so the teachers) identical."""
        average_floating_buffers(self.student.nem, self.ctx)

    def _calibrate_batchnorm(self) -> None:
        """``--freeze-nem-bn``: the student's and the teacher's NEM BatchNorm statistics are the mean over the
        first ``--bn-calibration-batches`` x batch size training crops of epoch 0 (corrupted as in training)."""
        views = [estimation_view(x) for x in self.data.calibration(self.settings.bn_calibration_batches)]
        for model in (self.student, self.teacher):
            calibrate_batchnorm(model.nem, views)
            average_floating_buffers(model.nem, self.ctx)
        log.info("NEM BatchNorm statistics from %d training crops, frozen from now on",
                 len(views) * self.settings.batch_size * self.ctx.world_size)

    def _validation_batches(self):
        for j, (x, y, z) in self.data.validation():
            if self.settings.labels == "classifier":  # accuracy against the classifier's top-1 on the clean crop
                y = classifier_targets(self.student.classifiers[j % len(self.student.classifiers)], z, "hard",
                                       amp=self.settings.amp)
            yield x, y, z

    def _end_of_epoch(self, step: int) -> None:
        """Validation, best checkpoints, the full training checkpoint (after ``step`` steps)."""
        self._stop_if_diverged(check_weights=True)
        metrics = validate(self.student, self._validation_batches(), self.ctx, self.settings.amp)
        scores = {"uw": metrics["dacc_uw"], "uo": metrics["dacc_uo"]}
        scores.update({name: validator(self.student.nem) for name, validator in self.validators.items()})
        improved = [name for name, value in scores.items() if value > self.best.get(name, -math.inf)]
        self.best.update({name: scores[name] for name in improved})
        if self.ctx.is_main:
            log.info("epoch %d/%d validation on %d images: %s%s", step // self.iters, self.settings.epochs,
                     metrics["images"],
                     "  ".join(f"{k} {v:+.2f}" if k in ("uw", "uo") else f"{k} {v:.2f}" for k, v in scores.items()),
                     f"  (new best: {', '.join(improved)})" if improved else "")
            self.log.validation(step, scores)
            for name in improved:
                ckpt.save_nem(self.logdir / f"best_{name}.pth", self.student)
        self._save_checkpoint(step)

    # ------------------------------------------------------------------ stopping

    def _stop_if_asked(self, steps_done: int, save: bool) -> None:
        """SIGTERM/SIGUSR1 on any process: the checkpoint after ``steps_done`` steps (unless just written), then
        :class:`Preempted`."""
        signum = self.stops.agreed()
        if not signum:
            return
        if save:
            self._stop_if_diverged(check_weights=True)
            self._save_checkpoint(steps_done)
        if self.ctx.is_main:
            log.info("%s: %s holds the state after step %d; continue with --resume", signal_name(signum),
                     self.logdir / run_config.CHECKPOINT, steps_done)
        raise Preempted(signum, steps_done)

    def _stop_if_diverged(self, check_weights: bool = False) -> None:
        """A non-finite loss so far, or non-finite weights (``check_weights``): one sentence, nothing written."""
        first = self.divergence.first_step(self.ctx)
        if first is None and check_weights:
            finite = torch.stack([p.isfinite().all() for p in self.student.nem.parameters()]).all()
            if not bool(all_reduce_mean(finite.float(), self.ctx) == 1):
                first = -1
        if first is None:
            return
        path = self.logdir / run_config.CHECKPOINT
        where = f"the last good checkpoint is {path}" if path.exists() else "no checkpoint had been written yet"
        what = (f"the loss became infinite or NaN at step {first + 1}" if first >= 0 else
                "the weights became infinite or NaN")
        raise UserInputError(f"{what} (--lr {self.settings.lr} may be too high): training stopped without writing the "
                             f"diverged weights; {where}.")

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, step: int) -> None:
        state = {  # collective (every process gives its random state)
            "epoch": step // self.iters,
            "step": step,
            "recipe": self.record,
            "student": ckpt.trainable_state(self.student),
            "teacher": ckpt.trainable_state(self.teacher),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": dict(self.best),
            "train_images": len(self.data.train_set),  # the sampler state is (seed, epoch, this count)
            "rng": all_gather_objects(ckpt.rng_state(), self.ctx),
        }
        if self.ctx.is_main:
            ckpt.save_training_checkpoint(self.logdir / run_config.CHECKPOINT, state)
        barrier(self.ctx)

    def _load_checkpoint(self) -> None:
        path = self.logdir / run_config.CHECKPOINT
        state = ckpt.load_training_checkpoint(path)
        ckpt.load_trainable_state(self.student, state["student"], path)
        ckpt.load_trainable_state(self.teacher, state["teacher"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_step, self.best = state["step"], dict(state["best"])
        ckpt.set_rng_state(state["rng"][self.ctx.rank])
        if state["train_images"] != len(self.data.train_set):
            log.warning("the training split had %d images when %s was written and has %d now: the run continues, "
                        "but not with the batches it would have seen", state["train_images"], path,
                        len(self.data.train_set))
        log.info("resumed %s at step %d (epoch %d)", path, self.start_step, self.start_step // self.iters + 1)


def export_half(model: nn.Module, path: Path) -> None:
    """The NEM state_dict of ``model`` with floating tensors in float16, written atomically."""
    ckpt.save_checkpoint({k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
                          for k, v in model.nem.state_dict().items()}, path)
