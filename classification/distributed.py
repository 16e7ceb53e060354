"""Processes and devices, for every script: torchrun process groups (NCCL on CUDA, gloo on CPU), rank and
world size, sharding, DistributedDataParallel unwrapping, device choice and the ``--amp`` policy.

``--amp`` means the same everywhere (training, validate.py, VizWiz, segmentation): bfloat16 autocast
around the forward passes, with losses, metrics and written results in float32. No fp16: it would need a
gradient scaler, and scaled gradients would defeat training's norm-1 gradient clamp. The protocol is fp32
(``--amp`` is off by default).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Sampler

from classification.errors import UserInputError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: rank, number of processes and device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """Number of processes started by torchrun (1 for a plain ``python script.py``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 for a plain process), readable before the group exists."""
    return int(os.environ.get("RANK", "0"))


def launched_local_rank() -> int:
    """This process's rank on its node as torchrun set it (0 for a plain process)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched_local_world_size() -> int:
    """Number of processes torchrun started on this node (1 for a plain process)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def resolve_device(requested: str | None = None) -> torch.device:
    """The device ``--device`` means for this process, indexed for CUDA and made the current CUDA device.

    ``None`` is ``cuda`` when torch sees a GPU, else ``cpu``. A bare ``cuda`` is this process's own GPU:
    ``cuda:LOCAL_RANK`` under torchrun, ``cuda:0`` for a plain process. An explicit ``cuda:N`` is kept for a
    single process and refused when torchrun started several on this node (they would all share GPU N).
    Every refusal is one sentence naming the value.
    """
    try:
        device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UserInputError(f"--device {requested!r} is not a device; use cpu, cuda or cuda:N.") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise UserInputError(f"--device {requested} asks for CUDA but torch sees no GPU; use --device cpu.")
    count, local_rank, local_world = torch.cuda.device_count(), launched_local_rank(), launched_local_world_size()
    if device.index is None:
        if local_rank >= count:
            raise UserInputError(f"--device cuda: torchrun started {local_world} processes on this node but torch "
                                 f"sees {count} GPU(s); start at most {count} (--nproc-per-node) or use --device cpu.")
        device = torch.device("cuda", local_rank)
    elif local_world > 1:
        raise UserInputError(f"--device {requested} would put all {local_world} torchrun processes of this node on "
                             f"one GPU; pass --device cuda (each process takes the GPU of its LOCAL_RANK) or limit "
                             f"the GPUs with CUDA_VISIBLE_DEVICES.")
    elif device.index >= count:
        raise UserInputError(f"--device {requested}: torch sees {count} GPU(s) (cuda:0 to cuda:{count - 1}); "
                             f"pick one of them.")
    torch.cuda.set_device(device)
    return device


def init_distributed(requested_device: str | None = None, timeout_minutes: int = 30) -> DistributedContext:
    """Choose the device and join the process group when launched by torchrun (a single process needs none)."""
    world_size = launched_world_size()
    device = resolve_device(requested_device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes),
                                device_id=device if device.type == "cuda" else None)
    rank, world_size = rank_world()
    return DistributedContext(rank, world_size, device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed(requested_device: str | None = None) -> Iterator[DistributedContext]:
    """:func:`init_distributed` for the duration of a ``with`` block; the group is left as it was found."""
    started = not dist.is_initialized()
    ctx = init_distributed(requested_device)
    try:
        yield ctx
    finally:
        if started:
            shutdown_distributed()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order: every sample exactly once across processes (no padding,
    unlike DistributedSampler, so counts summed over processes equal a single process's)."""

    def __init__(self, length: int, rank: int | None = None, world_size: int | None = None):
        if rank is None or world_size is None:
            rank, world_size = rank_world()
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """The ``--amp`` policy (see the module docstring): bfloat16 autocast when ``enabled``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def use_deterministic_algorithms() -> None:
    """Deterministic kernels from here on (``train.py --deterministic``): cuDNN without autotuning or
    non-deterministic convolutions, cuBLAS with a fixed workspace, and torch's deterministic implementation of
    every op that has one (a warning names any op without). Slower on GPUs, where it is what makes a run
    repeatable and a resumed run bit-exact; on the CPU the kernels used here are deterministic anyway. Call it
    before the first CUDA matrix product (cuBLAS reads its workspace setting once)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def sum_over_processes(*tensors: torch.Tensor) -> None:
    """Replace each tensor by its sum over the processes of the default group, in place (nothing to do
    without one)."""
    if rank_world()[1] > 1:
        for tensor in tensors:
            dist.all_reduce(tensor)


def all_reduce_mean(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of ``values`` over processes (a copy; ``values`` itself is untouched)."""
    values = values.detach().clone()
    if ctx.distributed:
        dist.all_reduce(values)
        values /= ctx.world_size
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
