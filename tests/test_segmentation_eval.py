"""Segmentation evaluation: flip TTA, SyMPIE wiring, dataset loops, the CLI and distributed runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

from classification.checkpoint import CHECKPOINT_DIR
from classification.distributed import ShardSampler
from classification.errors import UserInputError
from classification.training.model import NUM_PARAMS, ColModule, SyMPIE
from segmentation import eval as seg_eval
from segmentation.cityscapes import NUM_CLASSES, Cityscapes, PALETTE
from segmentation.deeplab import DeeplabNW
from segmentation.eval import (as_segmenter, evaluate, evaluate_acdc, evaluate_city,
                               evaluate_zurich, predict, resolve_colm)
from segmentation.metrics import ConfusionMatrix
from segmentation.renorm import ImagenetInput
from segmentation.synthetic import make_synthetic_cityscapes

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parent.parent
LONG_SIDE = 48
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}


class TinySegmenter(nn.Module):
    """A stand-in for DeepLab: one 3x3 conv to 19 classes, returning (logits, features) like DeeplabNW."""

    def __init__(self, seed=0, symmetric=False):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, NUM_CLASSES, 3, padding=1)
        if symmetric:
            with torch.no_grad():
                self.conv.weight.copy_((self.conv.weight + self.conv.weight.flip(-1)) / 2)

    def forward(self, x):
        out = self.conv(x)
        return out, out


def identity_sympie():
    """A SyMPIE whose NEM always predicts the identity warp."""
    nem = ColModule()
    with torch.no_grad():
        nem.out.weight.zero_()
        bias = torch.zeros(NUM_PARAMS)
        bias[[0, 4, 8]] = 1.0  # identity colour matrix
        bias[12 + 12] = 1.0  # delta kernel centre
        nem.out.bias.copy_(bias)
    return SyMPIE(nem).eval()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic_cityscapes(tmp_path_factory.mktemp("city"), sizes=[(64, 32), (64, 32), (48, 24)])


@pytest.fixture(scope="module")
def config(data_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "paths.yaml"
    path.write_text(yaml.safe_dump({"cityscapes": str(data_root), "acdc": str(data_root),
                                    "darkzurich": str(data_root)}))
    return path


def manual_confusion(segmenter, dataset, sympie=None, flip=True):
    matrix = ConfusionMatrix(NUM_CLASSES)
    with torch.inference_mode():
        for i in range(len(dataset)):
            image, label = dataset[i]
            x = image[None]
            if sympie is not None:
                x = sympie(x)
            logits = segmenter(x)[0]
            if flip:
                logits = logits + segmenter(x.flip(-1))[0].flip(-1)
            matrix.update(logits.argmax(1), label[None])
    return matrix.matrix


# --------------------------------------------------------------------------- prediction

@pytest.mark.parametrize("width", [16, 17, 33])
def test_flip_tta_any_width(width):
    x = torch.randn(2, 3, 9, width)
    symmetric = TinySegmenter(symmetric=True)
    with torch.inference_mode():
        # a left-right symmetric model sees the flipped image as the mirror image: TTA doubles the scores
        torch.testing.assert_close(predict(symmetric, x, flip=True), 2 * symmetric(x)[0])
        torch.testing.assert_close(predict(symmetric, x, flip=False), symmetric(x)[0])
        asymmetric = TinySegmenter(seed=1)
        expected = asymmetric(x)[0] + asymmetric(x.flip(-1))[0].flip(-1)
        torch.testing.assert_close(predict(asymmetric, x, flip=True), expected)


def test_predict_applies_sympie_once_before_both_views():
    segmenter = TinySegmenter(seed=2)
    sympie = SyMPIE(ColModule()).eval()
    x = torch.randn(1, 3, 20, 30)
    with torch.inference_mode():
        corrected = sympie(x)
        expected = segmenter(corrected)[0] + segmenter(corrected.flip(-1))[0].flip(-1)
        torch.testing.assert_close(predict(segmenter, x, sympie), expected)


def test_bare_deeplab_gets_caffe_input():
    deeplab = DeeplabNW()
    wrapped = as_segmenter(deeplab)
    assert isinstance(wrapped, ImagenetInput) and wrapped.model is deeplab
    assert as_segmenter(wrapped) is wrapped
    other = TinySegmenter()
    assert as_segmenter(other) is other


def test_shard_sampler_covers_every_index_once():
    shards = [list(ShardSampler(7, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))
    assert [len(ShardSampler(7, rank, 3)) for rank in range(3)] == [3, 2, 2]


# --------------------------------------------------------------------------- evaluation loop

def test_evaluate_matches_a_manual_loop(data_root):
    dataset = Cityscapes(data_root, long_side=LONG_SIDE)
    segmenter = TinySegmenter(seed=3)
    result = evaluate(segmenter, dataset, batch_size=2, workers=0)
    expected = manual_confusion(segmenter, dataset)
    assert result["confusion"].tolist() == expected.tolist()
    assert result["num_images"] == 3
    assert set(result) >= {"miou", "iou", "pixel_accuracy", "precision"}
    assert len(result["iou"]) == NUM_CLASSES


def test_evaluate_with_workers_and_batch_sizes_agree(data_root):
    dataset = Cityscapes(data_root, long_side=LONG_SIDE)
    segmenter = TinySegmenter(seed=4)
    a = evaluate(segmenter, dataset, batch_size=1, workers=0, flip=False)
    b = evaluate(segmenter, dataset, batch_size=3, workers=2, flip=False)
    assert a["confusion"].tolist() == b["confusion"].tolist()


def test_evaluate_with_sympie(data_root):
    dataset = Cityscapes(data_root, long_side=LONG_SIDE)
    segmenter = TinySegmenter(seed=5)
    baseline = evaluate(segmenter, dataset, workers=0)
    identity = identity_sympie().train()  # evaluate must switch it to eval mode (clamp on) and back
    with_identity = evaluate(segmenter, dataset, identity, workers=0)
    assert identity.training and identity.clamp.training
    # the identity warp only clamps, and synthetic images are already inside [0, 1]
    assert with_identity["confusion"].tolist() == baseline["confusion"].tolist()
    torch.manual_seed(0)
    random_sympie = SyMPIE(ColModule()).eval()
    with_random = evaluate(segmenter, dataset, random_sympie, workers=0)
    assert with_random["confusion"].tolist() == manual_confusion(segmenter, dataset, random_sympie).tolist()


def test_benchmark_functions_read_the_config(config, data_root):
    segmenter = TinySegmenter(seed=6)
    results = [fn(segmenter, config=config, workers=0, long_side=LONG_SIDE)
               for fn in (evaluate_city, evaluate_acdc, evaluate_zurich)]
    assert results[0]["miou"] == results[1]["miou"] == results[2]["miou"]
    by_root = evaluate_city(segmenter, root=data_root, workers=0, long_side=LONG_SIDE)
    assert by_root["miou"] == results[0]["miou"]


def test_benchmark_with_unset_config_key(tmp_path):
    config = tmp_path / "paths.yaml"
    config.write_text("cityscapes: /path/to/cityscapes\n")
    with pytest.raises(UserInputError, match="key 'cityscapes' .* is not set"):
        evaluate_city(TinySegmenter(), config=config)


def test_resolve_colm(tmp_path):
    assert resolve_colm("none") is None and resolve_colm("None") is None
    (tmp_path / "sympie.pth").touch()
    assert resolve_colm("sympie", tmp_path) == tmp_path / "sympie.pth"
    assert resolve_colm(str(tmp_path / "sympie.pth")) == tmp_path / "sympie.pth"
    with pytest.raises(UserInputError, match="names no file .*checkpoints found there are: sympie"):
        resolve_colm("mine", tmp_path)
    assert CHECKPOINT_DIR.name == "checkpoints"


# --------------------------------------------------------------------------- command line

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    deeplab = DeeplabNW()
    torch.save({"state_dict": {"module." + k: v for k, v in deeplab.state_dict().items()}},
               folder / "cityscapesfinal.pth")
    torch.save(ColModule().state_dict(), folder / "sympie.pth")
    return folder


def cli_args(checkpoints, config, *extra):
    return ["--ckpt", str(checkpoints / "cityscapesfinal.pth"), "--colm", str(checkpoints / "sympie.pth"),
            "--config", str(config), "--long-side", str(LONG_SIDE), "--workers", "0", "--device", "cpu", *extra]


def test_cli_end_to_end_with_random_deeplab(checkpoints, config, tmp_path, capsys):
    output = tmp_path / "results.json"
    results = seg_eval.main(cli_args(checkpoints, config, "--dataset", "all", "--batch-size", "1",
                                     "--output", str(output)))
    printed = capsys.readouterr().out
    assert "Cityscapes, baseline: mIoU" in printed and "Dark Zurich, sympie: mIoU" in printed
    saved = json.loads(output.read_text())
    assert set(saved["scores"]) == {"city", "acdc", "zurich"}
    for name in ("city", "acdc", "zurich"):
        assert set(saved["scores"][name]) == {"baseline", "sympie"}
        assert len(saved["scores"][name]["sympie"]["iou"]) == NUM_CLASSES
        assert saved["scores"][name]["baseline"]["miou"] == pytest.approx(results["scores"][name]["baseline"]["miou"])
    # the CLI's number is what the library computes with the same model
    deeplab = DeeplabNW()
    deeplab.load_state_dict({k.removeprefix("module."): v for k, v in
                             torch.load(checkpoints / "cityscapesfinal.pth")["state_dict"].items()})
    direct = evaluate_city(deeplab.eval(), config=config, workers=0, long_side=LONG_SIDE, batch_size=1)
    assert direct["confusion"].tolist() == saved["scores"]["city"]["baseline"]["confusion"]


def test_cli_none_and_no_baseline(checkpoints, config, capsys):
    args = cli_args(checkpoints, config, "--dataset", "zurich", "--no-flip")
    only_sympie = seg_eval.main(args + ["--no-baseline"])
    assert set(only_sympie["scores"]["zurich"]) == {"sympie"}
    none = seg_eval.main(args[:2] + ["--colm", "none"] + args[4:])
    assert set(none["scores"]["zurich"]) == {"baseline"}
    assert none["flip"] is False


def test_cli_missing_split_file_is_one_sentence(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "paths.yaml"
    config.write_text(f"cityscapes: {empty}\n")
    with pytest.raises(SystemExit) as exit_info:
        seg_eval.main(["--dataset", "city", "--config", str(config), "--colm", "none"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: split file {empty / 'val.txt'} does not exist; write it with one '<image path> <label path>' "
        f"line per image (see data/README.md)."]


@pytest.mark.slow
def test_script_from_its_folder_rejects_wrong_checkpoint_architecture(checkpoints, config):
    done = subprocess.run([sys.executable, "eval.py", "--dataset", "city", "--config", str(config), "--colm", "none",
                           "--ckpt", str(checkpoints / "sympie.pth")],
                          cwd=REPO / "segmentation", capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "sympie.pth is not a DeepLab-V2 ResNet-50" in lines[0]
    assert "missing keys: conv1.weight" in lines[0]


def test_cli_missing_colm_checkpoint(checkpoints, config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        seg_eval.main(cli_args(checkpoints, config, "--dataset", "city")[:2]
                      + ["--colm", "no_such_model", "--config", str(config)])
    assert exit_info.value.code == 2
    assert "--colm 'no_such_model' names no file" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_gloo_processes_equal_one_process(checkpoints, config, tmp_path):
    common = cli_args(checkpoints, config, "--dataset", "city", "--batch-size", "1")
    single = tmp_path / "single.json"
    seg_eval.main(common + ["--output", str(single)])
    double = tmp_path / "double.json"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "segmentation/eval.py", *common, "--output", str(double)],
                          cwd=REPO, capture_output=True, text=True, env=ONE_THREAD, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    for variant in ("baseline", "sympie"):
        assert two["scores"]["city"][variant]["confusion"] == one["scores"]["city"][variant]["confusion"]
        assert two["scores"]["city"][variant]["miou"] == pytest.approx(one["scores"]["city"][variant]["miou"])
        assert two["scores"]["city"][variant]["num_images"] == 3


# --------------------------------------------------------------------------- qualitatives

def test_qualitatives_cli(checkpoints, config, tmp_path):
    from segmentation import qualitatives

    out = tmp_path / "qual"
    qualitatives.main(["--dataset", "acdc", "--ckpt", str(checkpoints / "cityscapesfinal.pth"),
                       "--colm", str(checkpoints / "sympie.pth"), "--config", str(config), "--out", str(out),
                       "--num", "2", "--long-side", str(LONG_SIDE), "--device", "cpu"])
    for kind in ("image", "gt", "pred"):
        files = sorted(p.name for p in (out / kind).iterdir())
        assert files == ["0000.png", "0001.png"]
    gt = np.asarray(Image.open(out / "gt" / "0000.png"))
    assert gt.shape == (LONG_SIDE // 2, LONG_SIDE, 3)
    colours = {tuple(c) for c in gt.reshape(-1, 3)}
    assert colours <= set(PALETTE) | {(0, 0, 0)}


def test_image_that_fails_to_decode_in_a_worker_is_one_sentence(tmp_path):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(64, 32), (64, 32)])
    dataset = Cityscapes(root, long_side=LONG_SIDE)
    broken = dataset.items[1][0]
    broken.write_bytes(broken.read_bytes()[:100])  # the header still parses, the pixels do not
    with pytest.raises(UserInputError) as info:
        evaluate(TinySegmenter(), dataset, workers=1, flip=False)
    assert "\n" not in str(info.value) and str(broken) in str(info.value)
