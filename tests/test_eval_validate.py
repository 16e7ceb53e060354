"""validate.py: grid JSON and sidecar, --colm resolution, CLI errors, distributed == single process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from classification.errors import UserInputError
from classification.eval import validate
from classification.checkpoint import resolve_colm
from classification.eval.benchmark_sets import ImagenetCBar, ImagenetCMixed
from classification.eval.evaluate import build_eval_model, evaluate_grid
from classification.eval.fake_benchmark import write_fake_benchmark
from classification.training.model import ColModule
from test_benchmark_sets import SMALL, ColourClassifier

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def colour_classifier(monkeypatch):
    monkeypatch.setattr(validate, "build_classifier", lambda name, pretrained=True, trusted=False, device=None: ColourClassifier())


@pytest.fixture(scope="module")
def bar_tree(tmp_path_factory):
    return write_fake_benchmark(tmp_path_factory.mktemp("bar"), "imagenetc-bar", num_images=3, size=SMALL, seed=5)


def run_main(*argv: str) -> Path:
    device = [] if "--device" in argv else ["--device", "cpu"]
    return validate.main([*argv, "--workers", "0", "--no-progress", *device])


def test_writes_grid_json_and_sidecar(bar_tree, tmp_path, colour_classifier):
    out = run_main("--bar", "--root", str(bar_tree), "--out", str(tmp_path), "--clas", "rn18", "--batch_size", "8")
    assert out == tmp_path / "bar_none_rn18.json"
    want = evaluate_grid(ColourClassifier(), ImagenetCBar(bar_tree), batch_size=5, workers=0, progress=False)
    assert out.read_text() == json.dumps(want.accuracy())  # plain json.dump of the list of rows
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["total"] == want.total.tolist() and meta["correct"] == want.correct.tolist()
    assert meta["dataset"]["kind"] == "imagenetc-bar" and meta["classifier"] == "rn18"
    assert meta["checkpoint"] is None and meta["world_size"] == 1 and "torch" in meta["versions"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bar_none_rn18.json", "bar_none_rn18.meta.json"]


def test_colm_path_runs_sympie_in_front(tmp_path, colour_classifier):
    root = write_fake_benchmark(tmp_path / "mixed", "imagenetc-mixed", num_images=3, size=SMALL, seed=6)
    checkpoint = tmp_path / "my_nem.pth"
    torch.save(ColModule().state_dict(), checkpoint)
    with pytest.raises(SystemExit):  # 3 // 50 == 0 images
        run_main("--mixed", "--quick", "--root", str(root), "--colm", str(checkpoint))
    out = run_main("--mixed", "--root", str(root), "--out", str(tmp_path / "json"), "--colm", str(checkpoint),
                   "--clas", "rn18", "--batch_size", "4")
    model = build_eval_model(ColourClassifier(), checkpoint)
    want = evaluate_grid(model, ImagenetCMixed(root), batch_size=2, workers=0, progress=False)
    assert json.loads(out.read_text()) == want.accuracy()
    assert json.loads(out.with_suffix(".meta.json").read_text())["checkpoint"]["path"] == str(checkpoint.resolve())


def test_resolve_colm(tmp_path):
    assert resolve_colm("none") is None
    (tmp_path / "sympie.pth").write_bytes(b"")
    (tmp_path / "best_uw.pth").write_bytes(b"")
    assert resolve_colm("sympie", tmp_path) == tmp_path / "sympie.pth"
    assert resolve_colm(str(tmp_path / "best_uw.pth"), tmp_path) == tmp_path / "best_uw.pth"
    with pytest.raises(UserInputError, match="best_uw, sympie"):
        resolve_colm("sympi", tmp_path)
    with pytest.raises(UserInputError, match="does not exist"):
        resolve_colm(str(tmp_path / "other.pth"), tmp_path)


def test_debug_runs_are_marked(bar_tree, tmp_path, colour_classifier):
    out = run_main("--bar", "--root", str(bar_tree), "--out", str(tmp_path), "--debug", "--batch_size", "4")
    assert out.name == "debug_bar_none_rn50_2.json"
    assert sum(json.loads(out.with_suffix(".meta.json").read_text())["total"][0]) <= 4 * 5


def test_amp_and_channels_last_run(bar_tree):
    counts = evaluate_grid(ColourClassifier(), ImagenetCBar(bar_tree), batch_size=16, workers=0, amp=True,
                           channels_last=True, progress=False)
    assert counts.total.sum() > 0


@pytest.mark.parametrize("argv, message", [
    (["--colm", "no_such_checkpoint"], "names no file"),
    (["--batch_size", "0"], "at least 1"),
    (["--device", "gpu0"], "is not a device"),
])
def test_cli_errors_are_one_sentence(bar_tree, argv, message, capsys, colour_classifier):
    with pytest.raises(SystemExit) as exit_info:
        run_main("--bar", "--root", str(bar_tree), *argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--clas", "rn51"], "unknown classifier 'rn51'"),
    (["--colm", "no_such_checkpoint"], "names no file"),
])
def test_names_are_checked_before_the_dataset_is_located(tmp_path, capsys, argv, message):
    """A typo in a name is reported first, not after the user has fixed an unset dataset path."""
    config = tmp_path / "paths.yaml"
    config.write_text("imagenetc: /path/to/imagenet-c\n")
    with pytest.raises(SystemExit):
        run_main("--config", str(config), *argv)
    err = capsys.readouterr().err
    assert message in err and "'imagenetc'" not in err


def test_placeholder_root_is_reported(tmp_path, capsys):
    config = tmp_path / "paths.yaml"
    config.write_text("imagenetc: /path/to/imagenet-c\n")
    with pytest.raises(SystemExit):
        run_main("--config", str(config))
    assert "'imagenetc'" in capsys.readouterr().err


def test_missing_image_is_reported_and_skippable(tmp_path, capsys, colour_classifier):
    root = write_fake_benchmark(tmp_path / "mixed", "imagenetc-mixed", num_images=2, size=SMALL)
    first = (root / "images.txt").read_text().split()[0]
    (root / "3" / first).unlink()
    with pytest.raises(SystemExit):
        run_main("--mixed", "--root", str(root), "--out", str(tmp_path))
    err = capsys.readouterr().err
    assert first in err and "line 1" in err
    out = run_main("--mixed", "--root", str(root), "--out", str(tmp_path), "--skip-missing")
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["dataset"]["missing"] == 1 and meta["total"] == [[2, 2, 1, 2, 2]]


# --------------------------------------------------------------------------- distributed

def _evaluate_shard(rank: int, world: int, init_file: str, root: str, result: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        counts = evaluate_grid(ColourClassifier(), ImagenetCBar(root), batch_size=4, workers=0, progress=False)
        if rank == 0:
            torch.save({"correct": counts.correct, "total": counts.total}, result)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_grid(bar_tree, tmp_path):
    result = tmp_path / "result.pt"
    mp.spawn(_evaluate_shard, args=(2, str(tmp_path / "init"), str(bar_tree), str(result)), nprocs=2)
    shards = torch.load(result)
    single = evaluate_grid(ColourClassifier(), ImagenetCBar(bar_tree), batch_size=4, workers=0, progress=False)
    assert torch.equal(shards["correct"], single.correct) and torch.equal(shards["total"], single.total)


@pytest.mark.slow
def test_torchrun_cli_matches_single_process(tmp_path):
    root = write_fake_benchmark(tmp_path / "mixed", "imagenetc-mixed", num_images=3, size=SMALL, seed=7)
    common = ["--mixed", "--root", str(root), "--clas", "rn18", "--random-init", "--batch_size", "1",
              "--workers", "0", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "classification.eval.validate", *common, "--out", str(tmp_path / "one")],
                   check=True, cwd=REPO, env=env, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                    "-m", "classification.eval.validate", *common, "--out", str(tmp_path / "two")],
                   check=True, cwd=REPO, env=env, capture_output=True, timeout=300)
    one = json.loads((tmp_path / "one" / "mixed_none_rn18.meta.json").read_text())
    two = json.loads((tmp_path / "two" / "mixed_none_rn18.meta.json").read_text())
    assert two["world_size"] == 2
    assert (one["correct"], one["total"]) == (two["correct"], two["total"])
    assert (tmp_path / "one" / "mixed_none_rn18.json").read_text() == (tmp_path / "two" / "mixed_none_rn18.json").read_text()


def test_random_init_classifier_is_the_same_whatever_the_rng_did_before():
    args = validate.build_parser().parse_args(["--clas", "rn18", "--random-init"])
    first = validate.make_classifier(args, torch.device("cpu")).state_dict()
    torch.rand(1000)  # another process (or rank) may have used the generator differently before
    second = validate.make_classifier(args, torch.device("cpu")).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_channels_last_batches_reach_the_model_in_that_format_with_the_same_values(bar_tree):
    seen = {False: [], True: []}

    class Recording(ColourClassifier):
        def forward(self, x):
            seen[channels_last].append((x.is_contiguous(memory_format=torch.channels_last), x.contiguous()))
            return super().forward(x)

    counts = {}
    for channels_last in (False, True):
        counts[channels_last] = evaluate_grid(Recording(), ImagenetCBar(bar_tree), batch_size=16, workers=0,
                                              channels_last=channels_last, progress=False)
        assert seen[channels_last] and all(fmt == channels_last for fmt, _ in seen[channels_last])
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(seen[False], seen[True], strict=True))
    assert torch.equal(counts[False].correct, counts[True].correct)


@pytest.mark.parametrize("blocked", ["bar_none_rn18.json", "bar_none_rn18.meta.json"])
def test_an_output_path_that_is_a_folder_is_refused_before_the_evaluation(bar_tree, tmp_path, blocked, capsys,
                                                                          colour_classifier, monkeypatch):
    (tmp_path / blocked).mkdir()
    monkeypatch.setattr(validate, "evaluate_grid", lambda *a, **k: pytest.fail("evaluated before the check"))
    with pytest.raises(SystemExit) as exit_info:
        run_main("--bar", "--root", str(bar_tree), "--out", str(tmp_path), "--clas", "rn18")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{tmp_path / blocked} is a folder" in err and "Traceback" not in err
