"""The table of corruption implementations, filled by the modules of this package at import time.

An implementation has the signature ``fn(x, severity, generator) -> y`` where ``x`` is a float
tensor (B,3,H,W) in [0, 1] on any device, ``severity`` an int in 1..5 (the same for the whole batch;
severity 0 never reaches an implementation), ``generator`` a ``torch.Generator`` on ``x``'s device
(every random draw comes from it, one draw per image), and ``y`` has the shape, dtype and device of
``x`` with values in [0, 1]. Rounding to the uint8 grid is done by the public API, not here.

A corruption may also register a per-image path in :data:`ARRAY_CORRUPTIONS`: ``fn(image, severity,
generator) -> out`` on one HxWx3 uint8 NumPy image, returning an HxWx3 uint8 array equal to what the
tensor implementation gives for that image after rounding (same draws from ``generator``). The
per-image API uses it to skip the float round trip where the corruption is a PIL call or a lookup.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

CorruptionFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]
ArrayCorruptionFn = Callable[[np.ndarray, int, torch.Generator], np.ndarray]

CORRUPTIONS: dict[str, CorruptionFn] = {}
ARRAY_CORRUPTIONS: dict[str, ArrayCorruptionFn] = {}


def register(name: str) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator: add ``fn`` to :data:`CORRUPTIONS` under ``name``."""

    def decorator(fn: CorruptionFn) -> CorruptionFn:
        if name in CORRUPTIONS:
            raise RuntimeError(f"corruption {name!r} registered twice")
        CORRUPTIONS[name] = fn
        return fn

    return decorator


def register_array(name: str) -> Callable[[ArrayCorruptionFn], ArrayCorruptionFn]:
    """Decorator: add the per-image uint8 path ``fn`` of corruption ``name`` to :data:`ARRAY_CORRUPTIONS`."""

    def decorator(fn: ArrayCorruptionFn) -> ArrayCorruptionFn:
        if name in ARRAY_CORRUPTIONS:
            raise RuntimeError(f"per-image path of {name!r} registered twice")
        ARRAY_CORRUPTIONS[name] = fn
        return fn

    return decorator

