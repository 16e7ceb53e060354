"""The two update rules of SyMPIE's training besides Adam: the EMA teacher and the gradient clamp."""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, rate: float = 0.9,
               skip_prefixes: tuple[str, ...] = ("classifiers.",)) -> None:
    """``teacher = rate*teacher + (1-rate)*student`` over the whole state_dict, buffers included.

    Entries under ``skip_prefixes`` (the frozen classifiers, shared by both models) are left alone.
    Integer buffers (BatchNorm's ``num_batches_tracked``) are copied from the student.
    """
    student_state = student.state_dict()
    for key, value in teacher.state_dict().items():
        if key.startswith(skip_prefixes):
            continue
        source = student_state[key]
        if value.is_floating_point():
            value.mul_(rate).add_(source.to(value.dtype), alpha=1 - rate)
        else:
            value.copy_(source)


def clamp_gradient(grad: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """``grad / ||grad|| * threshold`` when ``||grad|| >= threshold``, else ``grad`` (no host sync)."""
    norm = torch.linalg.vector_norm(grad)
    return torch.where(norm >= threshold, grad / norm * threshold, grad)


def add_gradient_clamp_hooks(parameters: Iterable[nn.Parameter], threshold: float = 1.0) -> list:
    """Clamp the gradient of every trainable parameter, per parameter and per backward pass.

    Returns the hook handles.
    """
    return [p.register_hook(lambda grad: clamp_gradient(grad, threshold)) for p in parameters if p.requires_grad]
