"""The one checkpoint reader (classification/weights.py) behind the NEM, DeepLab and classifier loaders."""
from __future__ import annotations

import argparse

import pytest
import torch

from classification.errors import UserInputError
from classification.training.model import ColModule, SyMPIE, load_nem_checkpoint
from classification.weights import add_trust_argument, match_state_dict, meta_state_dict, read_checkpoint


@pytest.fixture
def nem_state():
    return ColModule().state_dict()


def test_float16_nem_checkpoints_load_as_float32(tmp_path, nem_state):
    half = {k: v.half() if v.is_floating_point() else v for k, v in nem_state.items()}
    torch.save(half, tmp_path / "half.pth")
    loaded = load_nem_checkpoint(tmp_path / "half.pth")
    assert all(loaded[k].dtype == nem_state[k].dtype for k in nem_state)
    sympie = SyMPIE.from_checkpoint(tmp_path / "half.pth")
    assert torch.equal(sympie.nem.out.weight, half["out.weight"].float())


def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, nem_state):
    nem_state["backbone.0.weight"][0, 0, 0, 0] = float("inf")
    torch.save({"module." + k: v for k, v in nem_state.items()}, tmp_path / "diverged.pth")
    with pytest.raises(UserInputError, match=r"diverged\.pth holds NaN or infinite values \(first in tensor "
                                             r"'backbone\.0\.weight'\)"):
        load_nem_checkpoint(tmp_path / "diverged.pth")


def test_pickled_objects_need_trust_and_nothing_falls_back(tmp_path, nem_state):
    torch.save({"student": {"nem." + k: v for k, v in nem_state.items()}, "args": argparse.Namespace(lr=1)},
               tmp_path / "objects.pth")
    with pytest.raises(UserInputError, match=r"objects\.pth holds Python objects.*pass --trust-checkpoint"):
        load_nem_checkpoint(tmp_path / "objects.pth")
    loaded = load_nem_checkpoint(tmp_path / "objects.pth", trusted=True)
    assert all(torch.equal(loaded[k], v) for k, v in nem_state.items())


def test_garbage_missing_and_wrong_keys_are_one_sentence(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match=r"could not be read by torch\.load"):
        read_checkpoint(tmp_path / "garbage.pth")
    with pytest.raises(UserInputError, match="does not exist"):
        read_checkpoint(tmp_path / "absent.pth")
    expected = meta_state_dict(lambda: torch.nn.Linear(3, 2))
    with pytest.raises(UserInputError, match=r"missing keys: bias; unexpected keys: extra; wrong shapes: weight"):
        match_state_dict({"weight": torch.zeros(3, 3), "extra": torch.zeros(1)}, expected, "f.pth", "a linear", "")


def test_trust_flag():
    parser = argparse.ArgumentParser()
    add_trust_argument(parser)
    assert parser.parse_args([]).trust_checkpoint is False
    assert parser.parse_args(["--trust-checkpoint"]).trust_checkpoint is True


def test_truncated_checkpoint_a_plain_zip_and_a_folder_are_named_for_what_they_are(tmp_path, nem_state):
    torch.save(nem_state, tmp_path / "nem.pth")
    data = (tmp_path / "nem.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(UserInputError, match=r"cut\.pth could not be read by torch\.load \(RuntimeError\); it is "
                                             r"truncated or damaged .*fetch it again"):
        read_checkpoint(tmp_path / "cut.pth")
    import zipfile

    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        archive.writestr("a.txt", "not weights")
    with pytest.raises(UserInputError, match=r"photos\.zip could not be read by torch\.load"):  # not "Python objects"
        read_checkpoint(tmp_path / "photos.zip")
    with pytest.raises(UserInputError, match=r"checkpoint .* is a folder; pass the checkpoint file itself"):
        read_checkpoint(tmp_path)
