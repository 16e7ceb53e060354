"""The accelerator paths of pixelate and jpeg_compression (``pil_box.py``, ``jpeg.py``), run on CPU tensors
against the PIL / libjpeg paths the CPU uses, and which path each device takes ("meta" tensors stand for
an accelerator: the host path cannot run on them)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import test_corruption_stats
from classification.training.corruptions import CORRUPTIONS, digital, registry
from classification.training.corruptions.jpeg import jpeg_round_trip
from classification.training.corruptions.pil_box import box_pixelate
from conftest import SAMPLE_NAMES, reference_image

pytestmark = pytest.mark.usefixtures("single_thread")


def as_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def as_uint8(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().byte().permute(0, 2, 3, 1).numpy()


def test_box_pixelate_equals_pil_on_photos_and_odd_sizes():
    photos = [reference_image(name) for name in SAMPLE_NAMES[:2]]
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 7), (7, 1), (2, 3), (9, 5)] + [tuple(rng.integers(10, 120, 2)) for _ in range(25)]
    for severity in range(1, 6):
        expected = [digital.pixelate_array(photo, severity) for photo in photos]
        out = box_pixelate(as_batch(photos), *digital.pixelated_size(224, 224, severity))
        assert np.array_equal(as_uint8(out), np.stack(expected)), severity
    for i, shape in enumerate(shapes):
        severity = i % 5 + 1
        images = rng.integers(0, 256, (2, *shape, 3), dtype=np.uint8)
        out = box_pixelate(as_batch(list(images)), *digital.pixelated_size(*shape, severity))
        expected = np.stack([digital.pixelate_array(image, severity) for image in images])
        assert np.array_equal(as_uint8(out), expected), (shape, severity)


@pytest.mark.parametrize("severity", range(1, 6))
def test_jpeg_round_trip_is_close_to_libjpeg(severity):
    """Measured: mean |diff| 0.01-0.17 grey levels on the photos, 0.4 on noise; 0.2-10% of values differ."""
    rng = np.random.default_rng(severity)
    images = [reference_image(name) for name in SAMPLE_NAMES[:3]]
    images += [rng.integers(0, 256, (61, 90, 3), dtype=np.uint8), reference_image("coffee")[:37, :53]]
    for image in images:
        out = as_uint8(jpeg_round_trip(as_batch([image]), digital.JPEG_QUALITY[severity - 1]))[0]
        diff = np.abs(out.astype(np.int16) - digital.jpeg_array(image, severity))
        assert diff.mean() <= 0.6 and (diff > 0).mean() <= 0.12, (image.shape, diff.mean(), (diff > 0).mean())


def test_jpeg_round_trip_keeps_shape_on_tiny_images():
    for shape in ((1, 1), (1, 7), (7, 1), (2, 3), (17, 8)):
        x = torch.rand(2, 3, *shape)
        out = jpeg_round_trip(x, 7)
        assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


@pytest.fixture
def jpeg_as_on_an_accelerator(monkeypatch):
    """jpeg_compression through jpeg.py on CPU tensors; the statistics cache is cleared around it."""
    monkeypatch.setitem(
        registry.CORRUPTIONS,
        "jpeg_compression",
        lambda x, severity, generator: jpeg_round_trip(x, digital.JPEG_QUALITY[severity - 1]),
    )
    test_corruption_stats.our_statistics.cache_clear()
    yield
    test_corruption_stats.our_statistics.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("severity", range(1, 6))
def test_jpeg_round_trip_passes_the_statistics_test(severity, jpeg_as_on_an_accelerator):
    assert test_corruption_stats.compare("jpeg_compression", severity) == []


@pytest.mark.parametrize("name", ["pixelate", "jpeg_compression"])
def test_an_accelerator_batch_stays_on_its_device(name, monkeypatch):
    """On a non-CPU tensor the tensor path runs (the host path would fail on "meta")."""
    monkeypatch.setattr(digital, "_through_arrays", lambda *args: pytest.fail("took the host path"))
    x = torch.empty(2, 3, 37, 53, device="meta")
    out = CORRUPTIONS[name](x, 3, None)
    assert out.device == x.device and out.shape == x.shape


def test_cpu_batches_go_through_pil_and_libjpeg(monkeypatch):
    """On the CPU the per-image libraries are faster than the tensor paths: those must not run there."""
    monkeypatch.setattr(digital, "box_pixelate", lambda *args: pytest.fail("tensor pixelate on the CPU"))
    monkeypatch.setattr(digital, "jpeg_round_trip", lambda *args: pytest.fail("tensor JPEG on the CPU"))
    image = reference_image("rocket")
    for name in ("pixelate", "jpeg_compression"):
        out = as_uint8(CORRUPTIONS[name](as_batch([image]), 2, None))[0]
        assert np.array_equal(out, registry.ARRAY_CORRUPTIONS[name](image, 2, None)), name


def test_pixelate_falls_back_to_pil_where_its_passes_are_not_reproduced(monkeypatch):
    monkeypatch.setattr(digital, "box_pixelate", lambda *args: None)
    sentinel = torch.zeros(1)
    monkeypatch.setattr(digital, "_through_arrays", lambda *args: sentinel)
    assert CORRUPTIONS["pixelate"](torch.empty(1, 3, 5, 6, device="meta"), 3, None) is sentinel
