"""ImageNet-C / C-Bar / C-Mixed datasets and the accuracy grid, checked against an independent computation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from classification.errors import UserInputError
from classification.eval.benchmark_sets import (ALL_COLUMNS, IMAGENETC_BAR_CATEGORIES, IMAGENETC_CATEGORIES, ImagenetC,
                                           ImagenetCBar, ImagenetCMixed, quick_cells, read_split)
from classification.eval.evaluate import GridCounts, evaluate_grid
from classification.eval.fake_benchmark import write_fake_benchmark
from classification.eval.preprocess import decode_rgb_pil, resize_crop

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = (30, 40)  # source size of the fake files (the loader resizes them to 232 and crops 224)

# Written out independently of classification.eval.benchmark_sets: category -> folder holding severity folders.
IMAGENETC_FOLDERS = {
    "defocus_blur": "blur/defocus_blur", "glass_blur": "blur/glass_blur", "motion_blur": "blur/motion_blur",
    "zoom_blur": "blur/zoom_blur", "contrast": "digital/contrast", "elastic_transform": "digital/elastic_transform",
    "jpeg_compression": "digital/jpeg_compression", "pixelate": "digital/pixelate",
    "gaussian_noise": "noise/gaussian_noise", "impulse_noise": "noise/impulse_noise", "shot_noise": "noise/shot_noise",
    "brightness": "weather/brightness", "fog": "weather/fog", "frost": "weather/frost", "snow": "weather/snow",
    "colwarp": "color",
}


class ColourClassifier(nn.Module):
    """Predicts one of 10 classes from the mean of the first (normalised) channel; 1000 logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bucket = ((x[:, 0].mean(dim=(1, 2)) + 2.2) / 4.5 * 10).clamp(0, 9).long()
        return F.one_hot(bucket, 1000).float() + 0 * x.sum()


def items(dataset):
    return [dataset.item(i) for i in range(len(dataset))]


def predict(model: nn.Module, paths) -> list[int]:
    """Predictions for image files, normalised in NumPy (independent of the loader's torch code)."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    batch = np.stack([((resize_crop(decode_rgb_pil(p)) / 255.0 - mean) / std).transpose(2, 0, 1) for p in paths])
    with torch.no_grad():
        return model(torch.from_numpy(batch).float()).argmax(dim=1).tolist()


def split_of(root) -> list[tuple[str, int]]:
    return [(a, int(b)) for a, b in (line.split() for line in (root / "images.txt").read_text().splitlines())]


def file_for(root, kind: str, category: str, severity: int, path: str):
    """The file of split path ``path`` for (category, severity), from the documented layouts."""
    jpg = path.replace(".JPEG", ".jpg")
    if kind == "mixed":
        candidate = root / str(severity) / path
        return candidate if candidate.exists() else root / str(severity) / jpg
    if category == "clean":
        return root / "clean" / jpg
    if kind == "bar":
        return root / category / str(severity) / path
    return root / IMAGENETC_FOLDERS[category] / str(severity) / (jpg if category == "colwarp" else path)


CATEGORIES = {"c": IMAGENETC_CATEGORIES, "bar": IMAGENETC_BAR_CATEGORIES, "mixed": ("mixed",)}


def expected_grid(root, kind: str, model: nn.Module) -> list[list[float]]:
    """Accuracy per cell, computed file by file."""
    lines = split_of(root)
    grid = []
    for category in CATEGORIES[kind]:
        row = []
        for severity in range(1, 6):
            predictions = predict(model, [file_for(root, kind, category, severity, p) for p, _ in lines])
            right = sum(pred == label for pred, (_, label) in zip(predictions, lines))
            row.append(100.0 * right / len(lines))
        grid.append(row)
    return grid


def authors_quick_entries(num_lines: int, categories) -> list[tuple[int, int, str]]:
    """(line index, severity, category) of the authors' quick list: nested loops, category fastest."""
    entries = [(i, sev, cat) for i in range(num_lines) for sev in range(1, 6) for cat in categories]
    keep = np.random.RandomState(42).permutation(len(entries))[: len(entries) // 50]
    return [entries[k] for k in keep]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("benchmarks")
    return {
        "c": write_fake_benchmark(base / "c", "imagenetc", num_images=4, size=SMALL, seed=1),
        "bar": write_fake_benchmark(base / "bar", "imagenetc-bar", num_images=4, size=SMALL, seed=2),
        "mixed": write_fake_benchmark(base / "mixed", "imagenetc-mixed", num_images=7, size=SMALL, seed=3),
    }


@pytest.mark.parametrize("kind, cls", [("c", ImagenetC), ("bar", ImagenetCBar), ("mixed", ImagenetCMixed)])
def test_grid_matches_independent_computation(trees, kind, cls):
    root = trees[kind]
    dataset = cls(root)
    counts = evaluate_grid(ColourClassifier(), dataset, batch_size=7, workers=0, progress=False)
    want = expected_grid(root, kind, ColourClassifier())
    assert np.allclose(counts.accuracy(), want)
    assert len(set(np.asarray(want).ravel().tolist())) > 1  # the check is not vacuous
    assert (counts.total == len(split_of(root))).all()


def test_clean_images_are_read_once_and_fill_every_column(trees):
    dataset = ImagenetC(trees["c"])
    lines = len(split_of(trees["c"]))
    clean = [item for item in items(dataset) if item.row == IMAGENETC_CATEGORIES.index("clean")]
    assert len(clean) == lines and all(item.columns == ALL_COLUMNS for item in clean)
    assert len(dataset) == lines * (16 * 5 + 1)
    assert dataset.shape == (17, 5)


def test_layout_paths(trees):
    dataset = ImagenetC(trees["c"])
    paths = {(IMAGENETC_CATEGORIES[i.row], i.columns): i.path for i in items(dataset) if i.line_no == 1}
    first = split_of(trees["c"])[0][0]
    assert paths[("glass_blur", 0b00100)] == trees["c"] / "blur" / "glass_blur" / "3" / first
    assert paths[("colwarp", 0b00001)] == trees["c"] / "color" / "1" / first.replace(".JPEG", ".jpg")
    assert paths[("clean", 0b11111)] == trees["c"] / "clean" / first.replace(".JPEG", ".jpg")
    mixed = ImagenetCMixed(trees["mixed"])
    suffixes = {item.columns: item.path.suffix for item in items(mixed)}
    assert suffixes == {1: ".JPEG", 2: ".jpg", 4: ".JPEG", 8: ".jpg", 16: ".JPEG"}


def test_cells_stored_under_the_other_name_are_found(tmp_path):
    """Any cell may hold <stem>.JPEG or <stem>.jpg (what data/make_splits.py counts), e.g. re-encoded files."""
    root = write_fake_benchmark(tmp_path / "c", "imagenetc", num_images=2, size=(40, 40))
    first = split_of(root)[0][0]
    glass = root / "blur" / "glass_blur" / "3" / first
    glass.rename(glass.with_suffix(".jpg"))
    clean = root / "clean" / first.replace(".JPEG", ".jpg")
    clean.rename(clean.with_suffix(".JPEG"))
    dataset = ImagenetC(root)
    paths = {(IMAGENETC_CATEGORIES[i.row], i.columns): i.path for i in items(dataset) if i.line_no == 1}
    assert paths[("glass_blur", 0b00100)] == glass.with_suffix(".jpg")
    assert paths[("clean", 0b11111)] == clean.with_suffix(".JPEG")
    assert not dataset.missing


def test_archives_extracted_into_one_folder_are_found(tmp_path):
    """blur.tar ... weather.tar all extracted into the root: <corruption>/<sev>/ without the group folders."""
    root = write_fake_benchmark(tmp_path / "c", "imagenetc", num_images=2, size=(40, 40))
    for group in ("blur", "digital", "noise", "weather"):
        for corruption in (root / group).iterdir():
            corruption.rename(root / corruption.name)
        (root / group).rmdir()
    dataset = ImagenetC(root)
    assert len(dataset) == 2 * (16 * 5 + 1) and not dataset.missing
    glass = {i.path for i in items(dataset) if IMAGENETC_CATEGORIES[i.row] == "glass_blur" and i.columns == 0b00100}
    assert glass == {root / "glass_blur" / "3" / path for path, _ in split_of(root)}


def test_partial_last_batch_and_batch_size_do_not_matter(trees):
    dataset = ImagenetCBar(trees["bar"])
    a = evaluate_grid(ColourClassifier(), dataset, batch_size=len(dataset) - 1, workers=0, progress=False)
    b = evaluate_grid(ColourClassifier(), dataset, batch_size=16, workers=1, progress=False)
    assert torch.equal(a.correct, b.correct) and torch.equal(a.total, b.total)


def test_debug_evaluates_one_batch(trees):
    counts = evaluate_grid(ColourClassifier(), ImagenetC(trees["c"]), batch_size=3, workers=0, debug=True,
                           progress=False)
    assert int(counts.total.sum()) == 3


def test_quick_cells_are_the_authors_subset():
    want = {(i, sev - 1, IMAGENETC_CATEGORIES.index(cat)) for i, sev, cat in authors_quick_entries(30, IMAGENETC_CATEGORIES)}
    got = quick_cells(30, len(IMAGENETC_CATEGORIES))
    assert len(got) == 30 * 85 // 50 and {tuple(r) for r in got.tolist()} == want


def test_quick_grid_matches_the_authors_subset(tmp_path):
    root = write_fake_benchmark(tmp_path / "c", "imagenetc", num_images=12, size=(8, 8), seed=4)
    lines = split_of(root)
    entries = authors_quick_entries(len(lines), IMAGENETC_CATEGORIES)
    correct, total = np.zeros((17, 5), int), np.zeros((17, 5), int)
    files = [file_for(root, "c", cat, sev, lines[i][0]) for i, sev, cat in entries]
    for (i, sev, cat), pred in zip(entries, predict(ColourClassifier(), files)):
        row = IMAGENETC_CATEGORIES.index(cat)
        total[row, sev - 1] += 1
        correct[row, sev - 1] += pred == lines[i][1]
    dataset = ImagenetC(root, quick=True)
    counts = evaluate_grid(ColourClassifier(), dataset, batch_size=5, workers=0, progress=False)
    assert counts.total.tolist() == total.tolist() and counts.correct.tolist() == correct.tolist()
    assert counts.total.sum() == 12 * 85 // 50
    clean_entries = sum(cat == "clean" for _, _, cat in entries)
    assert len(dataset) <= len(entries) and len(dataset) >= len(entries) - clean_entries + (clean_entries > 0)


def test_quick_without_entries_is_reported(tmp_path):
    root = write_fake_benchmark(tmp_path / "mixed", "imagenetc-mixed", num_images=3, size=(8, 8))
    with pytest.raises(UserInputError, match="--quick"):
        ImagenetCMixed(root, quick=True)


def test_grid_counts_accumulate_per_cell():
    counts = GridCounts.zeros(2)
    counts.add(torch.tensor([True, False, True]), torch.tensor([0, 1, 1]), torch.tensor([1 << 2, ALL_COLUMNS, 1 << 4]))
    assert counts.total.tolist() == [[0, 0, 1, 0, 0], [1, 1, 1, 1, 2]]
    assert counts.correct.tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]
    assert counts.accuracy()[1] == [0.0, 0.0, 0.0, 0.0, 50.0]
    assert counts.accuracy()[0] == [None, None, 100.0, None, None]  # empty cells are None, not 0


def test_accuracy_has_the_authors_float32_digits():
    counts = GridCounts.zeros(1)
    counts.add(torch.tensor([True, False, False]), torch.zeros(3, dtype=torch.long), torch.tensor([1, 1, 1]))
    # correct * (100 / total) in float32; torch evaluates 100 / t as reciprocal(t) * 100
    assert json.dumps(counts.accuracy()) == "[[33.333335876464844, null, null, null, null]]"  # empty cells: null


# --------------------------------------------------------------------------- bad input

def test_missing_root(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        ImagenetC(tmp_path / "nowhere")


def test_missing_split_file(tmp_path):
    with pytest.raises(UserInputError, match="images.txt"):
        ImagenetC(tmp_path)


def test_malformed_split_line_is_named(tmp_path):
    (tmp_path / "images.txt").write_text("n01/a.JPEG 3\nn01/b.JPEG three\n")
    with pytest.raises(UserInputError, match="line 2"):
        read_split(tmp_path / "images.txt")


def test_labels_in_another_class_order_are_refused(tmp_path):
    """The ILSVRC devkit numbers n01440764 (tench) 449 from 1; the classifiers' index is 0."""
    (tmp_path / "images.txt").write_text("n01440764/a.JPEG 0\nn01443537/b.JPEG 1\nn01440764/c.JPEG 449\nmine/d.JPEG 7\n")
    with pytest.raises(UserInputError, match=r"line 3 of .*images\.txt gives n01440764 the class index 449, but the "
                                              r"classifiers' index of n01440764 is 0 .*data/make_splits\.py"):
        read_split(tmp_path / "images.txt")
    (tmp_path / "images.txt").write_text("n01440764/a.JPEG 0\nn01443537/b.JPEG 1\nmine/d.JPEG 7\n")
    assert [line.label for line in read_split(tmp_path / "images.txt")] == [0, 1, 7]  # other folders: as given


def test_a_whole_missing_row_folder_is_named_with_where_it_comes_from(tmp_path):
    root = write_fake_benchmark(tmp_path / "c", "imagenetc", num_images=2, size=SMALL)
    for folder in ("color", "clean"):  # the published ImageNet-C has neither
        shutil.rmtree(root / folder)
    with pytest.raises(UserInputError, match=r"folder .*/c/color/1 of the 'colwarp' row does not exist; render it "
                                              r"with classification/eval/render\.py --parts clean color"):
        ImagenetC(root)
    bar = write_fake_benchmark(tmp_path / "bar", "imagenetc-bar", num_images=2, size=SMALL)
    with pytest.raises(UserInputError, match=r"folder .*/bar/blur/defocus_blur/1 of the 'defocus_blur' row does not "
                                              r"exist; check that .*bar is laid out as the 'imagenetc' benchmark .*--bar"):
        ImagenetC(bar)  # an ImageNet-C-Bar folder read without --bar


def test_missing_image_names_file_and_line(tmp_path):
    root = write_fake_benchmark(tmp_path / "bar", "imagenetc-bar", num_images=3, size=SMALL)
    first, _ = split_of(root)[1]
    victim = root / "sparkles" / "4" / first
    victim.unlink()
    with pytest.raises(UserInputError) as err:
        ImagenetCBar(root)
    assert str(victim) in str(err.value) and "line 2" in str(err.value) and "--skip-missing" in str(err.value)
    dataset = ImagenetCBar(root, skip_missing=True)
    assert [(m.path, m.line_no) for m in dataset.missing] == [(victim, 2)]
    counts = evaluate_grid(ColourClassifier(), dataset, batch_size=8, workers=0, progress=False)
    assert counts.total[IMAGENETC_BAR_CATEGORIES.index("sparkles"), 3] == 2


def test_undecodable_image_is_named(tmp_path):
    root = write_fake_benchmark(tmp_path / "mixed", "imagenetc-mixed", num_images=2, size=SMALL)
    victim = root / "1" / split_of(root)[0][0]
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(UserInputError, match="cannot be decoded") as err:
        evaluate_grid(ColourClassifier(), ImagenetCMixed(root), batch_size=4, workers=1, progress=False)
    assert str(victim) in str(err.value)
