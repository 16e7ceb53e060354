"""One accuracy grid as a table and a heat map, with mCE.

    python show_grid.py --json json/sympie_rn50_2.json
"""
from __future__ import annotations

from classification.errors import stop_quietly_on_signals

stop_quietly_on_signals(__name__)  # before the imports below: Ctrl-C or SIGTERM meanwhile is one line

import argparse
from pathlib import Path

from classification.atomic import check_output_file
from classification.errors import report_user_errors
from classification.eval.grids import describe_errors, format_table, heatmap_format, load_grid, render_heatmap


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="grid JSON written by validate.py")
    parser.add_argument("--out", default=None, help="heat-map PNG (default: the JSON's path with .png)")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    grid = load_grid(args.json)
    path = Path(args.json)
    out = check_output_file(path.with_suffix(".png") if args.out is None else args.out, "--out")
    heatmap_format(out, "--out")
    print(f"{grid.kind.name}: {path.name} (accuracy %)")
    print(format_table(grid))
    for line in describe_errors([(path.name, grid)]):
        print(line)
    render_heatmap(grid, out, f"{grid.kind.name}: {path.stem} (accuracy %)")
    print(f"heat map: {out}")
    return out


if __name__ == "__main__":
    main()
