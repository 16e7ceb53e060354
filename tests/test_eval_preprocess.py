"""Evaluation preprocessing: the authors' 232/224 INTER_AREA outputs, sizes, offsets and decoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from classification.eval.preprocess import (crop_offset, decode_rgb, decode_rgb_pil, load_eval_image, load_eval_uint8,
                                            resize_area, resize_crop, resized_size)
from classification.normalization import normalize
from conftest import REFERENCE

PAIRS = ("landscape", "large", "portrait", "square224")


def read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("name", PAIRS)
def test_matches_reference_pairs(name):
    source = read_rgb(REFERENCE / "eval_preprocess" / f"{name}_source.png")
    expected = read_rgb(REFERENCE / "eval_preprocess" / f"{name}_expected.png").astype(int)
    diff = np.abs(resize_crop(source).astype(int) - expected)
    assert diff.mean() <= 0.5 and diff.max() <= 2


def test_loader_output_is_normalised_reference(tmp_path):
    source = read_rgb(REFERENCE / "eval_preprocess" / "portrait_source.png")
    Image.fromarray(source).save(tmp_path / "portrait.png")
    expected = read_rgb(REFERENCE / "eval_preprocess" / "portrait_expected.png")
    x = load_eval_image(tmp_path / "portrait.png")
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    want = normalize(torch.from_numpy(expected.copy()).permute(2, 0, 1)[None].float() / 255)[0]
    assert torch.allclose(x, want, atol=2 / 255 / 0.224)
    assert load_eval_uint8(tmp_path / "portrait.png").dtype == torch.uint8


@pytest.mark.parametrize("hw, expected", [((375, 500), (232, 309)), ((500, 333), (348, 232)), ((224, 224), (232, 232)),
                                          ((232, 400), (232, 400))])
def test_resized_size_scales_the_short_side(hw, expected):
    assert resized_size(*hw) == expected


def test_crop_offset_is_floor_of_half():
    assert crop_offset(232) == 4 and crop_offset(309) == 42 and crop_offset(225) == 0


def test_shrink_is_area_mean_for_integer_factors():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(8, 12, 3)).astype(np.uint8)
    out = resize_area(image, 4, 6)
    want = image.reshape(4, 2, 6, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(out.astype(float) - want).max() <= 0.5 + 1e-6


def test_shrink_covers_fractional_footprints():
    image = np.zeros((1, 3, 3), dtype=np.uint8)
    image[0, :, 0] = [0, 90, 180]
    out = resize_area(np.repeat(image, 2, axis=0), 2, 2)  # 3 -> 2 columns: weights (2/3, 1/3), (1/3, 2/3)
    assert out[0, :, 0].tolist() == [30, 150]


def test_identity_and_window():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    assert np.array_equal(resize_area(image, 5, 7), image)
    full = resize_area(image, 9, 13)
    assert np.array_equal(resize_area(image, 9, 13, rows=(2, 6), cols=(3, 10)), full[2:6, 3:10])


def test_enlarge_constant_image_stays_constant():
    image = np.full((224, 224, 3), 137, dtype=np.uint8)
    assert (resize_crop(image) == 137).all()


def test_decoders_agree_and_handle_greyscale(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, size=(40, 50), dtype=np.uint8), mode="L").save(tmp_path / "grey.jpg")
    Image.fromarray(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)).save(tmp_path / "colour.bmp")
    for name in ("grey.jpg", "colour.bmp"):
        a, b = decode_rgb(tmp_path / name), decode_rgb_pil(tmp_path / name)
        assert a.shape == (40, 50, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
