"""Difference of two accuracy grids (data - base) as a table and a heat map, with mCE (SPEC §6.3).

    python compare.py --base json/none_rn50_2.json --data json/sympie_rn50_2.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from classification.errors import report_user_errors
from classification.eval.grids import delta, describe_errors, format_table, load_grid, render_heatmap


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="grid JSON of the reference run (e.g. json/none_rn50_2.json)")
    parser.add_argument("--data", required=True, help="grid JSON of the run to compare (e.g. json/sympie_rn50_2.json)")
    parser.add_argument("--out", default=None, help="heat-map PNG (default: <data>_vs_<base>.png next to --data)")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    base, data = load_grid(args.base), load_grid(args.data)
    diff = delta(data, base)
    base_path, data_path = Path(args.base), Path(args.data)
    out = Path(args.out) if args.out else data_path.with_name(f"{data_path.stem}_vs_{base_path.stem}.png")
    print(f"{data.kind.name}: {data_path.name} - {base_path.name} (accuracy points)")
    print(format_table(diff, signed=True))
    for line in describe_errors([(base_path.name, base), (data_path.name, data)]):
        print(line)
    render_heatmap(diff, out, f"{data.kind.name}: {data_path.stem} - {base_path.stem} (accuracy points)", signed=True)
    print(f"heat map: {out}")
    return out


if __name__ == "__main__":
    main()
