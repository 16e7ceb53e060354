"""Segmentation metrics from a confusion matrix kept on the model's device.

Rows of the matrix are ground-truth classes, columns predictions; pixels whose ground truth is outside
``0..num_classes-1`` (the ignore label) are skipped. Per class: pixel accuracy TP/(TP+FN), precision
TP/(TP+FP), IoU TP/(TP+FP+FN); mIoU = 100 x the mean IoU over the classes where it is defined.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

import numpy as np
import torch

from classification.distributed import sum_over_processes


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts on ``pred``'s device; ``target`` outside the classes is ignored."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
    target = target.to(pred.device)
    valid = (target >= 0) & (target < num_classes)
    index = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes ** 2).view(num_classes, num_classes)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> np.ndarray:
    num, den = num.double().cpu().numpy(), den.double().cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def nanmean(values: np.ndarray) -> float:
    """Mean over the finite entries (NaN when there are none), without numpy's empty-slice warning."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


class ConfusionMatrix:
    """Accumulates predictions against ground truth; ``update`` stays on the device."""

    def __init__(self, num_classes: int, device: torch.device | str | None = None):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.matrix += confusion_matrix(pred.to(self.matrix.device), target, self.num_classes)

    def all_reduce(self) -> None:
        """Sum the matrices of every process (no-op outside torch.distributed)."""
        sum_over_processes(self.matrix)

    def true_positives(self) -> torch.Tensor:
        return torch.diagonal(self.matrix)

    def pixel_accuracy(self) -> np.ndarray:
        """Per class TP/(TP+FN) (recall); NaN for classes absent from the ground truth."""
        return _ratio(self.true_positives(), self.matrix.sum(dim=1))

    def precision(self) -> np.ndarray:
        """Per class TP/(TP+FP); NaN for classes never predicted."""
        return _ratio(self.true_positives(), self.matrix.sum(dim=0))

    def iou(self) -> np.ndarray:
        """Per class TP/(TP+FP+FN); NaN where the class is neither present nor predicted."""
        tp = self.true_positives()
        return _ratio(tp, self.matrix.sum(dim=1) + self.matrix.sum(dim=0) - tp)

    def miou(self) -> float:
        """100 x mean IoU over the classes where it is defined."""
        return 100.0 * nanmean(self.iou())

    def summary(self) -> dict:
        """``miou`` (percent) and per-class arrays ``iou``, ``pixel_accuracy``, ``precision`` (fractions) and
        the ``confusion`` matrix."""
        return {"miou": self.miou(), "iou": self.iou(), "pixel_accuracy": self.pixel_accuracy(),
                "precision": self.precision(), "confusion": self.matrix.cpu().numpy()}


# --------------------------------------------------------------------------- printing

_COLORS = {"low": "\033[91m", "mid": "\033[93m", "high": "\033[92m", "top": "\033[96m"}
_RESET = "\033[0m"


def supports_color(stream: TextIO | None = None) -> bool:
    """True when ``stream`` is a terminal that shows ANSI colours (honours NO_COLOR and TERM=dumb)."""
    stream = stream if stream is not None else sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def _band(value: float, mean: float, std: float) -> str:
    """Where a value sits in its column: below mean-std, below mean, below mean+std, above."""
    if value < mean - std:
        return "low"
    if value < mean:
        return "mid"
    return "high" if value < mean + std else "top"


def format_table(metrics: dict, class_names: Sequence[str], color: bool | None = None) -> str:
    """Per-class pixel accuracy, precision and IoU (percent) with their mean and standard deviation.

    ``color=None`` colours the cells when stdout is a terminal; colours rank each value within its column.
    """
    color = supports_color() if color is None else color
    columns = [100 * np.asarray(metrics[k], dtype=np.float64) for k in ("pixel_accuracy", "precision", "iou")]
    stats = [(nanmean(c), float(np.nanstd(c)) if np.any(~np.isnan(c)) else float("nan")) for c in columns]
    width = max(len(n) for n in class_names) + 2
    rule = "-" * (width + 24)
    lines = ["=" * len(rule), f"{'class':<{width}}{'PA %':>8}{'PP %':>8}{'IoU %':>8}", rule]
    for i, name in enumerate(class_names):
        cells = []
        for column, (mean, std) in zip(columns, stats):
            text = f"{column[i]:>8.1f}"
            if color and not np.isnan(column[i]):
                text = _COLORS[_band(column[i], mean, std)] + text + _RESET
            cells.append(text)
        lines.append(f"{name:<{width}}" + "".join(cells))
    lines.append(rule)
    lines.append(f"{'mean':<{width}}" + "".join(f"{m:>8.1f}" for m, _ in stats))
    lines.append(f"{'std':<{width}}" + "".join(f"{s:>8.1f}" for _, s in stats))
    lines.append("=" * len(rule))
    return "\n".join(lines)
