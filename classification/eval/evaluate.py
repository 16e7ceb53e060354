"""The evaluation engine behind validate.py: model assembly and the sharded accuracy-grid loop.

:func:`evaluate_grid` classifies every item of a :class:`~classification.eval.benchmark_sets.CorruptionGrid`
and counts correct predictions per cell. Under ``torch.distributed`` every rank takes the items
``rank, rank + world, ...`` and the counts are summed across ranks, so the grid is the same as one
process would compute.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from classification.distributed import ShardSampler, autocast, rank_world, sum_over_processes
from classification.errors import UserInputError
from classification.eval.benchmark_sets import SEVERITIES, CorruptionGrid
from classification.eval.preprocess import decode_rgb, normalize_uint8
from classification.frozen import freeze
from classification.training.model import SyMPIE

log = logging.getLogger(__name__)

ACCELERATOR_BATCH_SIZE = 1000  # the authors' default
CPU_BATCH_SIZE = 32
"""Images per batch on the CPU: as fast per image as larger batches there, and the progress bar moves
every few seconds (the 486-file demo set is 16 batches, not one)."""


def eval_defaults(device: torch.device, batch_size: int | None, channels_last: bool | None) -> tuple[int, bool]:
    """``--batch_size`` and ``--channels-last`` where the user gave none: on the CPU 32 images and the
    channels-last memory format (1.5-1.7x the images/s of NCHW for effnet_lite0 and ResNet-50 there,
    ``benchmarks/bench_eval_loader.py``); on accelerators the authors' 1000 images and NCHW."""
    on_cpu = torch.device(device).type == "cpu"
    if batch_size is None:
        batch_size = CPU_BATCH_SIZE if on_cpu else ACCELERATOR_BATCH_SIZE
    return batch_size, on_cpu if channels_last is None else channels_last


@dataclass
class GridCounts:
    """Correct predictions and images per grid cell, (rows, 5) int64 tensors, and the dataset items left out
    because their file could not be decoded (``skip_undecodable``)."""

    correct: torch.Tensor
    total: torch.Tensor
    undecodable: list[int] = field(default_factory=list)

    @classmethod
    def zeros(cls, rows: int, device: torch.device | str = "cpu") -> "GridCounts":
        shape = (rows, len(SEVERITIES))
        return cls(torch.zeros(shape, dtype=torch.int64, device=device), torch.zeros(shape, dtype=torch.int64, device=device))

    def add(self, correct: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> None:
        """Count a batch: ``correct`` (B,) bool, grid ``rows`` (B,), column bit masks ``columns`` (B,)."""
        bits = torch.arange(len(SEVERITIES), device=columns.device)
        hit = (columns.long()[:, None] >> bits) & 1  # (B, 5)
        self.total.index_add_(0, rows.long(), hit)
        self.correct.index_add_(0, rows.long(), hit * correct.long()[:, None])

    def accuracy(self) -> list[list[float | None]]:
        """Accuracy grid in percent (rows x 5), computed in float32 as the authors' script does (same
        digits in the JSON); an empty cell (no image, e.g. all missing under ``--skip-missing``) is None,
        ``null`` in the JSON, so that it cannot pass for 0 %."""
        acc = (self.correct.float() * (100 / self.total.float())).cpu().tolist()
        present = (self.total > 0).cpu().tolist()
        return [[a if p else None for a, p in zip(row, mask)] for row, mask in zip(acc, present)]

    def all_reduce(self) -> None:
        """Sum the counts over the ranks of the default process group (nothing to do without one)."""
        sum_over_processes(self.correct, self.total)


class CorrectedClassifier(nn.Module):
    """``classifier(Clamp(ColWarp(x, NEM(x))))``: SyMPIE in front of a frozen classifier, for evaluation."""

    def __init__(self, sympie: SyMPIE, classifier: nn.Module):
        super().__init__()
        self.sympie = sympie
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.sympie(x))


def build_eval_model(classifier: nn.Module, colm_checkpoint: str | os.PathLike | None,
                     trusted: bool = False, compile_nem: bool = False) -> nn.Module:
    """The frozen eval-mode model validate.py runs: the classifier, or SyMPIE + classifier (``trusted``:
    ``--trust-checkpoint``, see :mod:`classification.checkpoint`; ``compile_nem``: ``--compile``, the
    NEM through ``torch.compile``, compiled at the first batch)."""
    if colm_checkpoint is None:
        return freeze(classifier)
    sympie = SyMPIE.from_checkpoint(colm_checkpoint, trusted=trusted)
    if compile_nem:
        sympie.nem = torch.compile(sympie.nem)
    return freeze(CorrectedClassifier(sympie, classifier))


def evaluate_grid(model: nn.Module, dataset: CorruptionGrid, batch_size: int = 1000, workers: int = 4,
                  device: str | torch.device = "cpu", amp: bool = False, channels_last: bool = False,
                  debug: bool = False, progress: bool = True, skip_undecodable: bool = False) -> GridCounts:
    """Classify every item of ``dataset`` (this rank's shard under torch.distributed) and count per cell.

    ``model`` takes ImageNet-normalised (B,3,224,224) input and returns logits. With ``debug`` only the
    first batch (of every rank) is evaluated. A file that cannot be decoded stops the run with a sentence
    naming it, or, with ``skip_undecodable``, is left out and listed in the result. Returns the counts summed
    over all ranks.
    """
    device = torch.device(device)
    rank, world = rank_world()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world),
                        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format).eval()
    counts = GridCounts.zeros(len(dataset.categories), device)
    seen = right = 0
    undecodable: list[int] = []
    bar = tqdm(loader, desc=f"{dataset.kind}", unit="batch", disable=not progress or rank != 0, dynamic_ncols=True)
    with torch.inference_mode():
        for images, labels, rows, columns, indices, decoded in bar:
            if not bool(decoded.all()):
                if not skip_undecodable:
                    bad = dataset.item(int(indices[~decoded][0]))
                    raise UserInputError(f"image {bad.path} (line {bad.line_no} of {dataset.split_file}) cannot be "
                                         f"decoded; replace the file, remove the line or pass --skip-missing to "
                                         f"leave such files out.")
                undecodable += indices[~decoded].tolist()
                images, labels, rows, columns = (t[decoded] for t in (images, labels, rows, columns))
                if len(labels) == 0:
                    continue
            # The memory format is set on the uint8 batch: the normalisation keeps it (no float copy).
            x = normalize_uint8(images.to(device, non_blocking=True).contiguous(memory_format=memory_format))
            with autocast(device, amp):
                logits = model(x)
            correct = logits.argmax(dim=1) == labels.to(device)
            counts.add(correct, rows.to(device), columns.to(device))
            seen += len(labels)
            right += int(correct.sum())
            bar.set_postfix(acc=f"{100.0 * right / seen:.2f}%", images=seen * world)
            if debug:
                break
    counts.all_reduce()
    return GridCounts(counts.correct.cpu(), counts.total.cpu(), gather_indices(undecodable))


def gather_indices(indices: list[int]) -> list[int]:
    """The sorted union of ``indices`` over the processes of the default group (``indices`` without one)."""
    world = rank_world()[1]
    if world == 1:
        return sorted(indices)
    gathered: list[list[int] | None] = [None] * world
    dist.all_gather_object(gathered, indices)
    return sorted(i for part in gathered for i in part or [])


class _Decodes(Dataset):
    """``[i] -> (i, whether the file of item i decodes)``."""

    def __init__(self, dataset: CorruptionGrid):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, bool]:
        try:
            decode_rgb(self.dataset.item(index).path)
        except (OSError, ValueError, RuntimeError):
            return index, False
        return index, True


def undecodable_items(dataset: CorruptionGrid, workers: int = 4, progress: bool = True) -> list[int]:
    """The items of ``dataset`` whose file cannot be decoded (``validate.py --check-files``), checked in
    ``workers`` loader processes (this rank's shard under torch.distributed, the lists gathered)."""
    rank, world = rank_world()
    loader = DataLoader(_Decodes(dataset), batch_size=64, sampler=ShardSampler(len(dataset), rank, world),
                        num_workers=workers)
    bad: list[int] = []
    for indices, decoded in tqdm(loader, desc="checking files", unit="batch", disable=not progress or rank != 0,
                                 dynamic_ncols=True):
        bad += indices[~decoded].tolist()
    return gather_indices(bad)
