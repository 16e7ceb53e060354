"""One training step and one validation pass of SyMPIE (the recipe: classification/training/README.md).

The student is a :class:`CorrectColMulti` (possibly wrapped in DistributedDataParallel), the teacher
an independently initialised copy in eval mode, kept as an exponential moving average of the student.
Accuracies follow the authors' names: ``original`` = classifier on the clean crop, ``warped`` =
classifier on the corrupted crop, ``unwarped`` = classifier on the student-corrected crop.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from classification.normalization import normalize
from classification.distributed import DistributedContext, autocast, sum_over_processes, unwrap
from classification.frozen import eval_mode
from classification.training.ema import ema_update
from classification.training.corrupted_folder import distort_batch, sample_seed
from classification.training.model import CorrectColMulti

def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy in percent (a 0-dim tensor, no host sync)."""
    return (logits.argmax(1) == labels).float().mean() * 100


@dataclass
class DeviceCorruptions:
    """The loader's random corruptions, applied batched on the device inside the step (``--gpu-corruptions``).

    Every call is keyed (e.g. by phase, rank and step), so a resumed run draws the same corruptions.
    """

    methods: Sequence[str]
    max_corruptions: int
    seed: int
    clean_fraction: float = 0.0

    def __call__(self, crops: torch.Tensor, *keys: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 crops (B,3,H,W) -> (corrupted, clean), both ImageNet-normalised float."""
        seed = sample_seed(self.seed, *keys)
        generator = torch.Generator(device=crops.device).manual_seed(seed % 2**63)
        clean = crops.float().div_(255)
        corrupted = distort_batch(clean, random.Random(seed), self.methods, self.max_corruptions, generator,
                                  self.clean_fraction)
        return normalize(corrupted), normalize(clean)


def prepare_batch(batch: Sequence, device: torch.device, corruptions: DeviceCorruptions | None,
                  *keys: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loader output -> (corrupted, labels, clean) on ``device``; corrupts uint8 crops when asked to."""
    if corruptions is None:
        x, y, z = batch
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True), z.to(device, non_blocking=True)
    crops, y = batch
    x, z = corruptions(crops.to(device, non_blocking=True), *keys)
    return x, y.to(device, non_blocking=True), z


DISTILL_MODES = ("hard", "kl")


@torch.no_grad()
def classifier_targets(classifier: nn.Module, clean: torch.Tensor, distill: str = "hard", temperature: float = 1.0,
                       amp: bool = False) -> torch.Tensor:
    """The target of ``--labels classifier`` (beyond the paper): the frozen classifier's own output on the
    clean crop, as its top-1 class indices (``hard``, (B,)) or its softmax at ``temperature`` (``kl``, (B,C))."""
    if distill not in DISTILL_MODES:
        raise ValueError(f"distill must be one of {DISTILL_MODES}, got {distill!r}")
    with autocast(clean.device, amp):
        logits = classifier(clean).to(clean.dtype)
    return logits.argmax(1) if distill == "hard" else F.softmax(logits / temperature, 1)


def target_loss(logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy to class indices (the paper's loss), or for a (B,C) probability target the distillation
    loss ``T^2 * KL(target || softmax(logits / T))`` (batch mean)."""
    if not target.is_floating_point():
        return F.cross_entropy(logits, target)
    log_probs = F.log_softmax(logits / temperature, 1)
    return F.kl_div(log_probs, target.to(log_probs.dtype), reduction="batchmean") * temperature ** 2


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    """Class indices of a target: itself, or the argmax of a probability target."""
    return target.argmax(1) if target.is_floating_point() else target


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm(module: nn.Module) -> None:
    """Every BatchNorm layer of ``module`` in eval mode: running statistics used and left unchanged
    (``train.py --freeze-nem-bn``, beyond the paper)."""
    for m in batchnorm_layers(module):
        m.eval()


@torch.no_grad()
def calibrate_batchnorm(module: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Set the running statistics of every BatchNorm layer of ``module`` to the plain mean over ``batches``
    (forward passes in training mode, nothing else changes), as ``--freeze-nem-bn`` does before it freezes
    them: a freshly initialised NEM's statistics (mean 0, variance 1) would shrink its features ~10x."""
    layers = batchnorm_layers(module)
    momenta = [m.momentum for m in layers]
    was_training = module.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    module.train()
    try:
        for x in batches:
            module(x)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        module.train(was_training)


def pixel_loss(corrected: torch.Tensor, clean: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """Mean squared error between the corrected and the clean crop after a ``pool`` x ``pool`` average pool
    (``train.py --pixel-pool``; 1: every pixel). Pooling keeps the colours and drops what a per-image
    kernel cannot undo anyway (noise, fine detail), so the loss asks for colour correction alone."""
    if pool > 1:
        corrected, clean = F.avg_pool2d(corrected, pool, ceil_mode=True), F.avg_pool2d(clean, pool, ceil_mode=True)
    return F.mse_loss(corrected, clean)


TRAIN_LOSSES = ("loss", "ce_round1", "ce_round2")
TRAIN_METRICS = (*TRAIN_LOSSES, "acc_original", "acc_warped", "acc_unwarped")


@dataclass
class StepOutput:
    """One step's per-process results, 0-dim tensors left on the device (reading them is a host
    synchronisation): the losses always, ``metrics`` (the losses and the accuracies of
    :data:`TRAIN_METRICS`) only on request, and on request the tensors to visualise."""

    losses: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    visuals: dict[str, torch.Tensor] = field(default_factory=dict)


def train_step(student: nn.Module, teacher: CorrectColMulti, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
               *, clasid: int, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               ema_rate: float = 0.9, round2_weight: float = 0.5, amp: bool = False, with_metrics: bool = True,
               keep_visuals: bool = False, sync_buffers: Callable[[], None] | None = None,
               temperature: float = 1.0, pixel_weight: float = 0.0, pixel_pool: int = 1) -> StepOutput:
    """Two rounds (``ce1`` on the corrupted input, ``round2_weight * ce2`` on the teacher-corrected input),
    one optimizer and scheduler step, then the EMA update of the teacher. With ``round2_weight == 0`` the
    teacher's pass and round 2 are skipped (``ce2`` reads 0). The teacher computes only the corrected image.

    ``y`` is the target of both rounds: class indices (the paper's cross-entropy) or (B,C) probabilities
    (distillation at ``temperature``, see :func:`target_loss`). ``pixel_weight`` > 0 adds that times
    :func:`pixel_loss` between the round-1 corrected crop and the clean crop ``z`` (beyond the paper).

    ``with_metrics`` adds the accuracies, which cost two more forward passes of the classifier (on the
    corrupted and the clean crop): the training loop asks for them on logging steps only. Nothing here
    synchronises with the host. ``sync_buffers``, if given, runs just before the EMA update (to make the
    student's BatchNorm statistics identical across processes when there is no SyncBatchNorm).
    """
    core = unwrap(student)
    if round2_weight:
        with torch.no_grad(), autocast(x.device, amp):
            teacher_corrected = teacher.apply(x, teacher.estimate(x))
        teacher_corrected = teacher_corrected.to(x.dtype)  # the input precision (autocast may give bf16)

    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, amp):
        logits1, params1, corrected1 = student(x, clasid)
    ce1 = target_loss(logits1.to(x.dtype), y, temperature)
    if pixel_weight:
        (ce1 + pixel_weight * pixel_loss(corrected1.to(x.dtype), z, pixel_pool)).backward()
    else:
        ce1.backward()
    if round2_weight:
        with autocast(x.device, amp):
            logits2, _, corrected2 = student(teacher_corrected, clasid)
        ce2 = target_loss(logits2.to(x.dtype), y, temperature)
        (round2_weight * ce2).backward()
    else:
        ce2, teacher_corrected, corrected2 = torch.zeros_like(ce1), x, corrected1
    optimizer.step()
    scheduler.step()
    if sync_buffers is not None:
        sync_buffers()
    ema_update(teacher, core, ema_rate)

    out = StepOutput({"loss": (ce1 + ce2).detach(), "ce_round1": ce1.detach(), "ce_round2": ce2.detach()})
    if with_metrics:
        out.metrics = {**out.losses, **step_accuracies(core.classifiers[clasid], x, z, logits1.detach(), y, amp)}
    if keep_visuals:
        out.visuals = {"input": x, "teacher_corrected": teacher_corrected, "student_round1": corrected1.detach(),
                       "student_round2": corrected2.detach(), "params": params1.detach()}
    return out


@torch.no_grad()
def step_accuracies(classifier: nn.Module, x: torch.Tensor, z: torch.Tensor, logits_unwarped: torch.Tensor,
                    target: torch.Tensor, amp: bool) -> dict[str, torch.Tensor]:
    """The logged accuracies of one step: the classifier on the clean crop ``z``, on the corrupted crop ``x``,
    and (``logits_unwarped``, already computed) on the student-corrected crop."""
    with autocast(x.device, amp):
        logits_warped = classifier(x)
        logits_original = classifier(z)
    labels = hard_labels(target)
    return {"acc_original": accuracy(logits_original, labels), "acc_warped": accuracy(logits_warped, labels),
            "acc_unwarped": accuracy(logits_unwarped, labels)}


@torch.no_grad()
def validate(student: CorrectColMulti, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
             ctx: DistributedContext, amp: bool = False) -> dict[str, float]:
    """Mean accuracies and their deltas over ``batches`` of every process (batch ``j`` uses classifier
    ``j % n``), with the NEM alone in eval mode, as the authors' ``colm.eval()``: BatchNorm on its running
    statistics, which stay untouched, and the Clamp in its own mode. Every NEM layer's mode is restored after
    (layers kept in eval mode during training stay so), and the student's parameters and buffers are left
    exactly as they were."""
    with eval_mode(student.nem):
        return _validate(student, batches, ctx, amp)


def _validate(student: CorrectColMulti, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
              ctx: DistributedContext, amp: bool) -> dict[str, float]:
    counts = torch.zeros(4, dtype=torch.float64, device=ctx.device)  # images, unwarped, warped, original
    num_classifiers = len(student.classifiers)
    for j, (x, y, z) in enumerate(batches):
        clasid = j % num_classifiers
        classifier = student.classifiers[clasid]
        with autocast(x.device, amp):
            logits_unwarped, _, _ = student(x, clasid)
            logits_warped = classifier(x)
            logits_original = classifier(z)
        counts += torch.stack([
            torch.tensor(float(y.numel()), device=ctx.device),
            (logits_unwarped.argmax(1) == y).sum().double(),
            (logits_warped.argmax(1) == y).sum().double(),
            (logits_original.argmax(1) == y).sum().double(),
        ])
    sum_over_processes(counts)
    images = counts[0].item()
    unwarped, warped, original = (100 * counts[1:] / max(images, 1)).tolist()
    return {"acc_unwarped": unwarped, "acc_warped": warped, "acc_original": original,
            "dacc_uw": unwarped - warped, "dacc_uo": unwarped - original, "images": images}
