"""Empty grid cells (null), refused values, and compare.py's defaults."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from classification.errors import UserInputError
from classification.eval import compare, show_grid
from classification.eval.benchmark_sets import IMAGENETC_CATEGORIES
from classification.eval.grids import (ALEXNET_ERRORS, GRID_DIR, corruption_errors, format_table, grid_from_rows,
                                       load_grid, table)


def full_grid(value: float = 50.0) -> list[list[float | None]]:
    return [[value] * 5 for _ in IMAGENETC_CATEGORIES]


def test_empty_cells_are_left_out_of_averages_and_mce_and_shown_as_dash():
    rows = full_grid(60.0)
    fog = IMAGENETC_CATEGORIES.index("fog")
    rows[fog] = [None] * 5  # a whole corruption missing
    rows[0][4] = None        # one cell of defocus_blur
    grid = grid_from_rows(rows)
    _, cols, values = table(grid)
    assert np.isnan(values[4, 0]) and values[5, 0] == 60.0          # defocus average over its 4 cells
    assert np.isnan(values[5, cols.index("fog")])
    assert values[4, -1] == 60.0 and values[5, -1] == 60.0            # corruption mean skips the empty ones
    assert "-" in format_table(grid).split()
    without_fog = [n for n in ALEXNET_ERRORS if n != "fog"]
    mce, relative = corruption_errors(grid)
    assert mce == pytest.approx(100 * np.mean([40.0 / ALEXNET_ERRORS[n] for n in without_fog]))
    assert relative == pytest.approx(0.0)  # every corruption error equals the clean error
    rows[IMAGENETC_CATEGORIES.index("clean")] = [None] * 5
    assert math.isnan(corruption_errors(grid_from_rows(rows))[1])  # relative mCE needs the clean row


@pytest.mark.parametrize("bad", [float("nan"), -1.0, 100.5, float("inf")])
def test_values_outside_percentages_are_refused(tmp_path, bad):
    rows = full_grid()
    rows[3][2] = bad
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))  # json writes NaN/Infinity, which json.loads reads back
    with pytest.raises(UserInputError, match=r"bad\.json holds .* for zoom_blur at severity 3; accuracies are "
                                             r"percentages from 0 to 100"):
        load_grid(path)


def test_compare_and_show_grid_accept_null_cells(tmp_path, capsys):
    base, data = full_grid(40.0), full_grid(45.0)
    data[2][0] = None
    (tmp_path / "none_rn18.json").write_text(json.dumps(base))
    (tmp_path / "sympie_rn18.json").write_text(json.dumps(data))
    out = compare.main(["--base", str(tmp_path / "none_rn18.json"), "--data", str(tmp_path / "sympie_rn18.json")])
    assert out.is_file()
    assert "1 empty cell left out" in capsys.readouterr().out
    assert show_grid.main(["--json", str(tmp_path / "sympie_rn18.json")]).is_file()


def test_compare_defaults_are_the_authors_grids_and_a_missing_one_names_its_command(tmp_path, capsys):
    from classification.eval.validate import DEFAULT_OUT

    args = compare.build_parser().parse_args([])
    assert (args.base, args.data) == (str(DEFAULT_OUT / "none_rn50_2.json"), str(DEFAULT_OUT / "sympie_rn50_2.json"))
    assert DEFAULT_OUT == GRID_DIR
    (tmp_path / "none_rn50_2.json").write_text(json.dumps(full_grid()))
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--base", str(tmp_path / "none_rn50_2.json"), "--data", str(tmp_path / "sympie_rn50_2.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"`python classification/eval/validate.py --colm sympie --out {tmp_path}`" in err


def test_float32_hundred_percent_is_accepted():
    rows = full_grid(100.00000762939453)  # 100 % as float32 correct * (100 / total) can read
    assert grid_from_rows(rows).values.max() > 100
