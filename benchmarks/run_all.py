"""Run every benchmark of this folder and write one summary (Markdown) with each one's output.

    python benchmarks/run_all.py [--quick] [--out benchmarks/results.md] [--only warp corruptions ...]

Each benchmark runs as its own process (``python benchmarks/bench_<name>.py``), one after the other, so
that they do not compete for the cores. ``--quick`` passes smaller repeat counts (a smoke run, minutes);
the figures quoted in the README come from a full run. The summary starts with one table (benchmark,
status, seconds, the machine) followed by every benchmark's own report.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from classification.atomic import atomic_path

HERE = Path(__file__).resolve().parent

# name -> (arguments of a full run, arguments of a --quick run)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "warp": ([], ["--repeats", "3"]),
    "corruptions": ([], ["--repeats", "2", "--mix-images", "46", "--batch", "16"]),
    "eval_loader": ([], ["--images", "8", "--repeats", "2", "--e2e-repeats", "1"]),
    "train_step": ([], ["--steps", "2", "--data-batches", "2"]),
    "segmentation": ([], ["--repeats", "1"]),
    "render": ([], ["--images", "2", "--workers", "0", "--repeats", "1"]),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def run(name: str, args: list[str]) -> tuple[int, float, str]:
    command = [sys.executable, str(HERE / f"bench_{name}.py"), *args]
    print(f"running {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = done.stdout + (f"\n[stderr]\n{done.stderr}" if done.returncode else "")
    return done.returncode, seconds, output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small repeat counts (smoke run)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--out", type=Path, default=HERE / "results.md", help="summary file (Markdown)")
    args = parser.parse_args(argv)

    names = args.only or list(BENCHMARKS)
    results = {}
    for name in names:
        full, quick = BENCHMARKS[name]
        results[name] = run(name, quick if args.quick else full)
        print(f"  {name}: {'ok' if results[name][0] == 0 else 'FAILED'} in {results[name][1]:.0f} s", flush=True)

    lines = [f"# Benchmarks ({'quick' if args.quick else 'full'} run, {datetime.date.today()})", "",
             f"Machine: {machine()}", "", "| benchmark | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {'ok' if code == 0 else f'failed ({code})'} | {seconds:.0f} |"
              for name, (code, seconds, _) in results.items()]
    for name, (_, _, output) in results.items():
        lines += ["", f"## {name}", "", "```", output.rstrip(), "```"]
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(code == 0 for code, _, _ in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
