"""torch.hub entry points (hubconf.py), loaded the way users load them: torch.hub.load(repo, name, source="local")."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import classification.checkpoint as checkpoint_files
from classification.classifiers import CLASSIFIER_NAMES
from classification.errors import UserInputError
from classification.training.model import ColModule, SyMPIE

REPO = str(Path(__file__).resolve().parent.parent)


def hub(entry: str, *args, **kwargs):
    return torch.hub.load(REPO, entry, *args, source="local", trust_repo=True, **kwargs)


@pytest.fixture
def checkpoint_dir(tmp_path, monkeypatch):
    """A checkpoints folder holding a demo model and a 'sympie' model, both random NEMs."""
    torch.manual_seed(0)
    for name in ("sympie_demo", "sympie"):
        torch.save(ColModule().state_dict(), tmp_path / f"{name}.pth")
    monkeypatch.setattr(checkpoint_files, "CHECKPOINT_DIR", tmp_path)
    return tmp_path


def test_every_entry_point_is_there_and_the_dependencies_are_importable():
    spec = importlib.util.spec_from_file_location("hubconf", Path(REPO) / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    listed = {name for name in dir(module) if callable(getattr(module, name)) and not name.startswith("_")}
    assert {"sympie", "sympie_demo", "classifier", "corrected", *CLASSIFIER_NAMES} <= listed
    assert all(importlib.util.find_spec(name) for name in module.dependencies)


def test_sympie_from_a_name_or_a_path_matches_the_file(checkpoint_dir):
    expected = SyMPIE.from_checkpoint(checkpoint_dir / "sympie.pth")
    for given in ("sympie", str(checkpoint_dir / "sympie.pth")):
        model = hub("sympie", checkpoint=given)
        assert isinstance(model, SyMPIE) and not model.training
        for key, value in expected.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    x = torch.rand(1, 3, 64, 96)
    assert hub("sympie")(x).shape == x.shape


def test_sympie_demo_loads_the_demo_checkpoint(checkpoint_dir):
    model = hub("sympie_demo")
    expected = SyMPIE.from_checkpoint(checkpoint_dir / "sympie_demo.pth")  # the fused NEM of that file
    assert model.state_dict().keys() == expected.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.state_dict().items())


@pytest.mark.skipif(not (checkpoint_files.CHECKPOINT_DIR / "sympie_demo.pth").is_file(), reason="no shipped demo model")
def test_the_shipped_demo_model_loads():
    assert isinstance(hub("sympie_demo"), SyMPIE)


def test_missing_checkpoint_is_one_sentence(checkpoint_dir):
    with pytest.raises(UserInputError, match="names no file"):
        hub("sympie", checkpoint="nope")


def test_classifiers_by_their_clas_names():
    net = hub("effnet_lite0")  # offline ImageNet weights
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    random = hub("rn18", pretrained=False)
    assert random(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    assert hub("classifier", name="rn18", pretrained=False)(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_corrected_classifier_is_sympie_then_the_classifier(checkpoint_dir):
    both = hub("corrected", clas="rn18", checkpoint="sympie", pretrained=False)
    x = torch.rand(2, 3, 224, 224)
    assert torch.equal(both(x), both.classifier(both.sympie(x)))
    assert not any(p.requires_grad for p in both.parameters())


def test_corrected_with_checkpoint_none_is_the_classifier_alone(checkpoint_dir):
    """As --colm none on the command line: no SyMPIE at all, never a randomly initialised one."""
    torch.manual_seed(0)
    alone = hub("classifier", name="rn18", pretrained=False)
    for none in ("none", None):
        torch.manual_seed(0)
        net = hub("corrected", clas="rn18", checkpoint=none, pretrained=False)
        assert not any(isinstance(m, SyMPIE) for m in net.modules())
        x = torch.rand(1, 3, 224, 224)
        assert torch.equal(net(x), alone(x))
    with pytest.raises(UserInputError, match=r"checkpoint='none' means no SyMPIE"):
        hub("sympie", checkpoint="none")


def test_hub_errors_name_keyword_arguments_not_command_line_flags(checkpoint_dir):
    import argparse

    with pytest.raises(UserInputError) as missing:
        hub("corrected", clas="rn18", checkpoint="nope", pretrained=False)
    torch.save({"state_dict": ColModule().state_dict(), "args": argparse.Namespace(lr=1)}, checkpoint_dir / "objects.pth")
    with pytest.raises(UserInputError) as untrusted:
        hub("sympie", checkpoint="objects")
    for err in (missing, untrusted):
        assert "--" not in str(err.value), err.value
    assert str(missing.value).startswith("checkpoint 'nope' names no file")
    assert "pass trust_checkpoint=True" in str(untrusted.value)
    assert isinstance(hub("sympie", checkpoint="objects", trust_checkpoint=True), SyMPIE)
