"""train.py end to end on a tiny synthetic ImageFolder with tiny random classifiers: outputs, resume,
two gloo processes, bad input."""
from __future__ import annotations

import json
import logging
import os
import signal
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

from classification import checkpoint as checkpoint_module
from classification.errors import UserInputError
from classification.training import run_config
from classification.training import train as train_module
from classification.training import trainer as trainer_module
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


def kill_at_call(monkeypatch, n: int) -> None:
    """Make ``train_step``'s ``n``-th call from now raise :class:`Killed` (a run killed mid-training); undo with
    ``monkeypatch.undo()``."""
    real_step, calls = trainer_module.train_step, []

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise Killed
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", dying_step)


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

    kill_at_call(monkeypatch, 4)  # the second step of epoch 2: killed mid-epoch, after the epoch-1 checkpoint
    with pytest.raises(Killed):
        train(run_args(imagenet, tmp_path / "split", "--gpu-corruptions"), classifiers=[tiny_classifier()])
    monkeypatch.undo()
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


@pytest.mark.slow
def test_small_path_run_killed_before_and_after_its_first_checkpoint_ends_like_an_uninterrupted_one(
        imagenet, tmp_path, monkeypatch):
    """The beyond-the-paper flags (calibrated frozen BatchNorm, classifier targets, KL, clean crops, no round
    2) resume bit for bit too, and a run killed before its first checkpoint restarts without leaving the
    killed steps in TensorBoard."""
    flags = ["--labels", "classifier", "--distill", "kl", "--init", "identity", "--freeze-nem-bn",
             "--bn-calibration-batches", "2", "--clean-fraction", "0.25", "--round2-weight", "0",
             "--corruptions", "fog", "darken", "darken"]
    train(run_args(imagenet, tmp_path / "whole", *flags), classifiers=[tiny_classifier()])
    for kill_at, resume in ((2, []), (4, ["--resume"])):  # the second step of epoch 1, then of epoch 2
        kill_at_call(monkeypatch, kill_at)
        with pytest.raises(Killed):
            train(run_args(imagenet, tmp_path / "split", *flags, *resume), classifiers=[tiny_classifier()])
        monkeypatch.undo()
        assert (tmp_path / "split" / "checkpoint.pth").exists() == bool(resume)
    train(run_args(imagenet, tmp_path / "split", *flags, "--resume"), classifiers=[tiny_classifier()])
    for name in ("final.pth", "final_ema.pth"):
        assert tensors_equal(load_nem_checkpoint(tmp_path / "whole" / name),
                             load_nem_checkpoint(tmp_path / "split" / name)), name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "split"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3]


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


def test_without_the_installed_entry_point_training_runs_and_says_how_to_get_segmentation_validation(
        imagenet, tmp_path, monkeypatch, caplog):
    """train.py imports no segmentation code: it finds the validators through the package's entry point; a
    checkout used without installing it trains with a warning instead."""
    monkeypatch.setattr(train_module, "entry_points", lambda group: [])
    with caplog.at_level(logging.WARNING, logger="sympie.train"):
        logdir = train(run_args(imagenet, tmp_path / "run", "--epochs", "1", "--iters-per-epoch", "1"),
                       classifiers=[tiny_classifier()])
    assert "no sympie.training_validators entry point is installed" in caplog.text
    assert "pip install -e ." in caplog.text and (logdir / "final.pth").is_file()


def test_the_segmentation_entry_point_is_installed():
    from importlib.metadata import entry_points

    from segmentation.validation import training_validators

    (entry,) = entry_points(group="sympie.training_validators")
    assert entry.load() is training_validators


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
        torch.save({"student": checkpoint_module.trainable_state(trainer.student),
                    "teacher": checkpoint_module.trainable_state(trainer.teacher)},
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
def test_two_gloo_processes_with_calibrated_frozen_batchnorm(imagenet, tmp_path):
    """The calibration (a collective at start-up) and the small-path flags keep the processes identical too."""
    logdir = tmp_path / "ddp"
    argv = ["--imagenet", str(imagenet), "--logdir", str(logdir), *FAST, "--epochs", "1", "--gpu-corruptions",
            "--config", str(imagenet.parent / "no_datasets.yaml"), "--labels", "classifier", "--distill", "kl",
            "--init", "identity", "--freeze-nem-bn", "--bn-calibration-batches", "2", "--round2-weight", "0"]
    mp.spawn(distributed_worker, args=(2, free_port(), argv), nprocs=2, join=True)
    models = [torch.load(logdir / f"models_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert "NEM BatchNorm statistics from 4 training crops" in (logdir / "train.log").read_text()
    for role in ("student", "teacher"):
        assert tensors_equal(models[0][role], models[1][role]), role
    assert not torch.equal(models[0]["student"]["nem.backbone.1.running_var"], torch.ones(64))  # calibrated


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


def test_class_folders_that_are_not_imagenets_are_warned_about(imagenet, tmp_path, monkeypatch, caplog):
    """With --labels dataset the i-th folder is the classifier's class i: on other folders that is silent nonsense."""
    monkeypatch.setattr(train_module.Trainer, "fit", lambda trainer: None)
    train(run_args(imagenet, tmp_path / "run"), classifiers=[tiny_classifier()])
    assert f"{imagenet} does not hold ImageNet's 1000 class folders (it has 2)" in caplog.text


def test_resume_refuses_a_different_run(imagenet, tmp_path, capsys):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    args = run_args(imagenet, logdir)
    run_config.write_run_config(logdir, args, world_size=1)
    common = ["--imagenet", str(imagenet), "--logdir", str(logdir), *FAST]
    assert "already holds a run" in run_main(common, capsys)
    message = run_main([*common, "--resume", "--lr", "0.01"], capsys)
    assert "holds a different run: --lr was 0.001 there and is 0.01 now" in message


@pytest.mark.parametrize("extra, words", [
    (["--seed", "-1"], ["--seed cannot be negative, got -1"]),
    (["--round2-weight", "-1"], ["--round2-weight cannot be negative, got -1.0"]),
    (["--seed", str(2**64)], ["--seed must be at most 2**63 - 1", str(2**64)]),
    (["--pixel-weight", "nan"], ["--pixel-weight must be a finite number, got nan"]),
    (["--pixel-weight", "inf"], ["--pixel-weight must be a finite number, got inf"]),
    (["--pixel-pool", "0"], ["--pixel-pool must be at least 1, got 0"]),
    (["--lr", "nan"], ["--lr must be a finite number, got nan"]),
    (["--lr", "inf"], ["--lr must be a finite number, got inf"]),
    (["--temperature", "nan"], ["--temperature must be a finite number, got nan"]),
    (["--ema-rate=-inf"], ["--ema-rate must be a finite number, got -inf"]),
    (["--clean-fraction", "1"], ["--clean-fraction", "every crop clean"]),
    (["--corruptions", "fog", "no_such"], ["unknown corruption method(s) no_such"]),
    (["--no-color", "--corruptions", "darken", "night"], ["--corruptions without the colour warps (--no-color) is empty"]),
    (["--distill", "kl"], ["--distill kl needs --labels classifier"]),
    (["--temperature", "2"], ["--temperature 2.0 only applies to --distill kl"]),
    (["--bn-calibration-batches", "0"], ["--bn-calibration-batches 0 only applies with --freeze-nem-bn"]),
])
def test_bad_flags_are_refused_before_anything_is_written(imagenet, tmp_path, capsys, extra, words):
    """Each would have been ignored, crashed with a traceback, or failed after run_config.json was written
    (which then blocks the corrected command: 'already holds a run')."""
    message = run_main(["--imagenet", str(imagenet), "--logdir", str(tmp_path / "logs"), *FAST, *extra], capsys)
    assert all(word in message for word in words), message
    assert not (tmp_path / "logs").exists()


def test_export_into_a_folder_is_refused_before_training(imagenet, tmp_path, capsys):
    message = run_main(["--imagenet", str(imagenet), "--logdir", str(tmp_path / "logs"), *FAST,
                        "--export", str(tmp_path)], capsys)
    assert f"--export {tmp_path} is a folder" in message
    assert not (tmp_path / "logs").exists()


def test_undecodable_images_in_a_loader_worker_give_one_sentence(tmp_path, capsys):
    """DataLoader re-raises a worker's UserInputError with the worker's traceback as its message."""
    root = tmp_path / "broken"
    for c in range(2):
        (root / f"n0{c}").mkdir(parents=True)
        for i in range(60):
            (root / f"n0{c}" / f"{i:03d}.png").write_bytes(b"not an image")
    (tmp_path / "no_datasets.yaml").write_text("{}\n")
    message = error_after_logging(["--imagenet", str(root), "--logdir", str(tmp_path / "logs"), *FAST, "--workers", "1",
                                   "--config", str(tmp_path / "no_datasets.yaml"), "--random-init", "--clas", "rn18"],
                                  capsys)
    assert message == (f"error: 100 images in a row under {root} could not be decoded; check the dataset (the log "
                       f"lists the files).")


def error_after_logging(argv, capsys) -> str:
    """main(argv) fails with exit status 2 after the run started logging: its last stderr line, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DataLoader worker" not in err
    return err.strip().splitlines()[-1]


def test_wrong_segmentation_checkpoint_leaves_no_run_behind(imagenet, tmp_path, capsys):
    """The error used to come after run_config.json was written, so the corrected command was refused."""
    nem = tmp_path / "nem.pth"
    from classification.training.model import CorrectColMulti

    torch.save(checkpoint_module.trainable_state(CorrectColMulti([tiny_classifier()])), nem)
    (tmp_path / "city").mkdir()
    logdir = tmp_path / "logs"
    message = error_after_logging(["--imagenet", str(imagenet), "--logdir", str(logdir), *FAST, "--random-init",
                                   "--clas", "rn18", "--config", str(imagenet.parent / "no_datasets.yaml"),
                                   "--seg-checkpoint", str(nem), "--cityscapes", str(tmp_path / "city")], capsys)
    assert message.startswith(f"error: segmentation checkpoint {nem} is not a DeepLab-V2")
    assert not (logdir / "run_config.json").exists()


def test_resume_refuses_other_beyond_the_paper_flags_and_an_unrecorded_one(imagenet, tmp_path, capsys):
    from classification.training.recipes import parse_command_line

    small_run = tmp_path / "small"
    small_args = parse_command_line(build_parser(), ["--recipe", "small", "--imagenet", str(imagenet),
                                                     "--logdir", str(small_run)])
    run_config.write_run_config(small_run, small_args, world_size=1)
    message = run_main(["--imagenet", str(imagenet), "--logdir", str(small_run), *FAST, "--resume"], capsys)
    assert "--recipe was 'small' there and is 'paper' now" in message

    logdir = tmp_path / "logs"
    run_config.write_run_config(logdir, run_args(imagenet, logdir, "--labels", "classifier",
                                                        "--clean-fraction", "0.25"), world_size=1)
    common = ["--imagenet", str(imagenet), "--logdir", str(logdir), *FAST, "--resume"]
    message = run_main([*common, "--clean-fraction", "0.25"], capsys)
    assert "--labels was 'classifier' there and is 'dataset' now" in message
    message = run_main([*common, "--labels", "classifier"], capsys)
    assert "--clean-fraction was 0.25 there and is 0.0 now" in message
    config = json.loads((logdir / "run_config.json").read_text())
    del config["recipe"]["freeze_nem_bn"]  # as written before the flag was recorded
    (logdir / "run_config.json").write_text(json.dumps(config))
    message = run_main([*common, "--labels", "classifier", "--clean-fraction", "0.25"], capsys)
    assert "does not record --freeze-nem-bn" in message


def test_checkpoint_with_other_shapes_is_one_sentence(tmp_path):
    from classification.training.model import CorrectColMulti

    model = CorrectColMulti([tiny_classifier()])
    state = checkpoint_module.trainable_state(model)
    state["nem.out.weight"] = torch.zeros(5, 512)
    with pytest.raises(UserInputError, match=r"run\.pth does not match this model \(size mismatch for nem\.out\.weight"):
        checkpoint_module.load_trainable_state(model, state, tmp_path / "run.pth")


def test_main_twice_in_one_process_logs_each_line_once():
    import logging

    from classification.training import run_log

    run_log.setup_logging(is_main=True)
    run_log.setup_logging(is_main=True)
    names = [h.get_name() for h in logging.getLogger().handlers]
    assert names.count(run_log.STDERR_HANDLER) == 1


def test_deterministic_flag_switches_on_deterministic_kernels_before_the_run(imagenet, tmp_path, monkeypatch):
    """--deterministic (what makes GPU runs repeatable and resumable bit for bit) sets every switch."""
    monkeypatch.setattr(train_module.Trainer, "fit", lambda trainer: None)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        train(run_args(imagenet, tmp_path / "plain"), classifiers=[tiny_classifier()])
        assert not torch.are_deterministic_algorithms_enabled()
        train(run_args(imagenet, tmp_path / "run", "--deterministic"), classifiers=[tiny_classifier()])
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2:]


# ------------------------------------------------------------------ how a run stops

def test_a_diverging_run_stops_at_once_and_writes_no_nan_weights(imagenet, tmp_path):
    logdir = tmp_path / "run"
    args = run_args(imagenet, logdir, "--lr", "1e9")
    with pytest.raises(UserInputError, match=r"^the (loss|weights) became infinite or NaN( at step \d+)? \(--lr "
                                             r"1000000000.0 may be too high\): training stopped without writing "
                                             r"the diverged weights; ") as err:
        train(args, classifiers=[tiny_classifier()])
    assert "\n" not in str(err.value)
    assert not (logdir / "final.pth").exists() and not (logdir / "final_ema.pth").exists()
    for path in logdir.glob("*.pth"):  # a best or checkpoint written before the divergence is finite
        state = load_nem_checkpoint(path)
        assert all(v.isfinite().all() for v in state.values() if v.is_floating_point()), path


def train_command(imagenet, logdir, *extra) -> list[str]:
    return [sys.executable, str(Path(train_module.__file__)), "--imagenet", str(imagenet), "--logdir", str(logdir),
            *FAST, "--iters-per-epoch", "3", "--image-every", "0", "--config", str(imagenet.parent / "no_datasets.yaml"),
            "--random-init", "--clas", "rn18", *extra]


def run_until(args: list[str], line: str, signum: int) -> tuple[int, str]:
    """Start ``args``, send ``signum`` once the process has printed ``line``; its exit code and stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for text in process.stderr:
        seen.append(text)
        if line in text:
            process.send_signal(signum)
            break
    seen.append(process.stderr.read())
    return process.wait(timeout=600), "".join(seen)


@pytest.mark.slow
@pytest.mark.parametrize("signum, line", [(signal.SIGTERM, "step 2/6"), (signal.SIGUSR1, "step 3/6")])
def test_a_signal_stops_the_run_after_a_checkpoint_and_resume_is_bit_exact(imagenet, tmp_path, signum, line):
    """Mid-epoch (after step 2) and at an epoch's end (after step 3, its validation and checkpoint)."""
    whole = subprocess.run(train_command(imagenet, tmp_path / "whole"), capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert whole.returncode == 0, whole.stderr[-2000:]
    code, err = run_until(train_command(imagenet, tmp_path / "split"), line, signum)
    assert code == 128 + signum, err[-2000:]
    assert "Traceback" not in err and "continue with --resume" in err
    state = torch.load(tmp_path / "split" / "checkpoint.pth", weights_only=True)
    assert 2 <= state["step"] < 6
    assert not (tmp_path / "split" / "final.pth").exists()
    resumed = subprocess.run(train_command(imagenet, tmp_path / "split", "--resume"), capture_output=True, text=True,
                             timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {state['step']}" in resumed.stderr
    for name in ("final.pth", "final_ema.pth"):
        a, b = load_nem_checkpoint(tmp_path / "whole" / name), load_nem_checkpoint(tmp_path / "split" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_compiled_run_writes_the_plain_modules_weights_and_resumes(imagenet, tmp_path, monkeypatch):
    """``--compile`` trains the same arithmetic as eager mode (equal losses up to float rounding), its checkpoints
    carry the plain modules' keys (no ``_orig_mod.``) and a compiled run resumes from them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(run_args(imagenet, tmp_path / "eager"), classifiers=[tiny_classifier()])
    kill_at_call(monkeypatch, 4)  # the second step of epoch 2, after the epoch-1 checkpoint
    with pytest.raises(Killed):
        train(run_args(imagenet, tmp_path / "compiled", "--compile"), classifiers=[tiny_classifier()])
    monkeypatch.undo()
    train(run_args(imagenet, tmp_path / "compiled", "--compile", "--resume"), classifiers=[tiny_classifier()])

    losses = {}
    for name in ("eager", "compiled"):
        events = EventAccumulator(str(tmp_path / name))
        events.Reload()
        losses[name] = [e.value for e in events.Scalars("train/loss")]
    assert len(losses["compiled"]) == 4
    # Adam moves near-zero gradients by +-lr whatever their rounding, so later steps drift apart (0.2 % here)
    assert losses["compiled"][:2] == pytest.approx(losses["eager"][:2], rel=1e-4)
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=2e-2)
    for name in ("final.pth", "final_ema.pth", "checkpoint.pth"):
        eager = load_nem_checkpoint(tmp_path / "eager" / name)
        compiled = load_nem_checkpoint(tmp_path / "compiled" / name)
        assert not any("_orig_mod" in key for key in compiled), name
        assert eager.keys() == compiled.keys(), name
        for key in (k for k in eager if k.endswith(("weight", "bias"))):  # 4 Adam steps of about lr at most
            torch.testing.assert_close(compiled[key], eager[key], rtol=0, atol=8e-3, msg=f"{name} {key}")
