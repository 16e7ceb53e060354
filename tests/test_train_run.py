"""train.py end to end on a tiny synthetic ImageFolder with tiny random classifiers: outputs, resume,
two gloo processes, bad input."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from PIL import Image

from classification.training import train as train_module
from classification.training.model import load_nem_checkpoint
from classification.training.train import build_parser, main, train

FAST = ["--epochs", "2", "--iters-per-epoch", "2", "--batch-size", "1", "--workers", "0", "--val-workers", "0",
        "--val-iters", "1", "--resize-size", "36", "--crop-size", "32", "--device", "cpu", "--print-every", "1",
        "--image-every", "2", "--seed", "3"]


def tiny_classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 1000))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """2 classes x 60 small images: 117 train, 3 validation (every 50th). Beside it, an empty dataset
    config, so that the user's config_paths.yaml never switches on segmentation validation here."""
    root = tmp_path_factory.mktemp("imagenet_train")
    (root.parent / "no_datasets.yaml").write_text("{}\n")
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"n0{c}").mkdir()
        for i in range(60):
            Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(root / f"n0{c}" / f"{i:03d}.png")
    return root


def run_args(imagenet, logdir, *extra):
    return build_parser().parse_args(["--imagenet", str(imagenet), "--logdir", str(logdir), *FAST,
                                      "--config", str(imagenet.parent / "no_datasets.yaml"), *extra])


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Killed(Exception):
    pass


def check_outputs(logdir, classifier, frozen) -> None:
    """Everything a finished run leaves in its log dir."""
    for name in ("final.pth", "final_ema.pth", "best_uw.pth", "best_uo.pth", "checkpoint.pth"):
        assert len(load_nem_checkpoint(logdir / name)) == 51, name
    assert not tensors_equal(load_nem_checkpoint(logdir / "final.pth"), load_nem_checkpoint(logdir / "final_ema.pth"))
    assert tensors_equal(classifier.state_dict(), frozen)  # the classifier never changes
    config = json.loads((logdir / "run_config.json").read_text())
    assert config["recipe"]["world_size"] == 1 and config["recipe"]["lr"] == 1e-3
    assert {"torch", "torchvision", "timm"} <= set(config["versions"]) and "git_commit" in config
    state = torch.load(logdir / "checkpoint.pth", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 4 and state["scheduler"]["last_epoch"] == 4
    log_text = (logdir / "train.log").read_text()
    assert "validation on" in log_text and log_text.count("segmentation validation skipped") == 1

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    assert {"train/lr", "train/loss", "train/ce/round1", "train/ce/round2", "train/acc/original",
            "train/acc/warped", "train/acc/unwarped", "train/dacc_uw", "train/dacc_uo",
            "val/dacc_uw", "val/dacc_uo"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3]
    assert {"images/input", "images/teacher_corrected", "images/student_round1", "images/student_round2",
            "params/colour", "params/kernel"} <= set(events.Tags()["images"])


@pytest.mark.slow
def test_run_outputs_and_killed_then_resumed_run_ends_like_an_uninterrupted_one(imagenet, tmp_path, monkeypatch):
    classifier = tiny_classifier()
    frozen = {k: v.clone() for k, v in classifier.state_dict().items()}
    train(run_args(imagenet, tmp_path / "whole", "--gpu-corruptions"), classifiers=[classifier])
    check_outputs(tmp_path / "whole", classifier, frozen)

    real_step, calls = train_module.train_step, []

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the second step of epoch 2: killed mid-epoch, after the epoch-1 checkpoint
            raise Killed
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", dying_step)
    with pytest.raises(Killed):
        train(run_args(imagenet, tmp_path / "split", "--gpu-corruptions"), classifiers=[tiny_classifier()])
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert not (tmp_path / "split" / "final.pth").exists()
    # resumed with loader workers this time: the draws do not depend on them
    train(run_args(imagenet, tmp_path / "split", "--gpu-corruptions", "--resume", "--workers", "2"),
          classifiers=[tiny_classifier()])
    for name in ("final.pth", "final_ema.pth"):
        assert tensors_equal(load_nem_checkpoint(tmp_path / "whole" / name),
                             load_nem_checkpoint(tmp_path / "split" / name)), name
    whole = torch.load(tmp_path / "whole" / "checkpoint.pth", weights_only=True)
    split = torch.load(tmp_path / "split" / "checkpoint.pth", weights_only=True)
    assert whole["best"] == split["best"]
    assert torch.equal(whole["optimizer"]["state"][0]["exp_avg_sq"], split["optimizer"]["state"][0]["exp_avg_sq"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "split"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3]  # the killed step is purged


def test_segmentation_validation_hook(imagenet, tmp_path, monkeypatch):
    """With a DeepLab checkpoint and both folders, every epoch evaluates the student's NEM on both."""
    import segmentation.validation as segmentation_validation
    from segmentation.deeplab import DeeplabNW

    from classification.training.model import SyMPIE

    checkpoint = tmp_path / "deeplab.pth"
    torch.save({"state_dict": DeeplabNW().state_dict()}, checkpoint)
    roots = {name: tmp_path / name for name in ("city", "acdc")}
    for root in roots.values():
        root.mkdir()
    calls = []

    def fake_evaluate(name, segmenter, sympie=None, root=None, workers=2, device=None, **kwargs):
        assert isinstance(segmenter, DeeplabNW) and isinstance(sympie, SyMPIE)
        calls.append((name, root))
        return {"miou": 50.0 - len(calls)}

    monkeypatch.setattr(segmentation_validation, "evaluate_benchmark", fake_evaluate)
    logdir = train(run_args(imagenet, tmp_path / "run", "--epochs", "1", "--iters-per-epoch", "1",
                            "--seg-checkpoint", str(checkpoint), "--cityscapes", str(roots["city"]),
                            "--acdc", str(roots["acdc"])), classifiers=[tiny_classifier()])
    assert calls == [("city", roots["city"]), ("acdc", roots["acdc"])]
    for name in ("best_city.pth", "best_acdc.pth"):
        assert len(load_nem_checkpoint(logdir / name)) == 51
    assert "segmentation validation skipped" not in (logdir / "train.log").read_text()
    assert torch.load(logdir / "checkpoint.pth", weights_only=True)["best"]["acdc"] == 48.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_worker(rank: int, world_size: int, port: int, argv: list[str]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    fit = train_module.Trainer.fit

    def fit_and_save_models(trainer):
        fit(trainer)
        torch.save({"student": train_module.ckpt.trainable_state(trainer.student),
                    "teacher": train_module.ckpt.trainable_state(trainer.teacher)},
                   trainer.logdir / f"models_rank{rank}.pt")

    train_module.Trainer.fit = fit_and_save_models
    train(build_parser().parse_args(argv), classifiers=[tiny_classifier(0), tiny_classifier(1)])


@pytest.mark.slow
def test_two_gloo_processes(imagenet, tmp_path):
    logdir = tmp_path / "ddp"
    argv = ["--imagenet", str(imagenet), "--logdir", str(logdir), *FAST, "--epochs", "1",
            "--config", str(imagenet.parent / "no_datasets.yaml")]
    mp.spawn(distributed_worker, args=(2, free_port(), argv), nprocs=2, join=True)
    config = json.loads((logdir / "run_config.json").read_text())
    assert config["recipe"]["world_size"] == 2
    state = torch.load(logdir / "checkpoint.pth", weights_only=True)
    assert len(state["rng"]) == 2 and state["step"] == 2 and state["epoch"] == 1
    assert len(load_nem_checkpoint(logdir / "final.pth")) == 51
    assert "2 processes" in (logdir / "train.log").read_text()
    rank0, rank1 = (torch.load(logdir / f"models_rank{r}.pt", weights_only=True) for r in (0, 1))
    for role in ("student", "teacher"):  # DDP gradients and averaged BatchNorm statistics keep them equal
        assert tensors_equal(rank0[role], rank1[role]), role


@pytest.mark.slow
def test_torchrun_command_line(imagenet, tmp_path):
    """The real entry point under torchrun, with torchvision classifiers (random weights, no download)."""
    script = Path(train_module.__file__)
    logdir = tmp_path / "cli"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port", str(free_port()),
               str(script), "--imagenet", str(imagenet), "--logdir", str(logdir), *FAST, "--epochs", "1",
               "--config", str(imagenet.parent / "no_datasets.yaml"),
               "--random-classifiers", "--classifiers", "rn18", "mnet_1", "--gpu-corruptions"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=script.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done:" in result.stderr
    assert len(load_nem_checkpoint(logdir / "final.pth")) == 51


def run_main(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_bad_input_is_one_sentence(imagenet, tmp_path, capsys):
    common = ["--logdir", str(tmp_path / "logs"), *FAST]
    assert "does not exist" in run_main(["--imagenet", str(tmp_path / "missing"), *common], capsys)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    assert "no class sub-folders" in run_main(["--imagenet", str(tmp_path / "flat"), *common], capsys)
    (tmp_path / "flat" / "cls").mkdir()
    assert "no images" in run_main(["--imagenet", str(tmp_path / "flat"), *common], capsys)
    message = run_main(["--imagenet", str(imagenet), *common, "--classifiers", "no_such_net"], capsys)
    assert "unknown classifier 'no_such_net'" in message
    message = run_main(["--imagenet", str(imagenet), *common, "--batch-size", "4"], capsys)
    assert "3 validation" in message
    assert not (tmp_path / "logs").exists()  # nothing written before the input is known to be good


def test_resume_refuses_a_different_run(imagenet, tmp_path, capsys):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    args = run_args(imagenet, logdir)
    train_module.ckpt.write_run_config(logdir, args, world_size=1)
    common = ["--imagenet", str(imagenet), "--logdir", str(logdir), *FAST]
    assert "already holds a run" in run_main(common, capsys)
    message = run_main([*common, "--resume", "--lr", "0.01"], capsys)
    assert "holds a different run: --lr was 0.001 there and is 0.01 now" in message
