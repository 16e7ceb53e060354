"""Qualitative PNGs: palette colouring and the image / ground truth / prediction triplet."""
import numpy as np
import torch
from PIL import Image

from classification.normalization import normalize
from segmentation.cityscapes import IGNORE_INDEX, PALETTE
from segmentation.qualitatives import colorize, save_qualitative, to_image


def test_colorize_uses_the_cityscapes_palette_and_black_for_ignore():
    label = torch.tensor([[0, 10, 18], [IGNORE_INDEX, -1, 19]])
    rgb = np.asarray(colorize(label))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert [tuple(c) for c in rgb[0]] == [PALETTE[0], PALETTE[10], PALETTE[18]]
    assert (rgb[1] == 0).all()
    assert PALETTE[0] == (128, 64, 128) and PALETTE[10] == (70, 130, 180)  # road, sky


def test_to_image_inverts_normalisation_and_clips():
    rgb = torch.randint(0, 256, (3, 4, 5)).float() / 255
    x = normalize(rgb[None])[0]
    np.testing.assert_array_equal(np.asarray(to_image(x)), (rgb * 255).round().byte().permute(1, 2, 0).numpy())
    assert np.asarray(to_image(torch.full((3, 2, 2), 100.0))).min() == 255


def test_save_qualitative_writes_the_triplet(tmp_path):
    image = torch.zeros(3, 6, 8)
    label = torch.full((6, 8), 2)
    pred = torch.full((6, 8), 13)
    save_qualitative(tmp_path, 7, image, label, pred)
    for kind, colour in (("gt", PALETTE[2]), ("pred", PALETTE[13])):
        saved = np.asarray(Image.open(tmp_path / kind / "0007.png"))
        assert saved.shape == (6, 8, 3) and tuple(saved[0, 0]) == colour
    assert Image.open(tmp_path / "image" / "0007.png").size == (8, 6)
    assert not list(tmp_path.rglob("*.tmp*"))
