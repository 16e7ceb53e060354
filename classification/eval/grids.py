"""Accuracy grids written by validate.py: loading, averages, mCE, terminal tables and heat maps.

See classification/eval/README.md for the outputs.

A grid is a list of rows (categories, the dataset's order) of 5 accuracies in percent (severities 1..5);
``null`` marks an empty cell (every image of it was missing under ``validate.py --skip-missing``): it is
left out of the averages and the mCE and shown as "-".
Tables are shown transposed: one row per severity plus ``avg``, one column per category plus ``avg``, the
last column being the mean over the benchmark's corruptions only (ImageNet-C: the 15, without colwarp and
clean; C-Bar: the 10).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from classification.atomic import atomic_path, atomic_paths
from classification.errors import UserInputError
from classification.eval.benchmark_sets import (IMAGENETC_BAR_CATEGORIES, IMAGENETC_BAR_CORRUPTIONS,
                                                IMAGENETC_CATEGORIES, IMAGENETC_MIXED_CATEGORIES, SEVERITIES)
from classification.textfile import read_json
from classification.training.corruptions import IMAGENET_C

GRID_DIR = Path(__file__).resolve().parent / "json"  # where validate.py writes its grids by default
METADATA_SUFFIX = ".meta.json"  # the sidecar beside each grid: counts, provenance and the grid's checksum
CHECKSUM_KEY = "grid_sha256"
FLOAT32_SLACK = 1e-4  # accuracies are computed in float32 (as the authors' script): 100 % may read 100.0000076

# AlexNet top-1 error (%) per ImageNet-C corruption, averaged over the 5 severities, and on clean images.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 88.6428, "shot_noise": 89.4468, "impulse_noise": 92.2640, "defocus_blur": 81.9880,
    "glass_blur": 82.6268, "motion_blur": 78.5948, "zoom_blur": 79.8360, "snow": 86.6816, "frost": 82.6572,
    "fog": 81.9324, "brightness": 56.4592, "contrast": 85.3204, "elastic_transform": 64.6056,
    "pixelate": 71.7840, "jpeg_compression": 60.6500,
}
ALEXNET_CLEAN_ERROR = 43.5


@dataclass(frozen=True)
class GridKind:
    """A benchmark's grid layout: its rows and the rows that enter the ``avg`` column."""

    name: str
    categories: tuple[str, ...]
    averaged: tuple[str, ...]


GRID_KINDS = (
    GridKind("ImageNet-C", IMAGENETC_CATEGORIES, IMAGENET_C),
    GridKind("ImageNet-C-Bar", IMAGENETC_BAR_CATEGORIES, IMAGENETC_BAR_CORRUPTIONS),
    GridKind("ImageNet-C-Mixed", IMAGENETC_MIXED_CATEGORIES, IMAGENETC_MIXED_CATEGORIES),
)
EXPECTED_SHAPES = ", ".join(f"{len(k.categories)}x{len(SEVERITIES)} ({k.name})" for k in GRID_KINDS)


@dataclass(frozen=True)
class Grid:
    """An accuracy grid (rows = categories, columns = severities) and its layout."""

    values: np.ndarray  # (categories, 5) float64, percent
    kind: GridKind
    source: str = ""
    metadata: dict | None = None  # the .meta.json beside the grid file, when there is one

    @property
    def is_imagenetc(self) -> bool:
        return self.kind is GRID_KINDS[0]


def grid_from_rows(rows: object, source: str = "grid") -> Grid:
    """Validate a list of rows of 5 accuracies (0..100, or null for an empty cell) and find its layout by the
    number of rows. Empty cells become NaN."""
    shape_error = UserInputError(f"{source} does not hold an accuracy grid of a known shape; expected a list of rows "
                                 f"of {len(SEVERITIES)} numbers: {EXPECTED_SHAPES}, as written by validate.py.")
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise shape_error
    if not all(len(r) == len(SEVERITIES) and all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in r) for r in rows):
        raise shape_error
    kind = next((k for k in GRID_KINDS if len(k.categories) == len(rows)), None)
    if kind is None:
        raise UserInputError(f"{source} holds a {len(rows)}x{len(SEVERITIES)} grid; expected {EXPECTED_SHAPES}, "
                             f"as written by validate.py.")
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if value is not None and not 0 <= value <= 100 + FLOAT32_SLACK:  # also false for NaN
                raise UserInputError(f"{source} holds {value} for {kind.categories[i]} at severity {SEVERITIES[j]}; "
                                     f"accuracies are percentages from 0 to 100 (null for an empty cell).")
    values = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
    return Grid(values, kind, source)


def _mean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` leaving empty (NaN) cells out; NaN where all are empty."""
    counts = np.sum(~np.isnan(values), axis=axis, keepdims=True)
    sums = np.nansum(values, axis=axis, keepdims=True)
    return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)


NAME_FLAGS = (("debug_", "--debug"), ("demo_", "--demo"), ("bar_", "--bar"), ("mixed_", "--mixed"),
              ("quick_", "--quick"))


def validate_command(path: Path) -> str | None:
    """The validate.py command that writes the grid ``path`` (its name follows validate.py's
    ``{debug_}{demo_}{bar_|mixed_}{quick_}{colm}_{clas}.json``), or None for a name of another form."""
    from classification.classifiers import CLASSIFIER_NAMES  # only on this error path: it imports the model zoo

    stem, flags = path.stem, []
    for prefix, flag in NAME_FLAGS:
        if stem.startswith(prefix):
            stem, flags = stem[len(prefix):], flags + [flag]
    clas = next((c for c in sorted(CLASSIFIER_NAMES, key=len, reverse=True) if stem.endswith("_" + c)), None)
    if path.suffix != ".json" or clas is None or stem == "_" + clas:
        return None
    colm = stem[: -len(clas) - 1]
    if colm != "none":
        flags += ["--colm", colm]
    if clas != "rn50_2" and "--demo" not in flags:
        flags += ["--clas", clas]
    if path.parent.resolve() != GRID_DIR:
        flags += ["--out", str(path.parent)]
    return " ".join(["python classification/eval/validate.py", *flags])


def metadata_path(grid_path: str | os.PathLike) -> Path:
    """The ``.meta.json`` sidecar of a grid file (``none_rn18.json`` -> ``none_rn18.meta.json``)."""
    return Path(grid_path).with_suffix(METADATA_SUFFIX)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_grid(path: str | os.PathLike, rows: list, metadata: dict) -> Path:
    """Write a grid and its ``.meta.json`` (``metadata`` plus the grid's checksum) so that they always belong
    together: both are renamed into place only once both are written, and a reader that finds a grid beside
    the metadata of another run (a kill between the two renames) sees that the checksum does not match."""
    path = Path(path)
    with atomic_paths([path, metadata_path(path)]) as (grid_tmp, metadata_tmp):
        grid_tmp.write_text(json.dumps(rows))
        metadata_tmp.write_text(json.dumps({**metadata, CHECKSUM_KEY: sha256_of(grid_tmp)}, indent=1))
    return path


def load_grid(path: str | os.PathLike) -> Grid:
    """Read a grid JSON written by validate.py (one clear error for a missing file, bad JSON or a wrong shape),
    with the ``.meta.json`` beside it when there is one (refused when it records another grid's checksum)."""
    path = Path(path)
    if not path.exists():
        command = validate_command(path)
        how = f"write it with `{command}` (from the repository root)" if command else "run validate.py first"
        raise UserInputError(f"grid file {path} does not exist; {how} or fix the path.")
    rows = read_json(path, "grid file", "pass a file written by validate.py (run it again if it was cut short)")
    if isinstance(rows, dict) and "grid" in rows and "rows" in rows:  # the .meta.json sidecar holds the grid too
        return replace(grid_from_rows(rows["grid"], source=f"grid file {path}"), metadata=rows)
    return replace(grid_from_rows(rows, source=f"grid file {path}"), metadata=read_metadata(path))


def read_metadata(grid_path: Path) -> dict | None:
    """The ``.meta.json`` of ``grid_path`` if there is one; refused when it belongs to another grid."""
    sidecar = metadata_path(grid_path)
    if not sidecar.is_file():
        return None
    metadata = read_json(sidecar, "grid metadata", "delete it or run validate.py again")
    if not isinstance(metadata, dict):
        raise UserInputError(f"grid metadata {sidecar} holds no JSON object; delete it or run validate.py again.")
    recorded = metadata.get(CHECKSUM_KEY)
    if recorded is not None and recorded != sha256_of(grid_path):
        raise UserInputError(f"grid file {grid_path} and its metadata {sidecar} do not belong together (the metadata "
                             f"records another grid, e.g. of an earlier run cut short between the two writes); run "
                             f"validate.py again to write both.")
    return metadata


def delta(data: Grid, base: Grid) -> Grid:
    """``data - base``; both grids must have the same layout."""
    if data.kind is not base.kind:
        raise UserInputError(f"{data.source} is an {data.kind.name} grid but {base.source} is an {base.kind.name} grid; "
                             f"compare grids of the same benchmark.")
    return Grid(data.values - base.values, data.kind, f"{data.source} - {base.source}")


def _classifier_of(metadata: dict) -> str:
    clip = metadata.get("clip_templates")
    return f"{metadata.get('classifier')}" + (f" ({clip} prompts)" if clip else "") + \
        ("" if metadata.get("pretrained", True) else " with random weights")


def _data_set_of(metadata: dict) -> str:
    dataset = metadata.get("dataset") or {}
    return f"{dataset.get('kind')} ({dataset.get('images_in_split')} split images" + \
        (", --quick" if dataset.get("quick") else "") + (", --debug" if metadata.get("debug") else "") + ")"


def check_comparable(data: Grid, base: Grid) -> None:
    """Refuse two grids whose ``.meta.json`` say they come from different classifiers or data sets (a SyMPIE
    comparison holds both fixed); grids without metadata are taken as they are."""
    if data.metadata is None or base.metadata is None:
        return
    for what, describe in (("classifier", _classifier_of), ("data set", _data_set_of)):
        ours, theirs = describe(data.metadata), describe(base.metadata)
        if ours != theirs:
            raise UserInputError(f"{data.source} was evaluated with the {what} {ours} but {base.source} with {theirs} "
                                 f"(their .meta.json); compare two grids of one classifier on one data set.")


def table(grid: Grid) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, column labels, values) of the transposed table with the ``avg`` row and column.

    Rows: severities 1..5 and ``avg`` (mean over severities); columns: categories and ``avg`` (mean over
    the benchmark's corruptions, see :class:`GridKind`).
    """
    cats = grid.kind.categories
    body = grid.values.T  # (5, categories)
    body = np.vstack([body, _mean(body, axis=0)])
    chosen = [cats.index(c) for c in grid.kind.averaged]
    body = np.hstack([body, _mean(body[:, chosen], axis=1)])
    return [str(s) for s in SEVERITIES] + ["avg"], list(cats) + ["avg"], body


def short_name(category: str, width: int = 6) -> str:
    return category[:width].rstrip("_")


def format_table(grid: Grid, signed: bool = False) -> str:
    """Fixed-width terminal table of :func:`table` (category names shortened to 6 characters)."""
    rows, cols, values = table(grid)
    lines = ["sev " + "".join(f"{short_name(c):>7}" for c in cols)]
    lines += [f"{r:<4}" + "".join(f"{cell_text(v, signed):>7}" for v in line) for r, line in zip(rows, values)]
    return "\n".join(lines)


def cell_text(value: float, signed: bool = False) -> str:
    """A table or heat-map cell: two decimals, "-" for an empty cell."""
    if np.isnan(value):
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def corruption_errors(grid: Grid) -> tuple[float, float]:
    """(mCE, relative mCE) in percent of an ImageNet-C grid, normalised by AlexNet (Hendrycks & Dietterich).

    Empty cells are left out of each corruption's mean error, corruptions without any cell out of the mCE;
    NaN when nothing is left (relative mCE also needs a clean cell)."""
    if not grid.is_imagenetc:
        raise ValueError("mCE is defined for ImageNet-C grids only")
    cats = grid.kind.categories
    errors = _mean(100.0 - grid.values, axis=1)[:, 0]
    clean = float(errors[cats.index("clean")])
    ce, rel = [], []
    for name in IMAGENET_C:
        err = float(errors[cats.index(name)])
        if np.isnan(err):
            continue
        ce.append(err / ALEXNET_ERRORS[name])
        rel.append((err - clean) / (ALEXNET_ERRORS[name] - ALEXNET_CLEAN_ERROR))
    if not ce:
        return float("nan"), float("nan")
    return 100.0 * float(np.mean(ce)), 100.0 * float(np.mean(rel))


# --------------------------------------------------------------------------- heat maps

CELL_W, CELL_H, LABEL_W, MARGIN = 66, 30, 44, 12
EMPTY_CELL = (225, 225, 225)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType support for the default font
        return ImageFont.load_default()


def _diverging(value: float, scale: float) -> tuple[int, int, int]:
    """Red (negative) - white (0) - blue (positive)."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    if t >= 0:
        return (int(255 * (1 - 0.75 * t)), int(255 * (1 - 0.45 * t)), 255)
    return (255, int(255 * (1 + 0.75 * t)), int(255 * (1 + 0.75 * t)))


def _sequential(value: float) -> tuple[int, int, int]:
    """White (0 %) to dark green (100 %)."""
    t = max(0.0, min(1.0, value / 100.0))
    return (int(255 - 220 * t), int(255 - 120 * t), int(255 - 200 * t))


def render_heatmap(grid: Grid, path: str | os.PathLike, title: str, signed: bool = False) -> Path:
    """Save the :func:`table` of ``grid`` as a PNG heat map with the values written in the cells (atomic)."""
    rows, cols, values = table(grid)
    title_font, font = _font(15), _font(12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_len = int(max(measure.textlength(name, font=font) for name in cols)) + 8
    header_h = 40 + label_len  # title line + rotated column labels
    width = max(MARGIN * 2 + LABEL_W + CELL_W * len(cols), MARGIN * 2 + int(measure.textlength(title, font=title_font)))
    height = MARGIN * 2 + header_h + CELL_H * len(rows) + 24
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, MARGIN), title, fill="black", font=title_font)
    finite = np.abs(values[~np.isnan(values)])
    scale = float(finite.max()) if signed and finite.size else 100.0
    top = MARGIN + header_h
    left = MARGIN + LABEL_W
    for j, name in enumerate(cols):  # rotated column labels
        label = Image.new("RGBA", (label_len, CELL_W), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((2, CELL_W // 2 - 8), name, fill="black", font=font)
        rotated = label.rotate(90, expand=True)
        image.paste(rotated, (left + j * CELL_W, top - rotated.height - 4), rotated)
    for i, name in enumerate(rows):
        y = top + i * CELL_H
        draw.text((MARGIN, y + CELL_H // 2 - 7), "sev " + name if name != "avg" else name, fill="black", font=font)
        for j, value in enumerate(values[i]):
            x = left + j * CELL_W
            colour = EMPTY_CELL if np.isnan(value) else _diverging(value, scale) if signed else _sequential(value)
            draw.rectangle([x, y, x + CELL_W - 1, y + CELL_H - 1], fill=colour, outline=(200, 200, 200))
            text = cell_text(value, signed)
            box = draw.textbbox((0, 0), text, font=font)
            draw.text((x + (CELL_W - (box[2] - box[0])) // 2, y + CELL_H // 2 - 7), text, fill="black", font=font)
    averaged = "the 15 corruptions" if grid.is_imagenetc else \
        f"the {len(grid.kind.averaged)} corruptions" if len(grid.kind.averaged) > 1 else "the row"
    draw.text((MARGIN, height - MARGIN - 14), f"avg column: mean over {averaged}", fill=(90, 90, 90), font=font)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=heatmap_format(path))
    return path


def heatmap_format(path: str | os.PathLike, what: str = "heat map") -> str:
    """The image format the suffix of ``path`` names (``.png`` -> PNG, ``.jpg`` -> JPEG ...), so that the file
    holds what its name says; an unknown suffix is refused in one sentence naming ``what``."""
    suffix = Path(path).suffix.lower()
    known = Image.registered_extensions()
    if suffix not in known or known[suffix] not in Image.SAVE:
        raise UserInputError(f"{what} {path} has the suffix {suffix or '(none)'!r}, which names no image format "
                             f"Pillow writes; end the name with .png (or .jpg, .webp ...).")
    return known[suffix]


def describe_errors(grids: Sequence[tuple[str, Grid]]) -> list[str]:
    """One 'name: mCE x, relative mCE y' line per ImageNet-C grid ("-" when undefined; empty cells left out)."""
    lines = []
    for name, grid in grids:
        if grid.is_imagenetc:
            mce, rel = (cell_text(v) + ("" if np.isnan(v) else "%") for v in corruption_errors(grid))
            empty = int(np.isnan(grid.values).sum())
            note = f" ({empty} empty cell{'s' if empty > 1 else ''} left out)" if empty else ""
            lines.append(f"{name}: mCE {mce}, relative mCE {rel}{note}")
    return lines
