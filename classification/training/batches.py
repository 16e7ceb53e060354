"""The batches of a training run: the training split from any step on (a resumed run sees the batches the
uninterrupted one would have), and the held-out split, every image exactly once across processes."""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from classification.distributed import DistributedContext, ShardSampler
from classification.errors import UserInputError
from classification.training.corrupted_folder import DistortImageFolder, sample_seed
from classification.training.engine import DeviceCorruptions, prepare_batch

TRAIN_PHASE, VAL_PHASE, CALIBRATION_PHASE = 0, 1, 2   # keys of the random streams


@dataclass(frozen=True)
class DataSettings:
    """The flags that shape the data (``--batch-size`` and the loaders are per process)."""

    methods: tuple[str, ...]
    max_corruptions: int
    clean_fraction: float
    resize_size: int
    crop_size: int
    gpu_corruptions: bool
    labelled: bool
    seed: int
    batch_size: int
    iters_per_epoch: int
    workers: int
    val_workers: int
    val_iters: int


class SkippingSampler(DistributedSampler):
    """A DistributedSampler whose next pass may start ``skip`` indices in (a run resumed mid-epoch)."""

    skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.skip:]
        self.skip = 0
        return iter(indices)


class TrainingBatches:
    """The two splits of ``root`` and their loaders; batches come out on ``ctx.device`` as (x, y, z)."""

    def __init__(self, root: Path, scan: tuple[list[str], list[tuple[str, int]]], settings: DataSettings,
                 ctx: DistributedContext):
        self.settings, self.ctx = settings, ctx
        s = settings
        common = dict(methods=s.methods, max_corruptions=s.max_corruptions, resize_size=s.resize_size,
                      crop_size=s.crop_size, corrupt_in_loader=not s.gpu_corruptions, scan=scan,
                      clean_fraction=s.clean_fraction, labelled=s.labelled)
        self.train_set = DistortImageFolder(root, "train", seed=s.seed, **common)
        self.val_set = DistortImageFolder(root, "val", seed=sample_seed(s.seed, VAL_PHASE), **common)
        self.sampler = SkippingSampler(self.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                       seed=s.seed, drop_last=True)
        on_cuda = ctx.device.type == "cuda"
        loader_options = dict(pin_memory=on_cuda, persistent_workers=s.workers > 0,
                              prefetch_factor=4 if s.workers > 0 else None)
        self.loader_seed = torch.Generator()  # the workers' base seed, a function of the pass (the global one of
        # the process would be drawn from, at a point a run resumed mid-epoch could not repeat)
        self.train_loader = DataLoader(self.train_set, batch_size=s.batch_size, sampler=self.sampler,
                                       num_workers=s.workers, drop_last=True, generator=self.loader_seed,
                                       **loader_options)
        # every held-out image once across the processes, the last batch possibly short (the authors' loader
        # drops up to processes x batch - 1 images)
        self.val_loader = DataLoader(self.val_set, batch_size=s.batch_size,
                                     sampler=ShardSampler(len(self.val_set), ctx.rank, ctx.world_size),
                                     num_workers=s.val_workers, pin_memory=on_cuda)
        self.batches_per_pass = len(self.train_loader)
        self.passes_per_epoch = math.ceil(s.iters_per_epoch / self.batches_per_pass)
        self.corruptions = (DeviceCorruptions(s.methods, s.max_corruptions, s.seed, s.clean_fraction)
                            if s.gpu_corruptions else None)

    def training(self, first_step: int) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """``(step, batch)`` for the steps of ``first_step``'s epoch from ``first_step`` on; ``iters_per_epoch``
        batches per epoch, a loader shorter than that gone through again (a new shuffle)."""
        s = self.settings
        iters = s.iters_per_epoch
        epoch, done = divmod(first_step, iters)
        for p in range(done // self.batches_per_pass, self.passes_per_epoch):
            stream = epoch * self.passes_per_epoch + p
            self.sampler.set_epoch(stream)
            self.train_set.set_epoch(stream)
            self.loader_seed.manual_seed(sample_seed(s.seed, TRAIN_PHASE, stream) % 2**63)
            self.sampler.skip = (done - p * self.batches_per_pass) * self.settings.batch_size if \
                done > p * self.batches_per_pass else 0
            for batch in worker_errors_in_one_sentence(self.train_loader):
                step = epoch * iters + done
                yield step, prepare_batch(batch, self.ctx.device, self.corruptions, TRAIN_PHASE, self.ctx.rank, step)
                done += 1
                if done == iters:
                    return

    def validation(self) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """``(j, batch)`` over the held-out split: the same crops and corruptions every epoch."""
        self.val_set.set_epoch(0)
        for j, batch in enumerate(worker_errors_in_one_sentence(self.val_loader)):
            if self.settings.val_iters and j == self.settings.val_iters:
                return
            yield j, prepare_batch(batch, self.ctx.device, self.corruptions, VAL_PHASE, self.ctx.rank, j)

    def calibration(self, batches: int) -> Iterator[torch.Tensor]:
        """The corrupted crops of ``--freeze-nem-bn``'s calibration: the first ``batches`` x batch size x processes
        training crops of epoch 0, this process's share."""
        size, rank, world = self.settings.batch_size, self.ctx.rank, self.ctx.world_size
        self.train_set.set_epoch(0)
        for j in range(batches):
            first = (j * world + rank) * size
            items = [self.train_set[(first + k) % len(self.train_set)] for k in range(size)]
            x, _, _ = prepare_batch(default_collate(items), self.ctx.device, self.corruptions, CALIBRATION_PHASE,
                                    rank, j)
            yield x


def worker_errors_in_one_sentence(loader: Iterable) -> Iterator:
    """The batches of ``loader``; a UserInputError raised in a DataLoader worker (e.g. a folder of undecodable
    images), which DataLoader re-raises with the worker's traceback as its message, is reduced to its sentence."""
    try:
        yield from loader
    except UserInputError as err:
        lines = str(err).strip().splitlines()
        if len(lines) == 1:
            raise
        raise UserInputError(lines[-1].split("UserInputError: ", 1)[-1]) from None
