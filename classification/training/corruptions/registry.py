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
    return _add_to(CORRUPTIONS, name, f"corruption {name!r}")


def register_array(name: str) -> Callable[[ArrayCorruptionFn], ArrayCorruptionFn]:
    """Decorator: add the per-image uint8 path ``fn`` of corruption ``name`` to :data:`ARRAY_CORRUPTIONS`."""
    return _add_to(ARRAY_CORRUPTIONS, name, f"per-image path of {name!r}")


def _add_to(table: dict[str, Callable], name: str, what: str) -> Callable[[Callable], Callable]:
    """A decorator that puts ``fn`` in ``table`` under ``name``; a second registration is a bug."""

    def decorator(fn: Callable) -> Callable:
        if name in table:
            raise RuntimeError(f"{what} registered twice")
        table[name] = fn
        return fn

    return decorator

