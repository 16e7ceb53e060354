"""How every downstream model (classifier, segmenter, SyMPIE at evaluation) is used: frozen, or at least in
eval mode for the duration of an evaluation."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.nn as nn


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients; returns ``model``."""
    model.eval()
    model.requires_grad_(False)
    return model


@contextlib.contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """``modules`` (None entries ignored) in eval mode for the ``with`` block; afterwards every submodule
    gets back its own train/eval mode (so layers that were already in eval mode stay so)."""
    saved = [(sub, sub.training) for module in modules if module is not None for sub in module.modules()]
    for module in modules:
        if module is not None:
            module.eval()
    try:
        yield
    finally:
        for sub, training in saved:
            sub.training = training
