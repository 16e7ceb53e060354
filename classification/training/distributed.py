"""Process-group setup for ``torchrun`` (NCCL on CUDA, gloo on CPU) and a plain single process."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from classification.errors import UserInputError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: rank, number of processes and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """Number of processes started by torchrun (1 for a plain ``python train.py``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def select_device(requested: str | None, local_rank: int) -> torch.device:
    """``requested`` (``cpu``, ``cuda``), or CUDA (one GPU per local rank) when available, else CPU."""
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError("--device cuda was given but no CUDA device is available; use --device cpu.")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def init_distributed(requested_device: str | None = None, timeout_minutes: int = 30) -> DistributedContext:
    """Join the process group when launched by torchrun; a single process needs none."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = launched_world_size()
    device = select_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes),
                                device_id=device if device.type == "cuda" else None)
    return DistributedContext(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of ``values`` over processes (a copy; ``values`` itself is untouched)."""
    values = values.detach().clone()
    if ctx.distributed:
        dist.all_reduce(values)
        values /= ctx.world_size
    return values


def all_reduce_sum(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Sum of ``values`` over processes (a copy)."""
    values = values.detach().clone()
    if ctx.distributed:
        dist.all_reduce(values)
    return values


def all_gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects)."""
    if not ctx.distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        dist.barrier()
