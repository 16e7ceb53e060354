"""The training data of SyMPIE: ImageNet crops with random synthetic corruptions.

See classification/training/README.md ("Data").

:class:`DistortImageFolder` reads an ImageNet ``train`` folder (one sub-folder per class), holds out
every 50th image for validation, and returns ``(corrupted, label, clean)`` ImageNet-normalised
224x224 crops. With ``corrupt_in_loader=False`` it returns the uint8 crop and the label instead, and
:func:`distort_batch` applies the same random corruptions batched on the training device.

Randomness: with a ``seed``, sample ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``, so a
run is reproducible whatever the number of loader workers (call :meth:`DistortImageFolder.set_epoch`
before iterating, like ``DistributedSampler.set_epoch``). Without a seed the draws come from torch's
global generator, which DataLoader seeds per worker.
"""
from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS  # what ImageFolder reads (.jpg, .png, .tif, .webp ...)
from torchvision.transforms.v2 import functional as TF

from classification.errors import UserInputError
from classification.rgb8 import pil_rgb8
from classification.normalization import normalize
from classification.training.corruptions import (CORRUPTIONS, TRAINING_SET, TRAINING_SET_NO_COLOR, corrupt,
                                                 corrupt_batch, sample_corruption)

log = logging.getLogger(__name__)

VAL_EVERY = 50           # item i of the sorted file list is held out when i % VAL_EVERY == 0
SPLITS = ("train", "val")
MAX_REPLACEMENTS = 100   # undecodable files tolerated in a row before giving up
NO_LABEL = -1            # the label of every image of an unlabelled (flat) folder
COLOR_WARPS = tuple(name for name in TRAINING_SET if name not in TRAINING_SET_NO_COLOR)  # what --no-color drops


def training_methods(no_color: bool = False, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The corruption set of training: ``names`` when given (drawn uniformly, so a name given twice is drawn
    twice as often), else all 23 methods; ``no_color`` leaves SyMPIE's 4 colour warps out of either.

    Raises UserInputError for an unknown name or an empty set."""
    methods = tuple(names) if names else TRAINING_SET
    if no_color:
        methods = tuple(name for name in methods if name not in COLOR_WARPS)
    check_methods(methods, "--corruptions without the colour warps (--no-color)")
    return methods


def check_methods(methods: Sequence[str], what: str = "the corruption set") -> None:
    """Refuse, in one sentence, unknown corruption names or an empty set (``what`` names the set)."""
    unknown = sorted(set(methods) - set(CORRUPTIONS))
    if unknown or not methods:
        problem = f"unknown corruption method(s) {', '.join(unknown)}" if unknown else f"{what} is empty"
        raise UserInputError(f"{problem}; choose from {', '.join(sorted(CORRUPTIONS))}.")


def scan_image_folder(root: str | os.PathLike, labelled: bool = True) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes (sorted sub-folder names) and ``(path, class index)`` for every image, in sorted walk order.

    With ``labelled=False`` (``train.py --labels classifier``) the folder may also be flat: every image
    under ``root`` is taken, with label :data:`NO_LABEL`, and there are no classes.
    Raises UserInputError when ``root`` is missing, has no class folders (when ``labelled``), or no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"ImageNet folder {root} does not exist; pass --imagenet PATH or set 'imagenet' "
                             f"in config_paths.yaml to the ImageNet train folder.")
    if not labelled:
        samples = [(path, NO_LABEL) for path in image_files(root)]
        if not samples:
            raise UserInputError(f"image folder {root} holds no images ({', '.join(IMG_EXTENSIONS)}).")
        return [], samples
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not _hidden(entry.name))
    if not classes:
        raise UserInputError(f"ImageNet folder {root} has no class sub-folders; it must be the train folder "
                             f"with one folder per class (n01440764/, n01443537/, ...), or pass --labels "
                             f"classifier to train on a flat folder of photos.")
    samples = []
    for index, name in enumerate(classes):
        samples.extend((path, index) for path in image_files(root / name))
    if not samples:
        raise UserInputError(f"ImageNet folder {root} has {len(classes)} class folders but no images "
                             f"({', '.join(IMG_EXTENSIONS)}) in them.")
    return classes, samples


def _hidden(name: str) -> bool:
    """Dot files and folders (.ipynb_checkpoints/, macOS ._ resource forks) are neither classes nor images."""
    return name.startswith(".")


def image_files(folder: Path) -> list[str]:
    """Every image file under ``folder`` (symbolic links followed, hidden entries skipped), in sorted walk order."""
    folders = []
    for path, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not _hidden(d)]  # not descended into
        folders.append((path, files))
    return [os.path.join(path, f) for path, files in sorted(folders)
            for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS) and not _hidden(f)]


def sample_seed(*keys: int) -> int:
    """A 64-bit seed that depends on every key (and on nothing else: not on the process or the worker)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0])


def to_normalized(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW ImageNet-normalised float tensor."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    return normalize(x.unsqueeze(0))[0]


def apply_random_corruptions(image: np.ndarray, rng: random.Random, methods: Sequence[str],
                             max_corruptions: int = 1, clean_fraction: float = 0.0) -> np.ndarray:
    """``1 + randrange(max_corruptions)`` corruptions, each a uniform method and a severity in 0..5; with
    probability ``clean_fraction`` none (no draw is made when it is 0, the paper's recipe)."""
    if clean_fraction > 0 and rng.random() < clean_fraction:
        return image
    for _ in range(1 + rng.randrange(max_corruptions)):
        name, severity = sample_corruption(rng, methods)
        image = corrupt(image, name, severity, seed=rng.getrandbits(63))
    return image


def distort_batch(images: torch.Tensor, rng: random.Random, methods: Sequence[str], max_corruptions: int = 1,
                  generator: torch.Generator | None = None, clean_fraction: float = 0.0) -> torch.Tensor:
    """:func:`apply_random_corruptions` for a (B,3,H,W) batch in [0, 1] on any device, batched per round.

    Every image draws its own number of corruptions and its own (method, severity) per round, from the
    same distribution as the loader path; images with fewer rounds get severity 0 (unchanged).
    """
    counts = [0 if clean_fraction > 0 and rng.random() < clean_fraction else 1 + rng.randrange(max_corruptions)
              for _ in range(images.shape[0])]
    for round_index in range(max(counts, default=0)):
        draws = [sample_corruption(rng, methods) if round_index < n else (methods[0], 0) for n in counts]
        names, severities = zip(*draws)
        images = corrupt_batch(images, list(names), list(severities), generator=generator)
    return images


class DistortImageFolder(Dataset):
    """ImageNet train folder -> ``(corrupted, label, clean)`` normalised crops.

    Args:
        root: folder with one sub-folder per class.
        split: ``"train"`` (items with ``i % 50 != 0``) or ``"val"`` (the others).
        methods: corruption names drawn uniformly (default: the 23 of the training set).
        max_corruptions: each sample gets ``1 + randrange(max_corruptions)`` corruptions.
        clean_fraction: probability that a sample gets no corruption at all (0: the paper's recipe).
        resize_size, crop_size: Resize (short side, bilinear) then RandomCrop.
        corrupt_in_loader: if False, return ``(uint8 crop (3,H,W), label)`` for :func:`distort_batch`.
        seed: makes every sample a function of ``(seed, epoch, index)``; see the module docstring.
        scan: a :func:`scan_image_folder` result to reuse (the train and val splits walk the folder once).
        labelled: False accepts a flat folder (labels :data:`NO_LABEL`); see :func:`scan_image_folder`.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", methods: Sequence[str] = TRAINING_SET,
                 max_corruptions: int = 1, resize_size: int = 256, crop_size: int = 224,
                 corrupt_in_loader: bool = True, seed: int | None = None,
                 scan: tuple[list[str], list[tuple[str, int]]] | None = None, clean_fraction: float = 0.0,
                 labelled: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if max_corruptions < 1:
            raise UserInputError(f"--max-corruptions must be at least 1, got {max_corruptions}.")
        if crop_size > resize_size:
            raise UserInputError(f"the crop size ({crop_size}) cannot exceed the resize size ({resize_size}).")
        check_methods(methods)
        self.root = Path(root)
        self.split = split
        if not 0 <= clean_fraction <= 1:
            raise UserInputError(f"--clean-fraction must be in [0, 1], got {clean_fraction}.")
        self.classes, all_samples = scan if scan is not None else scan_image_folder(root, labelled)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        keep_val = split == "val"
        self.samples = [s for i, s in enumerate(all_samples) if (i % VAL_EVERY == 0) == keep_val]
        if not self.samples:
            raise UserInputError(f"ImageNet folder {root} has too few images for a {split} split "
                                 f"(one image in {VAL_EVERY} goes to validation).")
        self.targets = [label for _, label in self.samples]
        self.methods = tuple(methods)
        self.max_corruptions = max_corruptions
        self.clean_fraction = clean_fraction
        self.resize_size = resize_size
        self.crop_size = crop_size
        self.corrupt_in_loader = corrupt_in_loader
        self.seed = seed
        self.epoch = 0
        self._reported: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of ``epoch`` (only meaningful with a seed)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        rng = self._rng(index)
        image, label = self._load(index, rng)
        crop = self._random_crop(image, rng)
        if not self.corrupt_in_loader:
            return torch.from_numpy(crop).permute(2, 0, 1).contiguous(), label
        corrupted = apply_random_corruptions(crop, rng, self.methods, self.max_corruptions, self.clean_fraction)
        return to_normalized(corrupted), label, to_normalized(crop)

    def _rng(self, index: int) -> random.Random:
        if self.seed is None:
            return random.Random(int(torch.randint(2**62, ()).item()))
        return random.Random(sample_seed(self.seed, self.epoch, index))

    def _load(self, index: int, rng: random.Random) -> tuple[Image.Image, int]:
        """The RGB image of ``index``; an undecodable file is reported once and a random other one taken."""
        for _ in range(MAX_REPLACEMENTS):
            path, label = self.samples[index]
            try:
                with Image.open(path) as image:
                    return pil_rgb8(image), label
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                if path not in self._reported:
                    self._reported.add(path)
                    log.warning("cannot decode %s (%s: %s); using another image in its place",
                                path, type(err).__name__, err)
                index = rng.randrange(len(self.samples))
        raise UserInputError(f"{MAX_REPLACEMENTS} images in a row under {self.root} could not be decoded; "
                             f"check the dataset (the log lists the files).")

    def _random_crop(self, image: Image.Image, rng: random.Random) -> np.ndarray:
        """Resize (short side, bilinear) then a uniformly placed square crop, as HxWx3 uint8."""
        image = TF.resize(image, [self.resize_size], interpolation=TF.InterpolationMode.BILINEAR)
        width, height = image.size
        top = rng.randint(0, height - self.crop_size)
        left = rng.randint(0, width - self.crop_size)
        return np.array(image.crop((left, top, left + self.crop_size, top + self.crop_size)))
