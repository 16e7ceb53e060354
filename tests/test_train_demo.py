"""train.py --demo: the newcomer's smoke run on the sample photos."""
from __future__ import annotations

import pytest
import torch

from classification.samples import SAMPLE_LABELS
from classification.training import smoke_folder as demo
from classification.training.model import SyMPIE
from classification.training.train import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMPIE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_demo_folder_has_imagenet_class_indices(cache):
    root = demo.demo_image_folder()
    assert root.parent == cache
    folders = sorted(p.name for p in root.iterdir())
    assert len(folders) == 1000
    for name, label in SAMPLE_LABELS.items():
        assert len(list((root / folders[label]).glob(f"{name}_*.jpg"))) == demo.VARIANTS_PER_PHOTO
    assert demo.demo_image_folder() == root  # made once, then reused


def test_damaged_demo_folder_is_made_again(cache):
    root = demo.demo_image_folder()
    files = sorted(root.rglob("*.jpg"))
    originals = {f: f.read_bytes() for f in files[:2]}
    files[0].unlink()  # missing
    files[1].write_bytes(b"")  # emptied
    assert demo.demo_image_folder() == root
    assert sorted(root.rglob("*.jpg")) == files and all(f.read_bytes() == b for f, b in originals.items())


@pytest.mark.slow
def test_demo_trains_and_writes_a_usable_checkpoint(cache, tmp_path):
    logdir = tmp_path / "run"
    main(["--demo", "--logdir", str(logdir), "--epochs", "1", "--iters-per-epoch", "2", "--image-every", "1"])
    assert list(logdir.glob("events.out.tfevents.*"))
    sympie = SyMPIE.from_checkpoint(logdir / "final.pth")
    assert sympie(torch.zeros(1, 3, 224, 224)).shape == (1, 3, 224, 224)
    assert (logdir / "final_ema.pth").is_file()


def test_demo_takes_explicit_flags_like_every_recipe(cache, tmp_path, capsys):
    """--demo is --recipe smoke: a flag typed beside it wins (it used to be refused), here --imagenet, whose
    missing folder is then reported before the sample photos' folder is made or a log dir written."""
    with pytest.raises(SystemExit) as stop:
        main(["--demo", "--imagenet", str(tmp_path / "none"), "--logdir", str(tmp_path / "run")])
    assert stop.value.code == 2
    assert str(tmp_path / "none") in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not list(cache.rglob("*.jpg"))
