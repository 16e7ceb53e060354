"""The table of corruption implementations, filled by the modules of this package at import time.

An implementation has the signature ``fn(x, severity, generator) -> y`` where ``x`` is a float
tensor (B,3,H,W) in [0, 1] on any device, ``severity`` an int in 1..5 (the same for the whole batch;
severity 0 never reaches an implementation), ``generator`` a ``torch.Generator`` on ``x``'s device
(every random draw comes from it, one draw per image), and ``y`` has the shape, dtype and device of
``x`` with values in [0, 1]. Rounding to the uint8 grid is done by the public API, not here.
"""
from __future__ import annotations

from typing import Callable

import torch

CorruptionFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

CORRUPTIONS: dict[str, CorruptionFn] = {}


def register(name: str) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator: add ``fn`` to :data:`CORRUPTIONS` under ``name``."""

    def decorator(fn: CorruptionFn) -> CorruptionFn:
        if name in CORRUPTIONS:
            raise RuntimeError(f"corruption {name!r} registered twice")
        CORRUPTIONS[name] = fn
        return fn

    return decorator
