"""Per-epoch validation as the authors run it (NEM alone in eval mode), and one training step checked in
float64 against the recipe written out by hand (two rounds, per-backward gradient clamp, Adam, cosine, EMA)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from classification.distributed import DistributedContext
from classification.training.ema import add_gradient_clamp_hooks
from classification.training.engine import train_step, validate
from classification.training.model import CorrectColMulti

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = DistributedContext(rank=0, world_size=1, device=torch.device("cpu"))


class Recording(nn.Module):
    """A classifier with BatchNorm that remembers every output it produced."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(16, num_classes))
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.outputs.append(out)
        return out


def trained_student() -> CorrectColMulti:
    """A training-mode student whose NEM running statistics are not the initial ones (so eval mode shows)."""
    student = CorrectColMulti([Recording()]).train()
    with torch.no_grad():
        for _ in range(3):
            student(torch.randn(4, 3, 224, 224) * 2 + 0.5)
    student.classifiers[0].outputs.clear()
    return student


def batches(n: int = 2):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(3, 3, 224, 224, generator=generator), torch.randint(0, 10, (3,), generator=generator),
             torch.randn(3, 3, 224, 224, generator=generator)) for _ in range(n)]


def test_validation_leaves_every_parameter_and_buffer_unchanged_and_restores_training_mode():
    student = trained_student()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    validate(student, batches(), CPU)
    after = student.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"validation changed {key}"
    assert all(m.training for m in student.nem.modules()), "the NEM must be back in training mode"
    assert student.clamp.training, "the student's Clamp stays in training mode (identity)"


def test_validation_logits_are_those_of_the_nem_in_eval_mode_with_identity_clamp():
    student = trained_student()
    data = batches(1)
    validate(student, data, CPU)
    logits_unwarped = student.classifiers[0].outputs[0]  # per batch: unwarped, warped, original
    student.classifiers[0].outputs.clear()

    reference = copy.deepcopy(student)
    reference.nem.eval()
    x = data[0][0]
    with torch.no_grad():
        params = reference.nem(x)
        expected = reference.classifiers[0](reference.warp(x, params))  # Clamp in training mode: identity
        training_mode = copy.deepcopy(student).train()(x)[0]
    torch.testing.assert_close(logits_unwarped, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(logits_unwarped, training_mode, atol=1e-3), "batch statistics were used"


def recipe_step(student: CorrectColMulti, teacher: CorrectColMulti, x, y, optimizer, scheduler,
                ema_rate: float = 0.9, round2_weight: float = 0.5, threshold: float = 1.0) -> torch.Tensor:
    """The recipe written out without the project's helpers: each backward's gradient clamped per parameter."""
    params = [p for p in student.parameters() if p.requires_grad]
    with torch.no_grad():
        teacher_corrected = teacher(x)[2]
    ce1 = F.cross_entropy(student(x)[0], y)
    grads1 = torch.autograd.grad(ce1, params)
    ce2 = F.cross_entropy(student(teacher_corrected)[0], y)
    grads2 = torch.autograd.grad(round2_weight * ce2, params)

    def clamp(g):
        norm = g.norm()
        return g / norm * threshold if norm >= threshold else g

    for p, g1, g2 in zip(params, grads1, grads2):
        p.grad = clamp(g1) + clamp(g2)
    optimizer.step()
    scheduler.step()
    with torch.no_grad():
        student_state = student.nem.state_dict()
        for key, value in teacher.nem.state_dict().items():
            if value.is_floating_point():
                value.copy_(ema_rate * value + (1 - ema_rate) * student_state[key])
            else:
                value.copy_(student_state[key])
    return (ce1 + ce2).detach()


def test_train_step_equals_the_recipe_in_float64():
    torch.manual_seed(3)
    classifier = Recording().double()
    student = CorrectColMulti([classifier]).double().train()
    teacher = CorrectColMulti([classifier]).double().eval().requires_grad_(False)
    ref_student, ref_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    add_gradient_clamp_hooks(student.nem.parameters())

    def optimisation(model):
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)

    opt, sched = optimisation(student)
    ref_opt, ref_sched = optimisation(ref_student)
    generator = torch.Generator().manual_seed(5)
    for _ in range(2):
        x = torch.randn(2, 3, 224, 224, generator=generator, dtype=torch.float64)
        z = torch.randn(2, 3, 224, 224, generator=generator, dtype=torch.float64)
        y = torch.randint(0, 10, (2,), generator=generator)
        out = train_step(student, teacher, x, y, z, clasid=0, optimizer=opt, scheduler=sched)
        loss = recipe_step(ref_student, ref_teacher, x, y, ref_opt, ref_sched)
        torch.testing.assert_close(out.metrics["loss"], loss, rtol=1e-12, atol=1e-12)
    # Conv biases in front of BatchNorm get gradients of rounding noise only, which Adam scales up to
    # ~lr-sized steps; the summation order differs here, so those entries agree to ~1e-8, not 1e-12
    # (a wrong weight, clamp or EMA rate moves the weights by ~1e-4 after two steps).
    for model, reference in ((student, ref_student), (teacher, ref_teacher)):
        for (key, value), ref in zip(model.state_dict().items(), reference.state_dict().values()):
            torch.testing.assert_close(value, ref, rtol=0, atol=1e-7, msg=f"{key} differs from the recipe")
