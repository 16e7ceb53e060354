"""Cityscapes-layout evaluation data (Cityscapes, ACDC and Dark Zurich share it).

A dataset root holds a split file ``<split>.txt`` whose lines are ``<image path> <label path>``, both
relative to the root. Labels are Cityscapes labelIds; they are mapped to the 19 train ids (everything
else becomes :data:`IGNORE_INDEX`). Images are resized so that their long side is 1024 pixels by area
averaging, labels by nearest neighbour (pixel-centre aligned). Images come out ImageNet-normalised.
See segmentation/README.md.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from classification.errors import UserInputError
from classification.normalization import IMAGENET_MEAN, IMAGENET_STD
from classification.rgb8 import pil_rgb8
from classification.textfile import read_text

LONG_SIDE = 1024
IGNORE_INDEX = 255
CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
NUM_CLASSES = len(CLASS_NAMES)
PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
IGNORE_COLOR = (0, 0, 0)
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def _train_id_table() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


TRAIN_ID_TABLE = _train_id_table()


def label_ids_to_train_ids(labels: np.ndarray) -> np.ndarray:
    """Cityscapes labelIds (any integer array) -> train ids 0..18, :data:`IGNORE_INDEX` elsewhere."""
    labels = np.asarray(labels)
    inside = (labels >= 0) & (labels < len(TRAIN_ID_TABLE))
    return np.where(inside, TRAIN_ID_TABLE[np.clip(labels, 0, len(TRAIN_ID_TABLE) - 1)], IGNORE_INDEX).astype(np.uint8)


def long_side_size(width: int, height: int, long_side: int = LONG_SIDE) -> tuple[int, int]:
    """(width, height) with the long side set to ``long_side``; the short side is truncated, not rounded."""
    if height > width:
        return int(long_side * width / height), long_side
    return long_side, int(long_side * height / width)


@functools.lru_cache(maxsize=16)
def _area_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights (size_out, taps) of exact area averaging along one axis."""
    scale = size_in / size_out
    start = np.arange(size_out) * scale
    end = start + scale
    first = np.floor(start).astype(np.int64)
    taps = int(np.ceil(scale)) + 1
    index = first[:, None] + np.arange(taps)[None, :]
    overlap = np.minimum(index + 1, end[:, None]) - np.maximum(index, start[:, None])
    weight = np.clip(overlap, 0.0, None) / scale
    weight[index >= size_in] = 0.0
    return np.minimum(index, size_in - 1), weight


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (H, W, C) uint8 image to ``size`` = (width, height) by area averaging (each output pixel is
    the overlap-weighted mean of the source pixels it covers), rounded half up."""
    width, height = size
    out = image.astype(np.float32)
    for axis, size_out in ((0, height), (1, width)):
        if out.shape[axis] == size_out:
            continue
        index, weight = _area_taps(out.shape[axis], size_out)
        shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
        out = sum(np.take(out, index[:, k], axis=axis) * weight[:, k].astype(np.float32).reshape(shape)
                  for k in range(index.shape[1]))
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def nearest_resize(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (H, W) label map to ``size`` = (width, height), sampling the source pixel under each
    output pixel's centre."""
    width, height = size
    rows = np.minimum(((np.arange(height) + 0.5) * label.shape[0] / height).astype(np.int64), label.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * label.shape[1] / width).astype(np.int64), label.shape[1] - 1)
    return label[rows[:, None], cols[None, :]]


def check_label_ids(label: np.ndarray, path: Path) -> np.ndarray:
    """``label`` if it is a map of Cityscapes labelIds: one channel of integers up to 255 (the
    ``*_labelIds.png`` files; colour maps and instance ids are refused in one sentence naming ``path``)."""
    if label.ndim != 2:
        raise UserInputError(f"label {path} has {label.shape[2]} channels; expected a single-channel "
                             f"labelId map (the *_labelIds.png files).")
    if label.dtype.kind not in "ui":
        raise UserInputError(f"label {path} holds {label.dtype} values; expected integer labelIds (the "
                             f"*_labelIds.png files).")
    if label.size and int(label.max()) > 255:
        raise UserInputError(f"label {path} holds values up to {int(label.max())}, like an instance-id map; "
                             f"list the *_labelIds.png files instead (labelIds are 0..33).")
    return label


def _image_size(path: Path, what: str, split_file: Path) -> tuple[int, int]:
    if not path.is_file():
        raise UserInputError(f"{what} {path} listed in {split_file} does not exist; fix the split file or the dataset root.")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as err:
        raise UserInputError(f"{what} {path} listed in {split_file} is not a readable image ({err}).") from None


class Cityscapes(Dataset):
    """``dataset[i] -> (image, label)``: ImageNet-normalised float (3,H,W) and train ids int64 (H,W).

    ``check_files`` verifies at construction that every listed file exists, is an image, and that each
    label has its image's size (only file headers are read).
    """

    def __init__(self, root: str | os.PathLike, split: str = "val", long_side: int = LONG_SIDE,
                 check_files: bool = True):
        self.root = Path(root)
        self.split_file = self.root / f"{split}.txt"
        self.long_side = long_side
        self.items = self._read_split()
        if check_files:
            for image, label in self.items:
                self._check_sizes(image, label, _image_size(image, "image", self.split_file),
                                  _image_size(label, "label", self.split_file))

    def _read_split(self) -> list[tuple[Path, Path]]:
        if not self.split_file.is_file():
            raise UserInputError(f"split file {self.split_file} does not exist; write it with one "
                                 f"'<image path> <label path>' line per image (see data/README.md).")
        items = []
        for number, line in enumerate(read_text(self.split_file, "split file").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise UserInputError(f"line {number} of {self.split_file} has {len(fields)} fields; expected "
                                     f"'<image path> <label path>'.")
            items.append((self.root / fields[0], self.root / fields[1]))
        if not items:
            raise UserInputError(f"split file {self.split_file} lists no images.")
        return items

    def _check_sizes(self, image: Path, label: Path, image_size: tuple[int, int], label_size: tuple[int, int]) -> None:
        if image_size != label_size:
            raise UserInputError(f"label {label} is {label_size[0]}x{label_size[1]} but its image {image} is "
                                 f"{image_size[0]}x{image_size[1]}; labels must have their image's size.")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.items[index]
        try:
            with Image.open(image_path) as im:
                image = np.asarray(pil_rgb8(im))
            with Image.open(label_path) as lb:
                label = check_label_ids(np.asarray(lb), label_path)
        except (UnidentifiedImageError, OSError) as err:
            raise UserInputError(f"could not decode {image_path} or {label_path} ({err}); replace the file or "
                                 f"remove its line from {self.split_file}.") from None
        self._check_sizes(image_path, label_path, image.shape[1::-1], label.shape[::-1])
        size = long_side_size(image.shape[1], image.shape[0], self.long_side)
        image = area_resize(image, size)
        label = label_ids_to_train_ids(nearest_resize(label, size))
        return to_normalized_tensor(image), torch.from_numpy(label.astype(np.int64))


def to_normalized_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> ImageNet-normalised float32 (3, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(torch.float64).div_(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(3, 1, 1)
    return ((x - mean) / std).float()


def collate_by_size(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stack samples of equal size: a list of (images, labels) batches, one per distinct image size."""
    groups: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for image, label in batch:
        groups.setdefault(tuple(image.shape), []).append((image, label))
    return [(torch.stack([i for i, _ in group]), torch.stack([l for _, l in group])) for group in groups.values()]
