"""What a training run tells the user: log lines (stderr and ``train.log``) and TensorBoard.

TensorBoard tags (written by rank 0):

- ``train/lr``, ``train/loss``, ``train/ce/round1``, ``train/ce/round2``, ``train/acc/{original,warped,
  unwarped}``, ``train/dacc_uw``, ``train/dacc_uo``: the values of one step, averaged over the processes,
  every ``--print-every`` steps (and at the last step). They are computed and all-reduced on those steps only:
  the accuracies need two more classifier passes and reading any value waits for the device;
- ``images/*`` and ``params/*``: one batch every ``--image-every`` steps;
- ``val/dacc_uw``, ``val/dacc_uo`` and ``val/<validator>``: after every epoch.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from classification.training.visualize import image_grid, parameter_images

log = logging.getLogger("sympie.train")

LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
STDERR_HANDLER = "sympie.train.stderr"  # the name of the handler setup_logging adds


def setup_logging(is_main: bool) -> None:
    """Rank 0 logs INFO, the other processes only warnings, to stderr (each line once, however often training
    runs in a process: the handler of an earlier call is replaced). The one place that sets the level."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == STDERR_HANDLER]:
        root.removeHandler(old)
    handler = logging.StreamHandler()
    handler.set_name(STDERR_HANDLER)
    handler.setFormatter(LOG_FORMAT)
    root.addHandler(handler)
    root.setLevel(logging.INFO if is_main else logging.WARNING)


@contextlib.contextmanager
def log_file(logdir: Path, is_main: bool) -> Iterator[None]:
    """For the duration of a run, rank 0's log lines also go to ``logdir/train.log``."""
    if not is_main:
        yield
        return
    logdir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logdir / "train.log")
    handler.setFormatter(LOG_FORMAT)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    text = time.strftime("%H:%M:%S", time.gmtime(rest))
    return f"{days}d {text}" if days else text


class TrainingLog:
    """Rank 0's TensorBoard writer and progress lines of one run that starts (or resumes) at ``first_step``."""

    def __init__(self, logdir: Path, first_step: int, total_steps: int, iters_per_epoch: int, print_every: int):
        from torch.utils.tensorboard import SummaryWriter

        # the events of an earlier process at or after the step this run starts from are dropped: a resumed run's
        # after its checkpoint, all of them when it was stopped before its first checkpoint
        self.writer = SummaryWriter(str(logdir), purge_step=first_step)
        self.first_step, self.total_steps = first_step, total_steps
        self.iters_per_epoch, self.print_every = iters_per_epoch, print_every
        self.started = time.monotonic()

    def scalars(self, step: int, metrics: dict[str, float], lr: float) -> None:
        """The logged values of ``step`` (0-based) and, every ``print_every`` steps, a progress line."""
        w = self.writer
        w.add_scalar("train/lr", lr, step)
        w.add_scalar("train/loss", metrics["loss"], step)
        w.add_scalar("train/ce/round1", metrics["ce_round1"], step)
        w.add_scalar("train/ce/round2", metrics["ce_round2"], step)
        for name in ("original", "warped", "unwarped"):
            w.add_scalar(f"train/acc/{name}", metrics[f"acc_{name}"], step)
        w.add_scalar("train/dacc_uw", metrics["acc_unwarped"] - metrics["acc_warped"], step)
        w.add_scalar("train/dacc_uo", metrics["acc_unwarped"] - metrics["acc_original"], step)
        done = step + 1
        rate = (done - self.first_step) / max(time.monotonic() - self.started, 1e-9)
        eta = (self.total_steps - done) / max(rate, 1e-9)
        log.info("step %d/%d (epoch %d)  loss %.3f  acc orig/warped/unwarped %.1f/%.1f/%.1f  lr %.2e  %.2f it/s  "
                 "eta %s", done, self.total_steps, step // self.iters_per_epoch + 1, metrics["loss"],
                 metrics["acc_original"], metrics["acc_warped"], metrics["acc_unwarped"], lr, rate,
                 format_duration(eta))

    def images(self, step: int, visuals: dict[str, torch.Tensor]) -> None:
        for name in ("input", "teacher_corrected", "student_round1", "student_round2"):
            self.writer.add_image(f"images/{name}", image_grid(visuals[name]), step)
        for name, image in parameter_images(visuals["params"]).items():
            self.writer.add_image(f"params/{name}", image, step)

    def validation(self, step: int, scores: dict[str, float]) -> None:
        tags = {"uw": "val/dacc_uw", "uo": "val/dacc_uo"}
        for name, value in scores.items():
            self.writer.add_scalar(tags.get(name, f"val/{name}"), value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
