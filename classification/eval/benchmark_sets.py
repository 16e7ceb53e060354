"""ImageNet-C, ImageNet-C-Bar and ImageNet-C-Mixed as accuracy grids (layouts: data/README.md).

Every dataset is a flat list of :class:`GridItem` (image file, label, grid row, columns). A grid has one
row per category and five columns (severities 1..5). An item counts in the columns of its bit mask
(bit ``c`` = severity ``c + 1``): one bit for a corrupted file; all five for a clean image, which is
therefore read and classified once instead of five times (same grid).

The split file ``images.txt`` has one line per ImageNet validation image, ``<wnid>/<file>.JPEG <label>``
(the file name may hold spaces: the label is the last field).

``--quick`` keeps the authors' subset: their evaluation list enumerates (line, severity, category) with
the category varying fastest, and keeps ``RandomState(42).permutation(n)[: n // 50]`` of its ``n``
entries, so each cell gets its own random ~2 % of the images (clean ones included, per column).
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset

from classification.errors import UserInputError
from classification.imagenet import SPLIT_FILE, STORED_SUFFIXES, imagenet_class_index
from classification.eval.preprocess import CROP, load_eval_uint8
from classification.textfile import read_text
from classification.training.corruptions import IMAGENET_C, IMAGENET_C_GROUPS

SEVERITIES = (1, 2, 3, 4, 5)
ALL_COLUMNS = (1 << len(SEVERITIES)) - 1  # column mask of an image counted at every severity
QUICK_SEED = 42
QUICK_FRACTION = 50

GROUP_OF: dict[str, str] = {c: group for group, names in IMAGENET_C_GROUPS.items() for c in names}
IMAGENETC_CATEGORIES: tuple[str, ...] = (*IMAGENET_C, "colwarp", "clean")
IMAGENETC_BAR_CORRUPTIONS: tuple[str, ...] = (
    "blue_noise_sample", "brownish_noise", "caustic_refraction", "checkerboard_cutout", "cocentric_sine_waves",
    "inverse_sparkles", "perlin_noise", "plasma_noise", "single_frequency_greyscale", "sparkles")
IMAGENETC_BAR_CATEGORIES: tuple[str, ...] = (*IMAGENETC_BAR_CORRUPTIONS, "clean")
IMAGENETC_MIXED_CATEGORIES: tuple[str, ...] = ("mixed",)


@dataclass(frozen=True)
class SplitLine:
    """One line of the split file: image path relative to a category folder, class index, 1-based line number."""

    path: str
    label: int
    line_no: int


@dataclass(frozen=True)
class GridItem:
    """One image to classify and the grid cell(s) it counts in."""

    path: Path
    label: int
    row: int
    columns: int  # bit mask: bit c = severity c + 1
    line_no: int


@dataclass(frozen=True)
class MissingImage:
    path: Path
    line_no: int


def read_split(split_file: Path) -> list[SplitLine]:
    """Parse ``images.txt``; a malformed line is reported with its number."""
    if not split_file.exists():
        raise UserInputError(f"split file {split_file} does not exist; write it with the scripts in data/ "
                             f"(one '<wnid>/<file>.JPEG <class index>' line per image) or pass --split PATH.")
    lines = []
    for line_no, raw in enumerate(read_text(split_file, "split file").splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.strip().rsplit(None, 1)  # the path may hold spaces, the label is the last field
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or not 0 <= int(parts[1]) < 1000:
            raise UserInputError(f"line {line_no} of {split_file} reads {raw.strip()!r}; expected "
                                 f"'<wnid>/<file>.JPEG <class index 0..999>'.")
        lines.append(SplitLine(parts[0], int(parts[1]), line_no))
    if not lines:
        raise UserInputError(f"split file {split_file} lists no images.")
    check_unique(lines, split_file)
    check_class_order(lines, split_file)
    return lines


def check_unique(lines: list[SplitLine], split_file: Path) -> None:
    """Refuse an image listed twice: it would be classified and counted twice (or under two labels)."""
    first_line: dict[str, int] = {}
    for line in lines:
        earlier = first_line.setdefault(line.path, line.line_no)
        if earlier != line.line_no:
            raise UserInputError(f"lines {earlier} and {line.line_no} of {split_file} both list {line.path}; every "
                                 f"image must be listed once (remove the repeated line, or write the file again "
                                 f"with data/make_splits.py).")


def check_class_order(lines: list[SplitLine], split_file: Path) -> None:
    """Refuse labels in another class order than the classifiers' (e.g. the ILSVRC devkit's 1-based ids):
    where a line's folder is a wnid, its label must be that wnid's index among the 1000 sorted wnids."""
    index = imagenet_class_index()
    for line in lines:
        wnid = line.path.split("/", 1)[0]
        if index.get(wnid, line.label) != line.label:
            raise UserInputError(f"line {line.line_no} of {split_file} gives {wnid} the class index {line.label}, "
                                 f"but the classifiers' index of {wnid} is {index[wnid]} (its place among the 1000 "
                                 f"sorted wnids); write the file again with data/make_splits.py.")


def quick_cells(num_lines: int, num_categories: int) -> np.ndarray:
    """The ``--quick`` entries as (line index, column, row) rows, sorted: the authors' 1/50 subset of the
    (line, severity, category) enumeration, category fastest."""
    n = num_lines * len(SEVERITIES) * num_categories
    keep = np.random.RandomState(QUICK_SEED).permutation(n)[: n // QUICK_FRACTION]
    line, rest = np.divmod(keep, len(SEVERITIES) * num_categories)
    column, row = np.divmod(rest, num_categories)
    return np.stack([line, column, row], axis=1)[np.lexsort((line, column, row))]


def severity_of(columns: int) -> int:
    """The severity of a one-column mask (1 << c -> c + 1)."""
    return SEVERITIES[columns.bit_length() - 1]


def with_jpg_suffix(path: str) -> str:
    """``.JPEG`` -> ``.jpg`` (the clean and colwarp folders store re-encoded files)."""
    stem, ext = os.path.splitext(path)
    return stem + ".jpg" if ext.lower() == ".jpeg" else path


_OTHER_NAME = tuple(zip(STORED_SUFFIXES, reversed(STORED_SUFFIXES)))  # ((".JPEG", ".jpg"), (".jpg", ".JPEG"))


def stored_as(*paths: str) -> list[str]:
    """The files that may hold ``paths``: each one as given, then under the other name of
    :data:`STORED_SUFFIXES` (for a ``.JPEG`` or ``.jpg`` path). Called for each of the millions of cells
    when a grid is built, hence plain string slicing."""
    names = list(paths)
    for path in paths:
        for suffix, other in _OTHER_NAME:
            if path.endswith(suffix):
                names.append(path[: -len(suffix)] + other)
                break
    return names


class _FolderListing:
    """Existence checks through one ``os.scandir`` per folder (millions of ``stat`` calls are slow on NFS)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._names: dict[str, frozenset[str]] = {}

    def exists(self, relative: str) -> bool:
        folder, name = posixpath.split(relative)
        if folder not in self._names:
            try:
                with os.scandir(self.root / folder) as entries:
                    self._names[folder] = frozenset(e.name for e in entries)
            except OSError:
                self._names[folder] = frozenset()
        return name in self._names[folder]


class CorruptionGrid(Dataset):
    """Base class: ``dataset[i] -> (image, label, row, column mask, i, decoded)``.

    ``image`` is the preprocessed uint8 (3, 224, 224) tensor (normalised on the device, see
    :func:`~classification.eval.preprocess.normalize_uint8`: a quarter of the inter-process traffic).
    ``decoded`` is False (and the image zeros) when the file cannot be decoded, so that the evaluation
    loop, not a loader worker, reports the file.

    Subclasses define ``categories`` and :meth:`candidates` (the possible files of one line in one cell,
    relative to the root). A line whose image is missing raises :class:`UserInputError` naming it, unless
    ``skip_missing`` is set: then it is left out and listed in :attr:`missing`.

    The items (4 million for ImageNet-C) are kept as four small NumPy arrays, not Python objects, so that
    loader workers do not copy them page by page; :meth:`item` rebuilds one.
    """

    categories: tuple[str, ...]  # the grid's rows
    kind: str  # the benchmark's name, also its config_paths.yaml key

    def __init_subclass__(cls, kind: str, categories: tuple[str, ...], **kwargs):
        super().__init_subclass__(**kwargs)
        cls.kind, cls.categories = kind, categories

    def __init__(self, root: str | os.PathLike, split_file: str | os.PathLike | None = None,
                 quick: bool = False, skip_missing: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserInputError(f"dataset folder {self.root} does not exist; set the '{self.kind}' key in "
                                 f"config_paths.yaml or pass --root PATH.")
        self.split_file = Path(split_file) if split_file is not None else self.root / SPLIT_FILE
        self.lines = read_split(self.split_file)
        self.quick = quick
        self.missing: list[MissingImage] = []
        rows, masks, line_index, choice = [], [], [], []
        listing = _FolderListing(self.root)
        for row, column_mask, index in self._cells():
            category, line = self.categories[row], self.lines[index]
            options = self.candidates(category, column_mask, line)
            found = next((k for k, option in enumerate(options) if listing.exists(option)), None)
            if found is not None:
                rows.append(row)
                masks.append(column_mask)
                line_index.append(index)
                choice.append(found)
            elif skip_missing:
                self.missing.append(MissingImage(self.root / options[0], line.line_no))
            else:
                raise self._missing_error(category, options, line)
        if not rows and not self.missing:
            raise UserInputError(f"--quick keeps 1/{QUICK_FRACTION} of the {len(self.lines)} x "
                                 f"{len(SEVERITIES) * len(self.categories)} evaluations of {self.split_file}, "
                                 f"i.e. none; run without --quick.")
        self._rows = np.asarray(rows, dtype=np.int16)
        self._masks = np.asarray(masks, dtype=np.int8)
        self._lines = np.asarray(line_index, dtype=np.int32)
        self._choice = np.asarray(choice, dtype=np.int8)

    def _missing_error(self, category: str, options: list[str], line: SplitLine) -> UserInputError:
        """The sentence for a missing image; a whole missing cell folder is named as such, with where it
        comes from (the published ImageNet-C has no ``clean/`` and ``color/``)."""
        folder = self.root / PurePosixPath(options[0]).parent.parent
        if any((self.root / PurePosixPath(option).parent.parent).is_dir() for option in options):
            return UserInputError(f"image {self.root / options[0]} (line {line.line_no} of {self.split_file}) does "
                                  f"not exist; complete the dataset or pass --skip-missing to leave such images out.")
        if category in ("clean", "colwarp"):
            source = "render it with classification/eval/render.py --parts clean color (data/README.md)"
        else:
            source = (f"check that {self.root} is laid out as the '{self.kind}' benchmark of data/README.md "
                      f"(validate.py --bar and --mixed read the other two)")
        return UserInputError(f"folder {folder} of the '{category}' row does not exist; {source}, or pass "
                              f"--skip-missing to leave its cells empty.")

    def _cells(self):
        """(row, column mask, line index) of every file to read, grouped by folder."""
        num_lines = len(self.lines)
        clean = self.categories.index("clean") if "clean" in self.categories else -1
        if not self.quick:
            for row in range(len(self.categories)):
                for column in ([None] if row == clean else range(len(SEVERITIES))):
                    mask = ALL_COLUMNS if column is None else 1 << column
                    for index in range(num_lines):
                        yield row, mask, index
            return
        clean_masks: dict[int, int] = {}
        for index, column, row in quick_cells(num_lines, len(self.categories)).tolist():
            if row == clean:
                clean_masks[index] = clean_masks.get(index, 0) | 1 << column
            else:
                yield row, 1 << column, index
        for index in sorted(clean_masks):
            yield clean, clean_masks[index], index

    def candidates(self, category: str, columns: int, line: SplitLine) -> list[str]:
        """Possible files (relative to the root, '/'-separated) of ``line`` for ``category`` at the severity of
        the column mask ``columns`` (clean images do not depend on it)."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.categories), len(SEVERITIES)

    def __len__(self) -> int:
        return len(self._rows)

    def item(self, index: int) -> GridItem:
        row, columns = int(self._rows[index]), int(self._masks[index])
        line = self.lines[int(self._lines[index])]
        relative = self.candidates(self.categories[row], columns, line)[int(self._choice[index])]
        return GridItem(self.root / relative, line.label, row, columns, line.line_no)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int, int, bool]:
        item = self.item(index)
        try:
            image, decoded = load_eval_uint8(item.path), True
        except (OSError, ValueError, RuntimeError):
            image, decoded = torch.zeros(3, CROP, CROP, dtype=torch.uint8), False
        return image, item.label, item.row, item.columns, index, decoded

    def describe(self) -> dict:
        """Summary for the results' metadata."""
        return {"kind": self.kind, "root": str(self.root), "split_file": str(self.split_file),
                "categories": list(self.categories), "images_in_split": len(self.lines),
                "images_used": len(np.unique(self._lines)), "quick": self.quick, "files": len(self),
                "missing": len(self.missing)}


class ImagenetC(CorruptionGrid, kind="imagenetc", categories=IMAGENETC_CATEGORIES):
    """ImageNet-C: 15 corruptions (``<group>/<corruption>/<sev>/``, or ``<corruption>/<sev>/`` when the
    archives were extracted into one folder), ``color/<sev>/`` and ``clean/``."""

    def candidates(self, category: str, columns: int, line: SplitLine) -> list[str]:
        if category == "clean":
            return stored_as(f"clean/{with_jpg_suffix(line.path)}")
        severity = severity_of(columns)
        if category == "colwarp":
            return stored_as(f"color/{severity}/{with_jpg_suffix(line.path)}")
        return stored_as(f"{GROUP_OF[category]}/{category}/{severity}/{line.path}", f"{category}/{severity}/{line.path}")


class ImagenetCBar(CorruptionGrid, kind="imagenetc-bar", categories=IMAGENETC_BAR_CATEGORIES):
    """ImageNet-C-Bar: 10 corruptions (``<corruption>/<sev>/``) and ``clean/``."""

    def candidates(self, category: str, columns: int, line: SplitLine) -> list[str]:
        if category == "clean":
            return stored_as(f"clean/{with_jpg_suffix(line.path)}")
        return stored_as(f"{category}/{severity_of(columns)}/{line.path}")


class ImagenetCMixed(CorruptionGrid, kind="imagenetc-mixed", categories=IMAGENETC_MIXED_CATEGORIES):
    """ImageNet-C-Mixed: one row, ``<sev>/<line path>`` stored as ``.JPEG`` or ``.jpg``."""

    def candidates(self, category: str, columns: int, line: SplitLine) -> list[str]:
        return stored_as(f"{severity_of(columns)}/{line.path}")


DATASETS: dict[str, type[CorruptionGrid]] = {
    "imagenetc": ImagenetC,
    "imagenetc-bar": ImagenetCBar,
    "imagenetc-mixed": ImagenetCMixed,
}
