"""Cityscapes-layout dataset: label mapping, resizing, split file and bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from classification.errors import UserInputError
from classification.normalization import denormalize
from segmentation.cityscapes import (IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID, Cityscapes, area_resize, collate_by_size,
                                     label_ids_to_train_ids, long_side_size, nearest_resize)
from segmentation.synthetic import make_synthetic_cityscapes


def test_label_mapping_table():
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert LABEL_ID_TO_TRAIN_ID == expected
    ids = np.arange(-1, 300)
    train = label_ids_to_train_ids(ids)
    for label_id, train_id in zip(ids, train):
        assert train_id == expected.get(int(label_id), IGNORE_INDEX)


@pytest.mark.parametrize("size,expected", [((2048, 1024), (1024, 512)), ((1920, 1080), (1024, 576)),
                                           ((1080, 1920), (576, 1024)), ((100, 33), (1024, 337)),
                                           ((64, 32), (1024, 512))])
def test_long_side_size(size, expected):
    assert long_side_size(*size) == expected


def test_area_resize_integer_factor_is_block_mean_rounded_half_up():
    image = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    out = area_resize(image, (6, 4))
    block_mean = image.astype(np.float64).reshape(4, 2, 6, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(out, np.floor(block_mean + 0.5).astype(np.uint8))


def test_area_resize_fractional_factor_weights_by_overlap():
    # 3 -> 2 pixels: output 0 covers source [0, 1.5), output 1 covers [1.5, 3).
    image = np.array([[[0], [100], [200]]], dtype=np.uint8)
    out = area_resize(image, (2, 1))
    assert out[0, :, 0].tolist() == [33, 167]  # (0 + 0.5*100)/1.5, (0.5*100 + 200)/1.5


def test_area_resize_equals_supersampled_box_average():
    # 15x8 -> 8x6 (factors 1.875 and 1.33, like 1920x1080 -> 1024x576): replicate every source pixel
    # out_w (out_h) times, then average runs of in_w (in_h) cells -- the exact area average.
    image = np.random.default_rng(2).integers(0, 256, (8, 15, 3), dtype=np.uint8)
    fine = image.astype(np.float64).repeat(6, axis=0).repeat(8, axis=1)
    reference = fine.reshape(6, 8, 8, 15, 3).mean(axis=(1, 3))
    out = area_resize(image, (8, 6)).astype(np.int64)
    tie = np.abs(reference - np.floor(reference) - 0.5) < 1e-6  # x.5 exactly: either neighbour is fine
    np.testing.assert_array_equal(out[~tie], np.floor(reference[~tie] + 0.5))
    assert np.abs(out[tie] - reference[tie]).max(initial=0) == 0.5


def test_area_resize_preserves_constant_images_and_mean():
    constant = np.full((15, 19, 3), 77, dtype=np.uint8)
    assert (area_resize(constant, (8, 6)) == 77).all()
    image = np.random.default_rng(1).integers(0, 256, (108, 192, 3), dtype=np.uint8)
    out = area_resize(image, (102, 57))
    assert out.shape == (57, 102, 3)
    assert abs(out.astype(float).mean() - image.mean()) < 1.0


def test_nearest_resize_samples_pixel_centres():
    label = np.arange(4 * 6).reshape(4, 6)
    out = nearest_resize(label, (3, 2))
    assert out.tolist() == [[7, 9, 11], [19, 21, 23]]  # rows 1, 3 and columns 1, 3, 5
    assert nearest_resize(label, (6, 4)).tolist() == label.tolist()


def test_dataset_item_shapes_values_and_normalisation(tmp_path):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(40, 20), (30, 60)])
    dataset = Cityscapes(root, long_side=32)
    assert len(dataset) == 2
    image, label = dataset[0]
    assert image.shape == (3, 16, 32) and image.dtype == torch.float32
    assert label.shape == (16, 32) and label.dtype == torch.int64
    raw_image = np.asarray(Image.open(root / dataset.items[0][0].relative_to(root)).convert("RGB"))
    expected = area_resize(raw_image, (32, 16))
    rgb = denormalize(image[None])[0].permute(1, 2, 0).numpy() * 255
    np.testing.assert_allclose(rgb, expected, atol=1e-3)
    raw_label = np.asarray(Image.open(dataset.items[0][1]))
    np.testing.assert_array_equal(label.numpy(), label_ids_to_train_ids(nearest_resize(raw_label, (32, 16))))
    assert set(label.unique().tolist()) <= set(range(19)) | {IGNORE_INDEX}
    assert IGNORE_INDEX in label.unique().tolist()  # bands of labelId 0 and 4
    portrait, portrait_label = dataset[1]
    assert portrait.shape == (3, 32, 16) and portrait_label.shape == (32, 16)


def test_default_long_side_is_1024(tmp_path):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(64, 32)])
    image, label = Cityscapes(root)[0]
    assert image.shape == (3, 512, 1024) and label.shape == (512, 1024)


def test_collate_by_size_groups_equal_sizes():
    a, b, c = torch.zeros(3, 4, 8), torch.ones(3, 4, 8), torch.zeros(3, 8, 4)
    la, lb, lc = torch.zeros(4, 8), torch.ones(4, 8), torch.zeros(8, 4)
    groups = collate_by_size([(a, la), (c, lc), (b, lb)])
    assert [g[0].shape for g in groups] == [(2, 3, 4, 8), (1, 3, 8, 4)]
    assert torch.equal(groups[0][1][1], lb)


# --------------------------------------------------------------------------- bad input

def test_missing_split_file(tmp_path):
    with pytest.raises(UserInputError, match=r"split file .*val\.txt does not exist"):
        Cityscapes(tmp_path)


def test_malformed_and_empty_split_files(tmp_path):
    (tmp_path / "val.txt").write_text("a.png b.png\nonly_one_field.png\n")
    with pytest.raises(UserInputError, match="line 2 of .*val.txt has 1 fields"):
        Cityscapes(tmp_path)
    (tmp_path / "val.txt").write_text("\n\n")
    with pytest.raises(UserInputError, match="lists no images"):
        Cityscapes(tmp_path)


def test_missing_image_is_named(tmp_path):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(16, 8)])
    image_path = Cityscapes(root).items[0][0]
    image_path.unlink()
    with pytest.raises(UserInputError, match=f"image {image_path} listed in .*val.txt does not exist"):
        Cityscapes(root)


def test_undecodable_label_is_named(tmp_path):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(16, 8)])
    label_path = Cityscapes(root).items[0][1]
    label_path.write_bytes(b"this is not a png")
    with pytest.raises(UserInputError, match=f"label {label_path} .* is not a readable image"):
        Cityscapes(root)


def test_label_of_the_wrong_size(tmp_path):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(16, 8)])
    label_path = Cityscapes(root).items[0][1]
    Image.fromarray(np.zeros((9, 16), dtype=np.uint8)).save(label_path)
    with pytest.raises(UserInputError, match=r"label .* is 16x9 but its image .* is 16x8"):
        Cityscapes(root)
    unchecked = Cityscapes(root, check_files=False)  # the same check runs when the item is loaded
    with pytest.raises(UserInputError, match="16x9"):
        unchecked[0]


def test_colour_label_is_rejected_on_load(tmp_path):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(16, 8)])
    label_path = Cityscapes(root).items[0][1]
    Image.fromarray(np.zeros((8, 16, 3), dtype=np.uint8)).save(label_path)
    with pytest.raises(UserInputError, match="single-channel labelId map"):
        Cityscapes(root)[0]


def test_images_of_any_mode_are_rgb_and_sixteen_bit_grey_is_scaled(tmp_path):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(16, 8)] * 4)
    dataset = Cityscapes(root, long_side=16)
    rgb = [np.asarray(Image.open(image).convert("RGB")) for image, _ in dataset.items]
    grey = np.asarray(Image.fromarray(rgb[0]).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(dataset.items[0][0])  # 16-bit grey PNG
    Image.fromarray(rgb[1]).convert("RGBA").save(dataset.items[1][0])
    Image.fromarray(rgb[2]).convert("P").save(dataset.items[2][0])
    Image.fromarray(rgb[3]).convert("CMYK").save(dataset.items[3][0].with_suffix(".tif"))
    dataset.items[3][0].with_suffix(".tif").rename(dataset.items[3][0])
    images = [denormalize(dataset[i][0][None])[0].mul(255).round().permute(1, 2, 0).numpy() for i in range(4)]
    np.testing.assert_allclose(images[0], np.repeat(grey[..., None], 3, axis=2), atol=1)  # not clipped to white
    np.testing.assert_allclose(images[1], rgb[1], atol=1)
    assert all(image.shape == (8, 16, 3) for image in images)


@pytest.mark.parametrize("label, message", [
    (Image.fromarray(np.full((8, 16), 26001, dtype=np.uint16)), r"holds values up to 26001, like an instance-id map"),
    (Image.fromarray(np.zeros((8, 16), dtype=np.uint8)).convert("1"), r"holds bool values; expected integer labelIds"),
    (Image.fromarray(np.zeros((8, 16, 4), dtype=np.uint8)), r"has 4 channels"),
])
def test_labels_that_are_not_label_id_maps_are_named(tmp_path, label, message):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(16, 8)])
    label_path = Cityscapes(root).items[0][1]
    label.save(label_path)
    with pytest.raises(UserInputError, match=f"label {label_path} {message}"):
        Cityscapes(root)[0]


def test_split_file_with_byte_order_mark_and_crlf(tmp_path):
    root = make_synthetic_cityscapes(tmp_path, sizes=[(16, 8), (16, 8)])
    text = (root / "val.txt").read_text()
    (root / "val.txt").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert [(i.relative_to(root).as_posix(), l.relative_to(root).as_posix()) for i, l in Cityscapes(root).items] == \
        [tuple(line.split()) for line in text.splitlines()]
