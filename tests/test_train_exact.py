"""The training step moves the weights exactly as the original step did.

``original_train_step`` is a frozen copy of the step as it was before the step was made lighter (the
teacher ran its classifier and threw the logits away; the accuracies were computed every step). It exists
only here, as the reference: the student's and the teacher's NEMs, the optimizer state and the returned
losses of :func:`train_step` must equal its results bit for bit, in float64 on the CPU, over several steps,
in every branch of the recipe (two rounds, one round, pixel loss, distillation targets, two classifiers).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from classification.distributed import autocast, unwrap
from classification.training.ema import add_gradient_clamp_hooks, ema_update
from classification.training.engine import DeviceCorruptions, prepare_batch, target_loss, train_step
from classification.training import model
from classification.training.model import CorrectColMulti


def original_train_step(student, teacher, x, y, z, *, clasid, optimizer, scheduler, ema_rate=0.9, round2_weight=0.5,
                        amp=False, temperature=1.0, pixel_weight=0.0):
    """The weight updates of the original ``train_step`` (its metrics and visuals left out)."""
    core = unwrap(student)
    if round2_weight:
        with torch.no_grad(), autocast(x.device, amp):
            _, _, teacher_corrected = teacher(x, clasid)
        teacher_corrected = teacher_corrected.to(x.dtype)
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, amp):
        logits1, params1, corrected1 = student(x, clasid)
    ce1 = target_loss(logits1.to(x.dtype), y, temperature)
    if pixel_weight:
        (ce1 + pixel_weight * F.mse_loss(corrected1.to(x.dtype), z)).backward()
    else:
        ce1.backward()
    if round2_weight:
        with autocast(x.device, amp):
            logits2, _, corrected2 = student(teacher_corrected, clasid)
        ce2 = target_loss(logits2.to(x.dtype), y, temperature)
        (round2_weight * ce2).backward()
    else:
        ce2 = torch.zeros_like(ce1)
    optimizer.step()
    scheduler.step()
    ema_update(teacher, core, ema_rate)
    return ce1.detach(), ce2.detach()


def tiny_classifier(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 10))


def training_setup(seed: int = 0):
    """Student, teacher, Adam and the cosine schedule as train.py builds them, in float64."""
    student = CorrectColMulti([tiny_classifier(1), tiny_classifier(2)]).double()
    torch.manual_seed(seed)
    teacher = CorrectColMulti(student.classifiers).double().eval().requires_grad_(False)  # its own initialisation
    add_gradient_clamp_hooks(student.nem.parameters(), 1.0)
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=8)
    return student, teacher, optimizer, scheduler


@pytest.fixture(autouse=True)
def small_estimation_view(monkeypatch):
    """The NEM sees 64x64 views instead of 224x224 ones (the same arithmetic, 12 times faster)."""
    monkeypatch.setattr(model, "ESTIMATION_SIZE", 64)
    monkeypatch.setattr(model, "ESTIMATION_RESIZE", 72)


def batches(steps: int, distill: bool):
    corruptions = DeviceCorruptions(["darken", "contrast", "gaussian_noise", "defocus_blur"], 2, seed=3)
    generator = torch.Generator().manual_seed(5)
    for step in range(steps):
        crops = torch.randint(0, 256, (2, 3, 60, 76), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (2,), generator=generator)
        x, y, z = prepare_batch((crops, labels), torch.device("cpu"), corruptions, 0, 0, step)
        if distill:
            y = F.softmax(torch.randn(2, 10, generator=generator, dtype=torch.float64), 1)
        yield x.double(), y, z.double()


@pytest.mark.parametrize("round2_weight, pixel_weight, distill", [
    (0.5, 0.0, False),  # the paper's recipe
    pytest.param(0.0, 0.0, False, marks=pytest.mark.slow),  # one round (the small recipe)
    pytest.param(0.5, 0.3, True, marks=pytest.mark.slow),   # pixel loss and a probability target
])
def test_train_step_moves_the_weights_exactly_as_the_original(round2_weight, pixel_weight, distill):
    new, old = training_setup(), training_setup()
    assert all(torch.equal(a, b) for a, b in zip(new[0].state_dict().values(), old[0].state_dict().values()))
    flags = dict(round2_weight=round2_weight, pixel_weight=pixel_weight, temperature=2.0 if distill else 1.0,
                 ema_rate=0.8)
    for step, (x, y, z) in enumerate(batches(3, distill)):
        log = step % 2 == 1  # the new step computes its metrics on logging steps only
        out = train_step(new[0], new[1], x, y, z, clasid=step % 2, optimizer=new[2], scheduler=new[3],
                         with_metrics=log, **flags)
        ce1, ce2 = original_train_step(old[0], old[1], x.clone(), y.clone(), z.clone(), clasid=step % 2,
                                       optimizer=old[2], scheduler=old[3], **flags)
        assert torch.equal(out.losses["ce_round1"], ce1) and torch.equal(out.losses["ce_round2"], ce2)
        assert bool(out.metrics) == log
    for name in ("nem", "clamp"):
        for model_new, model_old in ((new[0], old[0]), (new[1], old[1])):
            for (key, a), (_, b) in zip(getattr(model_new, name).state_dict().items(),
                                        getattr(model_old, name).state_dict().items()):
                assert a.dtype == torch.float64 or not a.is_floating_point()
                assert torch.equal(a, b), f"{name}.{key} moved differently"
    state_new, state_old = new[2].state_dict()["state"], old[2].state_dict()["state"]
    for index in state_old:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state_new[index][key], state_old[index][key])
    assert new[3].last_epoch == old[3].last_epoch == 3
