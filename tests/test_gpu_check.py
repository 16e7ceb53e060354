"""benchmarks/gpu_check.py: its reduced mode on the CPU (gloo) runs and passes every step in one table; with
no flags on a CUDA machine it picks the GPU (faked here); the paper's schedule line."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
STEPS = ("corruptions", "warp", "inference", "inference cost", "process group", "train step", "train", "resume",
         "torchrun", "validate", "segmentation")


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert "train_step" in table and "plain step" in table and "behind SyMPIE" in table
    assert "fused: SyMPIE alone" in table and "x ResNet-50's time" in table  # bench_inference's verdicts
    assert "| fused | SyMPIE + ResNet-50 | 2 | 224x224 |" in done.stdout  # and its whole table after it
    assert "the paper's schedule (50,000 iterations x 48 x 8 processes): no estimate" in done.stdout


def test_a_failing_step_is_reported_in_the_table_and_the_exit_status(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--reduced", "--device", "cpu", "--only", "resume"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "FAIL" in done.stdout and "needs the train step's run" in done.stdout


def test_no_flags_on_a_cuda_machine_runs_the_steps_on_its_gpu(monkeypatch, capsys):
    """The README's command: ``torch.cuda.set_device(torch.device("cuda"))`` used to raise on every step."""
    gpu_check = load_gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    devices = []

    def child(name, device, reduced, workdir):
        devices.append(device)
        return {"step": name, "status": "PASS", "figures": "-", "seconds": 0.0, "memory": "-", "numbers": {}}

    monkeypatch.setattr(gpu_check, "child", child)
    assert gpu_check.main(["--only", "warp", "corruptions"]) == 0
    assert devices == ["cuda:0", "cuda:0"]
    assert "gpu_check on cuda:0 (Fake GPU), full sizes" in capsys.readouterr().out


def test_the_paper_schedule_at_the_measured_rate(monkeypatch):
    """The issue's figures: 384 images/s per GPU is 1.7 hours on 8 GPUs and 14 on one."""
    gpu_check = load_gpu_check()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    results = [{"step": "train", "numbers": {"images_per_second": 384.0}}, {"step": "warp", "numbers": {}}]
    line = gpu_check.schedule_line(results, torch.device("cuda", 0), full=True)
    assert line == ("the paper's schedule (50,000 iterations x 48 x 8 processes) on 8 GPUs like this one (Fake GPU): "
                    "1.7 hours (on one: 13.9 hours), at the train step's 384 images/s per GPU")
    assert "no estimate" in gpu_check.schedule_line(results, torch.device("cpu"), full=False)
