"""The deterministic corruptions reproduce the authors' outputs: mean |diff| <= 0.5, max <= 3."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from classification.training.corruptions import corrupt
from conftest import REFERENCE, reference_image

pytestmark = pytest.mark.usefixtures("single_thread")

CASES = sorted(
    (path.parent.name, *path.stem.rsplit("_", 1)) for path in (REFERENCE / "exact").glob("*/*.png")
)


def test_fixture_covers_every_deterministic_corruption():
    names = {name for _, name, _ in CASES}
    assert names == {
        "brightness", "contrast", "darken", "defocus_blur", "gaussian_blur", "grayscale", "invert",
        "jpeg_compression", "pixelate", "saturate", "zoom_blur",
    }  # fmt: skip
    assert len(CASES) == 2 * 11 * 5


@pytest.mark.parametrize(("image", "name", "severity"), CASES)
def test_matches_reference(image: str, name: str, severity: str):
    expected = np.asarray(Image.open(REFERENCE / "exact" / image / f"{name}_{severity}.png").convert("RGB"))
    out = corrupt(reference_image(image), name, int(severity), seed=0)
    diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
    assert diff.mean() <= 0.5, f"{image} {name} {severity}: mean |diff| {diff.mean():.3f}"
    assert diff.max() <= 3, f"{image} {name} {severity}: max |diff| {diff.max()}"
