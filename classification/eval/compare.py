"""Difference of two accuracy grids (data - base) as a table and a heat map, with mCE.

    python compare.py        # json/sympie_rn50_2.json - json/none_rn50_2.json (validate.py's default outputs)
    python compare.py --base json/none_rn18.json --data json/sympie_rn18.json
"""
from __future__ import annotations

from classification.errors import stop_quietly_on_signals

stop_quietly_on_signals(__name__)  # before the imports below: Ctrl-C or SIGTERM meanwhile is one line

import argparse
import os
from pathlib import Path

from classification.atomic import check_output_file
from classification.errors import UserInputError, report_user_errors
from classification.eval.grids import (GRID_DIR, check_comparable, delta, describe_errors, format_table, heatmap_format,
                                       load_grid, render_heatmap)

DEFAULT_BASE = GRID_DIR / "none_rn50_2.json"  # rn50_2 alone (python validate.py)
DEFAULT_DATA = GRID_DIR / "sympie_rn50_2.json"  # rn50_2 behind SyMPIE (python validate.py --colm sympie)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=str(DEFAULT_BASE),
                        help="grid JSON of the reference run (default: json/none_rn50_2.json beside validate.py)")
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="grid JSON of the run to compare (default: json/sympie_rn50_2.json beside validate.py)")
    parser.add_argument("--out", default=None, help="heat-map PNG (default: <data>_vs_<base>.png next to --data)")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    base, data = load_grid(args.base), load_grid(args.data)
    base_path, data_path = Path(args.base), Path(args.data)
    if os.path.samefile(base_path, data_path):
        raise UserInputError(f"--base and --data are the same file ({data_path}); pass the grid without SyMPIE as "
                             f"--base and the one with SyMPIE as --data.")
    diff = delta(data, base)
    check_comparable(data, base)
    default = data_path.with_name(f"{data_path.stem}_vs_{base_path.stem}.png")
    out = check_output_file(default if args.out is None else args.out, "--out")
    heatmap_format(out, "--out")
    print(f"{data.kind.name}: {data_path.name} - {base_path.name} (accuracy points)")
    print(format_table(diff, signed=True))
    for line in describe_errors([(base_path.name, base), (data_path.name, data)]):
        print(line)
    render_heatmap(diff, out, f"{data.kind.name}: {data_path.stem} - {base_path.stem} (accuracy points)", signed=True)
    print(f"heat map: {out}")
    return out


if __name__ == "__main__":
    main()
