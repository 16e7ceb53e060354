"""How every downstream model (classifier, segmenter, SyMPIE at evaluation) is used: frozen."""
from __future__ import annotations

import torch.nn as nn


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients; returns ``model``."""
    model.eval()
    model.requires_grad_(False)
    return model
