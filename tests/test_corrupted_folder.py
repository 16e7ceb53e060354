"""DistortImageFolder: file order, validation split, sample format, corruption draws, bad files."""
from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classification.errors import UserInputError
from classification.normalization import denormalize
from classification.training import corrupted_folder
from classification.training.corrupted_folder import (DistortImageFolder, apply_random_corruptions, distort_batch,
                                                     scan_image_folder, to_normalized, training_methods)

SMALL = dict(resize_size=40, crop_size=32)


def write_image(path, size=(48, 40), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 40 images (120: items 0, 50, 100 go to validation), one nested folder, odd extensions."""
    root = tmp_path_factory.mktemp("imagenet")
    for c, name in enumerate(["n02", "n01", "n03"]):
        for i in range(40):
            sub = "nested/" if (name == "n03" and i >= 35) else ""
            ext = ".JPEG" if i % 7 == 0 else ".png"
            write_image(root / name / f"{sub}img{i:02d}{ext}", seed=100 * c + i)
    (root / "n01" / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes(b"")  # a file at the top level is not a class
    return root


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised (3,H,W) -> values in 0..255 (float)."""
    return denormalize(x.unsqueeze(0))[0] * 255


def is_darkened(out: torch.Tensor, crop: torch.Tensor, severity: int) -> bool:
    """``out`` (0..255) == round(crop / (severity+1)), up to ties rounded the other way."""
    diff = (out - torch.round(crop.float() / (severity + 1))).abs()
    return bool(diff.max() <= 1 + 1e-3 and diff.mean() < 0.05)


def test_classes_and_file_order(folder):
    classes, samples = scan_image_folder(folder)
    assert classes == ["n01", "n02", "n03"]
    assert len(samples) == 120
    assert [label for _, label in samples] == [0] * 40 + [1] * 40 + [2] * 40
    names = [Path(p).relative_to(folder).as_posix() for p, _ in samples]
    assert names[:3] == ["n01/img00.JPEG", "n01/img01.png", "n01/img02.png"]
    # os.walk order, sorted: the class folder's own files, then its sub-folders
    assert names[80:82] == ["n03/img00.JPEG", "n03/img01.png"] and names[-1] == "n03/nested/img39.png"
    assert not any(n.endswith(".txt") for n in names)


def test_hidden_folders_and_files_are_skipped(tmp_path):
    """A hidden folder would otherwise become class 0 and shift every label by one."""
    for name in ("n01", "n02", ".ipynb_checkpoints"):
        write_image(tmp_path / name / "a.JPEG")
    write_image(tmp_path / "n01" / ".hidden" / "b.png")
    (tmp_path / "n02" / "._a.JPEG").write_bytes(b"\0\5\26\7AppleDouble")  # macOS resource fork
    write_image(tmp_path / "n02" / "c.webp")
    classes, samples = scan_image_folder(tmp_path)
    assert classes == ["n01", "n02"]
    assert [(Path(p).relative_to(tmp_path).as_posix(), label) for p, label in samples] == [
        ("n01/a.JPEG", 0), ("n02/a.JPEG", 1), ("n02/c.webp", 1),
    ]  # fmt: skip
    _, flat = scan_image_folder(tmp_path, labelled=False)
    assert sorted(Path(p).name for p, _ in flat) == ["a.JPEG", "a.JPEG", "c.webp"]


def test_validation_split_is_every_50th_item(folder):
    _, samples = scan_image_folder(folder)
    train = DistortImageFolder(folder, "train", **SMALL)
    val = DistortImageFolder(folder, "val", **SMALL)
    assert val.samples == [samples[0], samples[50], samples[100]]
    assert train.samples == [s for i, s in enumerate(samples) if i % 50]
    assert len(train) + len(val) == len(samples)
    assert train.classes == val.classes == ["n01", "n02", "n03"]
    assert val.targets == [0, 1, 2]


def test_sample_format_and_uint8_grid(folder):
    ds = DistortImageFolder(folder, "train", seed=3, **SMALL)
    corrupted, label, clean = ds[41]
    assert corrupted.shape == clean.shape == (3, 32, 32)
    assert corrupted.dtype == clean.dtype == torch.float32
    assert label == 1
    for image in (corrupted, clean):
        values = pixels(image)
        assert torch.allclose(values, values.round(), atol=1e-3)
        assert values.min() >= -1e-3 and values.max() <= 255 + 1e-3


def test_default_sizes_resize_256_random_crop_224(tmp_path):
    write_image(tmp_path / "a" / "x.png", size=(300, 260))
    write_image(tmp_path / "a" / "y.png", size=(300, 260), seed=1)
    ds = DistortImageFolder(tmp_path, "val", methods=["darken"], seed=0, corrupt_in_loader=False)
    crop, label = ds[0]
    assert crop.shape == (3, 224, 224) and crop.dtype == torch.uint8 and label == 0
    # the crop is a window of the image resized (bilinear) to a 256-pixel short side
    resized = np.asarray(Image.open(tmp_path / "a" / "x.png").convert("RGB").resize((295, 256), Image.BILINEAR))
    window = crop.permute(1, 2, 0).numpy()
    hits = [(t, l) for t in range(256 - 223) for l in range(295 - 223)
            if np.array_equal(resized[t:t + 224, l:l + 224], window)]
    assert len(hits) == 1


def test_clean_is_the_crop_and_one_corruption_is_applied(folder):
    """With one deterministic method (darken: x/(s+1)), the output is the clean crop at one severity 0..5."""
    common = dict(methods=["darken"], seed=5, **SMALL)
    ds = DistortImageFolder(folder, "train", **common)
    crops = DistortImageFolder(folder, "train", corrupt_in_loader=False, **common)
    severities = set()
    for index in range(12):
        corrupted, _, clean = ds[index]
        crop, _ = crops[index]
        assert torch.allclose(clean, to_normalized(crop.permute(1, 2, 0).numpy()))
        matches = [s for s in range(6) if is_darkened(pixels(corrupted), crop, s)]
        assert matches, "output is not darken(clean) at any severity"
        severities.add(matches[0])
    assert len(severities) >= 3  # severities are drawn, not fixed


def test_draws_are_a_function_of_seed_epoch_and_index(folder):
    ds = DistortImageFolder(folder, "train", seed=11, **SMALL)
    first = ds[7][0]
    assert torch.equal(first, ds[7][0])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[7][0])
    ds.set_epoch(0)
    assert torch.equal(first, ds[7][0])
    assert not torch.equal(first, DistortImageFolder(folder, "train", seed=12, **SMALL)[7][0])


def test_sixteen_bit_grey_photo_is_scaled_not_white(tmp_path):
    """A 16-bit grey PNG (values 0..65535) reaches the crop scaled to 8 bits; PIL's convert("RGB") clipped it to
    255, a white image."""
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((40, 40), 128 * 257, np.uint16)).save(tmp_path / cls / f"{i}.png")
    ds = DistortImageFolder(tmp_path, "train", seed=0, corrupt_in_loader=False, **SMALL)
    crop, _ = ds[0]
    assert crop.dtype == torch.uint8 and int(crop.min()) == int(crop.max()) == 128


def test_undecodable_file_is_logged_once_and_replaced(tmp_path, caplog):
    for i in range(3):
        write_image(tmp_path / "cls" / f"good{i}.png", seed=i)
    (tmp_path / "cls" / "zbad.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = DistortImageFolder(tmp_path, "train", methods=["darken"], seed=0, **SMALL)
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("zbad.jpg")][0]
    with caplog.at_level(logging.WARNING, logger=corrupted_folder.__name__):
        for epoch in range(3):
            ds.set_epoch(epoch)
            corrupted, label, clean = ds[bad]
            assert corrupted.shape == (3, 32, 32) and label == 0
    messages = [r.getMessage() for r in caplog.records if "zbad.jpg" in r.getMessage()]
    assert len(messages) == 1


def test_bad_folders_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        scan_image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(UserInputError, match="no class sub-folders"):
        scan_image_folder(tmp_path)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.txt").write_text("x")
    with pytest.raises(UserInputError, match="no images"):
        scan_image_folder(tmp_path)
    write_image(tmp_path / "cls" / "a.png")
    with pytest.raises(UserInputError, match="unknown corruption"):
        DistortImageFolder(tmp_path, methods=["nope"], **SMALL)
    with pytest.raises(UserInputError, match="too few images"):
        DistortImageFolder(tmp_path, "train", **SMALL)  # its only image is item 0: validation


def test_training_sets():
    assert len(training_methods()) == 23 and training_methods()[-4:] == ("darken", "sunset", "night", "white")
    assert training_methods(no_color=True) == training_methods()[:19]


def test_loader_path_and_batched_path_draw_the_same_distribution(monkeypatch):
    """Both paths draw 1 + randrange(max) corruptions, each a uniform method and a uniform severity 0..5."""
    loader_draws: Counter = Counter()
    batch_draws: Counter = Counter()
    monkeypatch.setattr(corrupted_folder, "corrupt",
                        lambda image, name, severity, seed=None: loader_draws.update([(name, severity)]) or image)

    def fake_batch(images, names, severities, generator=None):
        batch_draws.update((n, s) for n, s in zip(names, severities) if s > 0)
        batch_draws[("rounds",)] += 1
        return images

    monkeypatch.setattr(corrupted_folder, "corrupt_batch", fake_batch)
    methods = training_methods()
    rng = random.Random(0)
    image = np.zeros((4, 4, 3), np.uint8)
    for _ in range(6000):
        apply_random_corruptions(image, rng, methods, max_corruptions=2)
    for _ in range(375):
        distort_batch(torch.zeros(16, 3, 4, 4), rng, methods, max_corruptions=2)
    loader_total = sum(loader_draws.values())
    assert 8500 < loader_total < 9500  # 1.5 corruptions per image on average
    loader_nonzero = {k: v for k, v in loader_draws.items() if k[1] > 0}
    assert abs(sum(loader_nonzero.values()) / loader_total - 5 / 6) < 0.02
    batch_total = sum(v for k, v in batch_draws.items() if len(k) == 2)
    assert abs(batch_total - sum(loader_nonzero.values())) / batch_total < 0.05
    for draws in (loader_nonzero, {k: v for k, v in batch_draws.items() if len(k) == 2}):
        total = sum(draws.values())
        per_method = Counter()
        for (name, _), count in draws.items():
            per_method[name] += count
        assert set(per_method) == set(methods)
        assert max(abs(c / total - 1 / 23) for c in per_method.values()) < 0.015
        per_severity = Counter()
        for (_, severity), count in draws.items():
            per_severity[severity] += count
        assert max(abs(c / total - 1 / 5) for c in per_severity.values()) < 0.02


def test_distort_batch_on_uint8_grid_with_one_method():
    rng = random.Random(1)
    crops = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    out = distort_batch(crops.float() / 255, rng, ["darken"], 1, torch.Generator().manual_seed(0))
    assert out.shape == crops.shape and out.dtype == torch.float32
    for image, crop in zip(out * 255, crops.float()):
        assert any(is_darkened(image, crop, s) for s in range(6))
