"""Stopping a run cleanly when a scheduler asks (``train.py``): SIGTERM or SIGUSR1 ends the run at the end of
the current step, after its training checkpoint is written; the process then exits with 128 + the signal's
number (143 for SIGTERM), and ``--resume`` continues bit for bit.
"""
from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import torch
import torch.distributed as dist

from classification.distributed import DistributedContext

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised once the checkpoint of a run stopped by ``signum`` is written."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal_name(signum)} after step {step}")
        self.signum, self.step = signum, step

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequests:
    """Records SIGTERM/SIGUSR1 while installed (see :meth:`installed`); :meth:`agreed` tells every process
    the same answer at the same step (a CPU all-reduce over gloo: no wait on the GPU)."""

    def __init__(self, ctx: DistributedContext):
        self.ctx, self.signum = ctx, 0
        self.group = None
        if ctx.distributed:  # NCCL groups reduce GPU tensors only: the flags travel on a gloo group of their own
            self.group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD

    def _record(self, signum: int, frame) -> None:  # noqa: ARG002 - the signal handler's signature
        self.signum = self.signum or signum

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopRequests"]:
        previous = {s: signal.signal(s, self._record) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def agreed(self) -> int:
        """The signal that asked this or any other process to stop (0: none). Collective when distributed."""
        if self.group is None:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(flag.item())
