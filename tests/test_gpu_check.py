"""benchmarks/gpu_check.py in its reduced mode on the CPU (gloo): every step runs and passes, one table."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
STEPS = ("corruptions", "warp", "process group", "train", "resume", "torchrun", "validate", "segmentation")


@pytest.mark.slow
def test_reduced_run_on_the_cpu_passes_every_step():
    done = subprocess.run([sys.executable, str(SCRIPT), "--reduced", "--device", "cpu"], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout.split("\nstep ", 1)[1]
    for step in STEPS:
        row = next(line for line in table.splitlines() if line.startswith(step + " "))
        assert " PASS " in row, row
        assert "GiB" in row, row  # peak memory reported
    assert f"{len(STEPS)} of {len(STEPS)} steps passed" in done.stdout


def test_a_failing_step_is_reported_in_the_table_and_the_exit_status(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--reduced", "--device", "cpu", "--only", "resume"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "FAIL" in done.stdout and "needs the train step's run" in done.stdout
