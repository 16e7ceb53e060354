"""validate.py --demo: the mini ImageNet-C of the repository's photos, its cache, the refusals and the label table."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from classification import samples
from classification.eval import embedded_demo as demo
from classification.eval.benchmark_sets import IMAGENETC_CATEGORIES, ImagenetC
from classification.eval.validate import main as validate_main
from classification.paths import REPO_ROOT
from classification.training.model import ColModule


TEST_PHOTOS = ("chelsea", "coffee", "raccoon")
TEST_VIEWS = 2


@pytest.fixture(scope="module", autouse=True)
def small_demo():
    """The demo of three photos x two views (the real one: 12 x 4), for the whole module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "VIEWS_PER_PHOTO", TEST_VIEWS)
        patch.setattr(demo, "demo_photos", lambda: [samples.DEMO_PHOTOS_DIR / f"{name}.jpg" for name in TEST_PHOTOS])
        yield


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory, small_demo) -> Path:
    """A cache folder holding a rendered demo set (rendered once for the module)."""
    cache = tmp_path_factory.mktemp("cache")
    demo.prepare_demo_set(cache / "demo")
    return cache


def test_label_table_covers_the_photos():
    assert sorted(samples.PHOTO_LABELS) == sorted(p.stem for p in samples.DEMO_PHOTOS_DIR.glob("*.jpg"))
    assert sorted(samples.SAMPLE_LABELS) == sorted(p.stem for p in samples.SAMPLES_DIR.glob("*.png"))
    assert {k: samples.PHOTO_LABELS[k] for k in ("camera", "chelsea", "coffee", "grace_hopper", "rocket")} == \
        {"camera": 872, "chelsea": 281, "coffee": 967, "grace_hopper": 652, "rocket": 657}  # a person's labels
    assert set(samples.PREDICTED_LABELS) == \
        set(samples.PHOTO_LABELS) - {"camera", "chelsea", "coffee", "grace_hopper", "rocket"}


def test_demo_set_layout_and_labels(demo_cache):
    root = demo_cache / "demo"
    dataset = ImagenetC(root)
    assert len(dataset.lines) == len(TEST_PHOTOS) * TEST_VIEWS
    assert len(dataset) == len(dataset.lines) * (15 * 5 + 5 + 1)  # the clean image is read once for the five columns
    stems = sorted(Path(line.path).stem for line in dataset.lines)
    assert stems == sorted(f"{name}_v{k}" for name in TEST_PHOTOS for k in range(TEST_VIEWS))
    assert all(line.label == samples.PHOTO_LABELS[Path(line.path).stem.rsplit("_v", 1)[0]] for line in dataset.lines)
    assert (root / "clean").is_dir() and (root / "color" / "5").is_dir()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_views_are_the_centre_crop_then_seeded_random_crops():
    photo = samples.DEMO_PHOTOS_DIR / "coffee.jpg"
    views = demo.photo_views(photo, 3)
    assert [v.shape for v in views] == [(224, 224, 3)] * 3 and not np.array_equal(views[1], views[2])
    assert all(np.array_equal(a, b) for a, b in zip(views, demo.photo_views(photo, 3)))
    from classification.eval.render import resize_and_crop
    from PIL import Image
    centre = np.asarray(resize_and_crop(Image.open(photo).convert("RGB"))).astype(int)
    assert np.abs(views[0].astype(int) - centre).mean() < 2  # Resize(256) + CenterCrop(224), up to rounding


def test_predicted_labels_are_the_classifiers_top1_on_the_centre_view():
    """The labels of the photos without an ImageNet class are effnet_lite0's top-1 on their centre view."""
    from classification.classifiers import build_classifier
    from classification.normalization import normalize

    names = samples.PREDICTED_LABELS
    batch = torch.stack([torch.from_numpy(demo.photo_views(samples.DEMO_PHOTOS_DIR / f"{n}.jpg", 1)[0].copy())
                         for n in names]).permute(0, 3, 1, 2).float().div(255)
    with torch.no_grad():
        predicted = build_classifier(demo.DEMO_CLASSIFIER)(normalize(batch)).argmax(1).tolist()
    assert dict(zip(names, predicted)) == {n: samples.PHOTO_LABELS[n] for n in names}


def test_cache_is_reused_and_an_outdated_set_rendered_again(demo_cache, monkeypatch):
    folder = demo_cache / "demo"
    marker = folder / demo.MARKER
    stamp = marker.stat().st_mtime_ns
    monkeypatch.setattr(demo, "render_demo_set", lambda *a: pytest.fail("a complete set was rendered again"))
    assert demo.prepare_demo_set(folder) == folder
    assert marker.stat().st_mtime_ns == stamp

    outdated = demo_cache / "outdated"
    outdated.mkdir()
    (outdated / "leftover.jpg").write_bytes(b"")
    monkeypatch.setattr(demo, "render_demo_set", lambda out, photos: (out / "images.txt").write_text("x"))
    assert demo.prepare_demo_set(outdated) == outdated
    fingerprint = demo.recipe_fingerprint(demo.demo_photos())
    assert not (outdated / "leftover.jpg").exists() and demo.cache_state(outdated, fingerprint) == "complete"

    (outdated / "images.txt").unlink()  # damaged: the marker is right but a file is gone
    assert demo.cache_state(outdated, fingerprint) == "damaged"
    monkeypatch.setattr(demo, "render_demo_set", lambda out, photos: (out / "images.txt").write_text("again"))
    assert demo.prepare_demo_set(outdated) == outdated
    assert (outdated / "images.txt").read_text() == "again" and demo.cache_state(outdated, fingerprint) == "complete"


def test_killed_render_leaves_no_folder(tmp_path, monkeypatch):
    def killed(out, photos):
        (out / "images.txt").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "render_demo_set", killed)
    with pytest.raises(KeyboardInterrupt):
        demo.prepare_demo_set(tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["--root", "/data/imagenet-c"], ["--split", "images.txt"], ["--bar"], ["--mixed"],
                                  ["--quick"], ["--clas", "rn18"], ["--skip-missing"], ["--random-init"],
                                  ["--clip-templates", "ensemble"], ["--config", "paths.yaml"]])
def test_contradicting_flags_are_refused(argv, capsys, monkeypatch):
    monkeypatch.setattr(demo, "prepare_demo_set", lambda *a: pytest.fail("rendered despite the refusal"))
    with pytest.raises(SystemExit) as exit_info:
        validate_main(["--demo", *argv])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "--demo" in message and argv[0] in message and len(message.splitlines()) == 1


def test_demo_with_checkpoint_writes_both_grids_and_the_compare_heat_map(demo_cache, tmp_path, monkeypatch):
    """--debug (one batch per run) keeps this fast; the cells left empty read 0."""
    monkeypatch.setenv(samples.CACHE_ENV, str(demo_cache))
    checkpoint = tmp_path / "random_nem.pth"
    torch.save(ColModule().state_dict(), checkpoint)
    out = tmp_path / "json"
    last = validate_main(["--demo", "--debug", "--colm", str(checkpoint), "--out", str(out), "--workers", "0",
                          "--batch_size", "4", "--no-progress"])
    assert last == out / "debug_demo_random_nem_effnet_lite0.json"
    for name in ("debug_demo_none_effnet_lite0", "debug_demo_random_nem_effnet_lite0"):
        grid = json.loads((out / f"{name}.json").read_text())
        assert len(grid) == 17 and all(len(row) == 5 for row in grid)
        assert (out / f"{name}.png").is_file()
    assert (out / "debug_demo_random_nem_effnet_lite0_vs_debug_demo_none_effnet_lite0.png").is_file()
    summary = (out / demo.SUMMARY_NAME).read_text()
    assert len(summary.splitlines()) == 1 and "random_nem.pth" in summary
    assert all(f"{group} " in summary for group in ("15 corruptions", "noise", "blur", "weather", "digital",
                                                     "colour warp", "clean"))
    compared = [part for part in summary.split(": ", 1)[1].split("; ") if "->" in part]
    assert compared and all(part.count("±") == 2 for part in compared)  # a standard error with every mean


@pytest.mark.parametrize("present, colm, expected, words", [
    ((), None, None, "the classifier alone"),
    (("sympie_demo.pth",), None, "sympie_demo.pth", "not the paper's model"),
    (("sympie_demo.pth", "sympie.pth"), None, "sympie.pth", "the released SyMPIE checkpoint"),
    (("sympie_demo.pth", "sympie.pth"), "none", None, "--colm none"),
    (("sympie_demo.pth", "sympie.pth"), "sympie_demo", "sympie_demo.pth", "--colm"),
])
def test_demo_picks_the_checkpoint_it_says(tmp_path, present, colm, expected, words):
    for name in present:
        (tmp_path / name).write_bytes(b"")
    path, which = demo.demo_checkpoint(colm, tmp_path)
    assert path == (None if expected is None else tmp_path / expected)
    assert words in which and (path is None or str(path) in which)


def test_demo_evaluates_the_shipped_demo_model_by_default(demo_cache, tmp_path, monkeypatch, capsys):
    """Without --colm and without sympie.pth, the demo runs with and without sympie_demo.pth and says so."""
    monkeypatch.setenv(samples.CACHE_ENV, str(demo_cache))
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    torch.save({k: v.half() for k, v in ColModule().state_dict().items()}, checkpoints / "sympie_demo.pth")
    monkeypatch.setattr(demo, "CHECKPOINT_DIR", checkpoints)
    out = tmp_path / "json"
    last = validate_main(["--demo", "--debug", "--out", str(out), "--workers", "0", "--batch_size", "4",
                          "--no-progress"])
    assert last == out / "debug_demo_sympie_demo_effnet_lite0.json"
    assert (out / "debug_demo_none_effnet_lite0.json").is_file()
    printed = capsys.readouterr().out
    assert f"SyMPIE: the demo model {checkpoints / 'sympie_demo.pth'}" in printed
    assert (out / demo.SUMMARY_NAME).read_text().strip() in printed


@pytest.mark.slow
def test_demo_end_to_end(demo_cache, tmp_path, monkeypatch, capsys):
    """The whole demo grid of effnet_lite0 (the set is cached by the fixture), its heat map and the printed paths."""
    monkeypatch.setenv(samples.CACHE_ENV, str(demo_cache))
    out = tmp_path / "json"
    validate_main(["--demo", "--out", str(out), "--no-progress"])
    grid = json.loads((out / "demo_none_effnet_lite0.json").read_text())
    assert len(grid) == len(IMAGENETC_CATEGORIES) == 17 and all(len(row) == 5 for row in grid)
    assert len(set(grid[IMAGENETC_CATEGORIES.index("clean")])) == 1  # the same clean images in every column
    meta = json.loads((out / "demo_none_effnet_lite0.meta.json").read_text())
    assert meta["classifier"] == "effnet_lite0" and meta["dataset"]["root"] == str(demo_cache / "demo")
    assert sum(map(sum, meta["total"])) == len(TEST_PHOTOS) * TEST_VIEWS * 17 * 5
    assert (out / "demo_none_effnet_lite0.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert str(demo_cache / "demo") in printed and str(out / "demo_none_effnet_lite0.json") in printed


def test_figure_script_draws_before_after_and_compare(demo_cache, tmp_path):
    """assets/make_figures.py with a random NEM; the compare heat map from existing demo grids."""
    spec = importlib.util.spec_from_file_location("make_figures", REPO_ROOT / "assets" / "make_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    checkpoint = tmp_path / "random_nem.pth"
    torch.save(ColModule().state_dict(), checkpoint)
    picture = figures.before_after(checkpoint, "random NEM (test)", tmp_path / "before_after.png")
    assert picture.stat().st_size > 10_000
    grids = tmp_path / "grids"
    grids.mkdir()
    rows = [[50.0] * 5 for _ in range(17)]
    (grids / "demo_none_effnet_lite0.json").write_text(json.dumps(rows))
    (grids / "demo_random_nem_effnet_lite0.json").write_text(json.dumps([[25.0] * 5 for _ in range(17)]))
    assert figures.compare_example(checkpoint, "random NEM (test)", tmp_path / "compare.png", grids).is_file()


def test_summary_means_leave_empty_cells_out():
    assert demo.mean_of_filled(np.array([[1.0, np.nan, 3.0]])) == 2.0
    assert demo.mean_of_filled(np.full((1, 5), np.nan)) is None
