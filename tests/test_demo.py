"""validate.py --demo: the mini ImageNet-C of the sample photos, its cache, the refusals and the label table."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from classification import samples
from classification.eval import demo
from classification.eval.benchmark_sets import IMAGENETC_CATEGORIES, ImagenetC
from classification.eval.validate import main as validate_main
from classification.paths import REPO_ROOT
from classification.training.model import ColModule


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    """A cache folder holding a rendered demo set (rendered once for the module)."""
    cache = tmp_path_factory.mktemp("cache")
    demo.prepare_demo_set(cache / "demo")
    return cache


def test_label_table_covers_the_sample_photos():
    photos = sorted(p.stem for p in samples.SAMPLES_DIR.glob("*.png"))
    assert sorted(samples.SAMPLE_LABELS) == photos
    assert {k: samples.SAMPLE_LABELS[k] for k in ("chelsea", "coffee", "rocket")} == \
        {"chelsea": 281, "coffee": 967, "rocket": 657}  # tabby cat, espresso, missile
    assert set(samples.PREDICTED_LABELS) == set(samples.SAMPLE_LABELS) - {"chelsea", "coffee", "rocket"}


def test_demo_set_layout_and_labels(demo_cache):
    root = demo_cache / "demo"
    dataset = ImagenetC(root)
    assert len(dataset.lines) == 6
    assert len(dataset) == 6 * (15 * 5 + 5 + 1)  # the clean image is read once for the five columns
    labels = {Path(line.path).stem: line.label for line in dataset.lines}
    assert labels == samples.SAMPLE_LABELS
    assert (root / "clean").is_dir() and (root / "color" / "5").is_dir()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_predicted_labels_are_the_classifiers_clean_predictions(demo_cache):
    """The labels without an ImageNet class are effnet_lite0's predictions on the clean files evaluated."""
    from classification.classifiers import build_classifier
    from classification.eval.preprocess import load_eval_uint8
    from classification.normalization import normalize

    root = demo_cache / "demo"
    paths = {Path(line.path).stem: root / "clean" / line.path.replace(".JPEG", ".jpg") for line in ImagenetC(root).lines}
    batch = torch.stack([load_eval_uint8(paths[name]) for name in samples.SAMPLE_LABELS]).float().div(255)
    with torch.no_grad():
        predicted = build_classifier(demo.DEMO_CLASSIFIER)(normalize(batch)).argmax(1).tolist()
    predicted = dict(zip(samples.SAMPLE_LABELS, predicted))
    assert {name: predicted[name] for name in samples.PREDICTED_LABELS} == \
        {name: samples.SAMPLE_LABELS[name] for name in samples.PREDICTED_LABELS}
    assert predicted["coffee"] == 967  # espresso: a person's label the classifier also gives


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
    monkeypatch.setattr(demo, "render_demo_set", lambda out, sources: (out / "images.txt").write_text("x"))
    assert demo.prepare_demo_set(outdated) == outdated
    fingerprint = demo.recipe_fingerprint(demo.sample_sources())
    assert not (outdated / "leftover.jpg").exists() and demo.cache_state(outdated, fingerprint) == "complete"

    (outdated / "images.txt").unlink()  # damaged: the marker is right but a file is gone
    assert demo.cache_state(outdated, fingerprint) == "damaged"
    monkeypatch.setattr(demo, "render_demo_set", lambda out, sources: (out / "images.txt").write_text("again"))
    assert demo.prepare_demo_set(outdated) == outdated
    assert (outdated / "images.txt").read_text() == "again" and demo.cache_state(outdated, fingerprint) == "complete"


def test_killed_render_leaves_no_folder(tmp_path, monkeypatch):
    def killed(out, sources):
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
    assert grid[IMAGENETC_CATEGORIES.index("clean")] == pytest.approx([100.0] * 5)
    meta = json.loads((out / "demo_none_effnet_lite0.meta.json").read_text())
    assert meta["classifier"] == "effnet_lite0" and meta["dataset"]["root"] == str(demo_cache / "demo")
    assert sum(map(sum, meta["total"])) == 6 * 17 * 5
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
