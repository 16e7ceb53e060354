"""compare.py / show_grid.py: averages, mCE, tables, heat maps and shape errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from classification.errors import UserInputError
from classification.eval import compare, show_grid
from classification.eval.benchmark_sets import IMAGENETC_BAR_CATEGORIES, IMAGENETC_CATEGORIES
from classification.eval.grids import (ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, corruption_errors, grid_from_rows, load_grid,
                                       table)


def write(path, rows):
    path.write_text(json.dumps(rows))
    return path


def random_rows(n, seed=0):
    return np.random.default_rng(seed).uniform(10, 90, size=(n, 5)).round(3).tolist()


def test_avg_column_excludes_colwarp_and_clean():
    rows = np.zeros((17, 5))
    rows[:15] = 30.0
    rows[IMAGENETC_CATEGORIES.index("colwarp")] = 90.0
    rows[IMAGENETC_CATEGORIES.index("clean")] = 80.0
    rows[0, 2] = 45.0  # defocus_blur, severity 3
    labels, cols, values = table(grid_from_rows(rows.tolist()))
    assert labels == ["1", "2", "3", "4", "5", "avg"] and cols[-1] == "avg" and cols[:-1] == list(IMAGENETC_CATEGORIES)
    assert values.shape == (6, 18)
    assert values[2, -1] == pytest.approx(30 + 15 / 15)
    assert values[0, -1] == pytest.approx(30.0)
    assert values[-1, 0] == pytest.approx(33.0)  # severity mean of defocus_blur
    assert values[-1, -1] == pytest.approx(30 + 15 / 75)


def test_bar_avg_uses_the_ten_corruptions():
    rows = np.full((11, 5), 20.0)
    rows[IMAGENETC_BAR_CATEGORIES.index("clean")] = 99.0
    _, _, values = table(grid_from_rows(rows.tolist()))
    assert np.allclose(values[:, -1], 20.0)


def test_mce_against_hand_computation():
    rows = np.array(random_rows(17, seed=3))
    clean = IMAGENETC_CATEGORIES.index("clean")
    rows[clean] = 76.0
    mce, rel = corruption_errors(grid_from_rows(rows.tolist()))
    ce, rce = [], []
    for name, alex in ALEXNET_ERRORS.items():
        err = 100 - rows[IMAGENETC_CATEGORIES.index(name)].mean()
        ce.append(err / alex)
        rce.append((err - 24.0) / (alex - ALEXNET_CLEAN_ERROR))
    assert mce == pytest.approx(100 * np.mean(ce)) and rel == pytest.approx(100 * np.mean(rce))
    assert len(ALEXNET_ERRORS) == 15


def test_compare_prints_table_and_writes_heatmap(tmp_path, capsys):
    base = write(tmp_path / "none_rn50_2.json", random_rows(17, 1))
    data = write(tmp_path / "sympie_rn50_2.json", random_rows(17, 2))
    out = compare.main(["--base", str(base), "--data", str(data)])
    assert out == tmp_path / "sympie_rn50_2_vs_none_rn50_2.png"
    text = capsys.readouterr().out
    assert "mCE" in text and "relative mCE" in text and text.count("\n") >= 9
    delta = np.array(random_rows(17, 2)) - np.array(random_rows(17, 1))
    assert f"{delta[:15, 0].mean():+7.2f}" in text  # severity-1 avg over the 15 corruptions
    image = Image.open(out)
    assert image.format == "PNG" and image.width > 600
    assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 10  # cells and text


def test_show_grid_bar_has_no_mce(tmp_path, capsys):
    grid = write(tmp_path / "bar_none_rn18.json", random_rows(11))
    out = show_grid.main(["--json", str(grid), "--out", str(tmp_path / "x.png")])
    assert out.is_file() and "mCE" not in capsys.readouterr().out


def test_mixed_grid_is_accepted(tmp_path):
    grid = load_grid(write(tmp_path / "mixed.json", [[50, 40, 30, 20, 10]]))
    assert table(grid)[2][-1, -1] == pytest.approx(30.0)


@pytest.mark.parametrize("rows, message", [
    ([[1, 2, 3, 4, 5]] * 3, "3x5 grid"),
    ([[1, 2, 3, 4]] * 17, "known shape"),
    ({"grid": []}, "known shape"),
    ([["a", 2, 3, 4, 5]] * 17, "known shape"),
])
def test_wrong_shapes_are_rejected(tmp_path, rows, message):
    with pytest.raises(UserInputError, match=message):
        load_grid(write(tmp_path / "g.json", rows))


def test_cli_reports_bad_grids_in_one_sentence(tmp_path, capsys):
    base = write(tmp_path / "a.json", random_rows(17))
    bar = write(tmp_path / "b.json", random_rows(11))
    (tmp_path / "c.json").write_text("{not json")
    for argv in (["--base", str(base), "--data", str(bar)], ["--base", str(base), "--data", str(tmp_path / "c.json")],
                 ["--base", str(base), "--data", str(tmp_path / "missing.json")]):
        with pytest.raises(SystemExit) as exit_info:
            compare.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.png"))


def test_grid_files_as_users_hand_them_in(tmp_path):
    """A byte-order mark and the .meta.json sidecar are read; a truncated file, an empty one and a folder are
    named with what is wrong."""
    rows = random_rows(17)
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    assert load_grid(tmp_path / "bom.json").values.tolist() == rows
    (tmp_path / "g.meta.json").write_text(json.dumps({"grid": rows, "rows": list(IMAGENETC_CATEGORIES), "total": []}))
    assert load_grid(tmp_path / "g.meta.json").values.tolist() == rows
    (tmp_path / "cut.json").write_text(json.dumps(rows)[:50])
    with pytest.raises(UserInputError, match=r"cut\.json is not valid JSON \(.* at line 1 column 51\); .*run it again"):
        load_grid(tmp_path / "cut.json")
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(UserInputError, match=r"empty\.json is empty"):
        load_grid(tmp_path / "empty.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(UserInputError, match=r"folder\.json is a folder, not a file"):
        load_grid(tmp_path / "folder.json")


@pytest.mark.slow
@pytest.mark.parametrize("style, script", [("folder", "validate"), ("path", "compare"), ("module", "eval_vizwiz")])
def test_entry_points_run(style, script):
    """``python <file>`` from its folder, ``python <path>`` from the root, and ``python -m``."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cwd, command = {"folder": (root / "classification" / "eval", [f"{script}.py"]),
                    "path": (root, [f"classification/eval/{script}.py"]),
                    "module": (root, ["-m", f"classification.eval.{script}"])}[style]
    done = subprocess.run([sys.executable, *command, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
