"""VizWiz-Classification (data/README.md): images taken by blind people, scored on a subset of ImageNet classes.

``<root>/annotations.json`` holds ``categories`` (a list of ``{"id": <ImageNet class index>, ...}``) and
``images`` (file names such as ``VizWiz_val_00003893.jpg``, stored under ``<root>/<middle token>/``, here
``<root>/val/``, or directly in ``<root>``). A prediction is the argmax of the classifier's logits over the
listed category ids only.

Ground truth is optional. When present it is read from ``labels`` (``{file name: id or [ids]}``) or from
``annotations`` (a list of ``{"image": file name, "category_id": id}`` or ``"category_ids": [ids]``); a
prediction is correct when it is one of the image's labelled categories. A label keyed by a path
(``val/VizWiz_val_00003893.jpg``) counts for the image of that file name; labels that match no image are
refused in one sentence.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from classification.errors import UserInputError
from classification.eval.preprocess import CROP, load_eval_uint8, normalize_uint8
from classification.textfile import read_json

ANNOTATIONS_FILE = "annotations.json"


@dataclass(frozen=True)
class VizWizAnnotations:
    category_ids: list[int]
    images: list[str]
    labels: dict[str, set[int]]  # empty when the file carries no ground truth


def image_path(root: Path, file_name: str) -> Path:
    """``VizWiz_val_00003893.jpg`` -> ``<root>/val/VizWiz_val_00003893.jpg``, or ``<root>/VizWiz_val_00003893.jpg``
    when only that exists (images extracted next to the annotations)."""
    parts = file_name.split("_")
    if len(parts) < 3:
        raise UserInputError(f"image name {file_name!r} in {root / ANNOTATIONS_FILE} is not of the form "
                             f"VizWiz_<split>_<number>.jpg.")
    nested, flat = root / parts[1] / file_name, root / file_name
    return flat if flat.is_file() and not nested.is_file() else nested


def _labels(raw: dict, source: Path) -> dict[str, set[int]]:
    def ids(value, image) -> set[int]:
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and v.strip().isdigit()
                   for v in values):
            raise UserInputError(f"the label of {image!r} in {source} is {value!r}; labels are ImageNet class "
                                 f"indices (a number or a list of numbers).")
        return {int(v) for v in values}

    if isinstance(raw.get("labels"), dict):
        return {str(name): ids(value, name) for name, value in raw["labels"].items()}
    labels: dict[str, set[int]] = {}
    for entry in raw.get("annotations") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise UserInputError(f"an entry of 'annotations' in {source} lacks the 'image' file name; see "
                                 f"classification/eval/vizwiz.py for the accepted label formats.")
        value = entry.get("category_ids", entry.get("category_id"))
        if value is not None:
            labels.setdefault(entry["image"], set()).update(ids(value, entry["image"]))
    return labels


def read_annotations(root: Path) -> VizWizAnnotations:
    source = root / ANNOTATIONS_FILE
    if not source.is_file():
        raise UserInputError(f"{source} does not exist; download the VizWiz-Classification annotations there.")
    raw = read_json(source, "annotation file", "re-download the VizWiz-Classification annotations")
    try:
        category_ids = [int(c["id"]) for c in raw["categories"]]
        images = raw["images"]
    except (KeyError, TypeError, ValueError) as err:
        raise UserInputError(f"{source} is not a VizWiz-Classification annotation file ({type(err).__name__}: {err}); "
                             f"it needs 'categories' (list of {{\"id\": ...}}) and 'images' (file names).") from None
    if not isinstance(images, list) or not all(isinstance(name, str) for name in images):
        raise UserInputError(f"'images' in {source} must be a list of file names such as VizWiz_val_00003893.jpg.")
    if not category_ids or not all(0 <= i < 1000 for i in category_ids):
        raise UserInputError(f"the 'categories' of {source} must be ImageNet class indices 0..999.")
    labels = _labels(raw, source)
    if not images:
        raise UserInputError(f"'images' in {source} lists no image; re-download the VizWiz-Classification annotations.")
    return VizWizAnnotations(category_ids, images, match_labels(labels, images, source))


def match_labels(labels: dict[str, set[int]], images: list[str], source: Path) -> dict[str, set[int]]:
    """``labels`` keyed by the entries of ``images``: a label keyed by a path (``val/VizWiz_val_00000001.jpg``)
    belongs to the image of that file name. Labels that match no image at all are refused in one sentence
    (they would silently score nothing)."""
    by_file_name = {PurePosixPath(name).name: name for name in images}
    matched = {by_file_name.get(PurePosixPath(key).name, key): ids for key, ids in labels.items()}
    if matched and not any(name in matched for name in images):
        raise UserInputError(f"the labels in {source} name none of its 'images' (a label is keyed {next(iter(labels))!r}, "
                             f"an image is {images[0]!r}); key each label by the image's file name.")
    return matched


class VizWiz(Dataset):
    """``dataset[i] -> (uint8 image (3,224,224), i, decoded)`` with the evaluation preprocessing of §6.1."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserInputError(f"VizWiz folder {self.root} does not exist; set 'vizwiz' in config_paths.yaml "
                                 f"or pass --root PATH.")
        self.annotations = read_annotations(self.root)
        self.paths = [image_path(self.root, name) for name in self.annotations.images]
        for name, path in zip(self.annotations.images, self.paths):
            if not path.is_file():
                raise UserInputError(f"image {path} listed in {self.root / ANNOTATIONS_FILE} does not exist.")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        try:
            return load_eval_uint8(self.paths[index]), index, True
        except (OSError, ValueError, RuntimeError):
            return torch.zeros(3, CROP, CROP, dtype=torch.uint8), index, False


@torch.inference_mode()
def predict_vizwiz(models: dict[str, nn.Module], dataset: VizWiz, batch_size: int = 256, workers: int = 4,
                   device: str | torch.device = "cpu", progress: bool = True) -> dict[str, dict[str, int]]:
    """For every model: {file name: predicted category id}, the argmax over the listed categories only."""
    device = torch.device(device)
    ids = torch.tensor(dataset.annotations.category_ids, device=device)
    models = {name: model.to(device).eval() for name, model in models.items()}
    predictions: dict[str, dict[str, int]] = {name: {} for name in models}
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    for images, indices, decoded in tqdm(loader, desc="vizwiz", unit="batch", disable=not progress):
        if not bool(decoded.all()):
            raise UserInputError(f"image {dataset.paths[int(indices[~decoded][0])]} cannot be decoded; replace it.")
        x = normalize_uint8(images.to(device, non_blocking=True))
        names = [dataset.annotations.images[i] for i in indices.tolist()]
        for key, model in models.items():
            chosen = ids[model(x)[:, ids].argmax(dim=1)].tolist()
            predictions[key].update(zip(names, chosen))
    return predictions


def accuracy(predictions: dict[str, int], labels: dict[str, set[int]]) -> tuple[float, int]:
    """(accuracy in percent, number of scored images) over the images that have labels."""
    scored = [name for name in predictions if labels.get(name)]
    if not scored:
        return float("nan"), 0
    right = sum(predictions[name] in labels[name] for name in scored)
    return 100.0 * right / len(scored), len(scored)
