"""Bad inputs and faults a new user runs into, each through the real command line in a fresh temporary tree.

Every refusal must be exit status 2 and exactly one line on stderr ("error: ..."), no traceback, and leave
nothing half-written (no temporary files, no output that was refused). The accepted inputs (a byte-order
mark, 16-bit PNGs, empty grid cells, a resume after following the advice) must run through.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classification.eval.benchmark_sets import IMAGENETC_CATEGORIES
from classification.eval.fake_benchmark import write_fake_benchmark
from classification.training.model import ColModule

REPO = Path(__file__).resolve().parents[1]
VALIDATE = "classification/eval/validate.py"
RENDER = "classification/eval/render.py"
WNIDS = ("n01440764", "n01443537")
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's lines on stderr are not messages


def run(tmp: Path, *argv: str, env: dict[str, str] | None = None, umask: int | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """``python <script> <args>`` from the repository root, with the config and cache inside ``tmp``."""
    environment = {**os.environ, "SYMPIE_CONFIG": str(tmp / "config_paths.yaml"), "SYMPIE_CACHE": str(tmp / "cache"),
                   "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec)


def assert_one_sentence(result: subprocess.CompletedProcess, pattern: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]


def listing(root: Path) -> set[str]:
    """Every file and folder below ``root``, as paths relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def is_finished(root: Path, relative: str) -> bool:
    """Whether a run may leave ``relative`` below ``root``: not hidden (temporaries are), and complete if it is
    an image or JSON."""
    path = root / relative
    if any(part.startswith(".") for part in Path(relative).parts):
        return False
    if path.is_dir():
        return True
    if path.suffix.lower() in (".jpeg", ".jpg", ".png"):
        try:
            with Image.open(path) as image:
                image.load()
        except OSError:
            return False
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except ValueError:
            return False
    return True


def assert_nothing_half_written(tmp: Path, before: set[str], refused: bool = False) -> None:
    """Compare the listing of ``tmp`` with ``before``: what appeared must be finished outputs (no temporary or
    truncated file), and nothing at all after a refusal (the caches of $SYMPIE_CACHE aside)."""
    new = sorted(listing(tmp) - before)
    if refused:
        unexpected = [p for p in new if not p.startswith("cache")]
        assert not unexpected, unexpected
    leftovers = [p for p in new if not is_finished(tmp, p)]
    assert not leftovers, leftovers


# --------------------------------------------------------------------------- small inputs

def config(tmp: Path, text: str = "imagenetc: /path/to/imagenetc\n") -> Path:
    path = tmp / "config_paths.yaml"
    path.write_text(text)
    return path


def a_file(tmp: Path, name: str = "file") -> Path:
    path = tmp / name
    path.write_text("not a folder")
    return path


def grid_json(tmp: Path, name: str, value: float | None = 50.0) -> Path:
    path = tmp / name
    path.write_text(json.dumps([[value] * 5 for _ in IMAGENETC_CATEGORIES]))
    return path


def benchmark(tmp: Path) -> Path:
    return write_fake_benchmark(tmp / "bench", "imagenetc", num_images=2, size=(40, 40))


def val_folder(tmp: Path, per_class: int = 1, size: int = 48) -> Path:
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(WNIDS):
        (tmp / "val" / wnid).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp / "val" / wnid / f"ILSVRC2012_val_{c * per_class + i:08d}.JPEG")
    return tmp / "val"


def flat_val(tmp: Path, wnid: str = "n01440764", encoding: str = "utf-8") -> tuple[Path, Path]:
    """A flat val folder of one image and a Kaggle CSV naming ``wnid`` as its class."""
    (tmp / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp / "flat" / "ILSVRC2012_val_00000001.JPEG")
    csv = tmp / "LOC_val_solution.csv"
    csv.write_bytes(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{wnid} 1 2 3 4\n".encode(encoding))
    return tmp / "flat", csv


def image_folder(tmp: Path) -> Path:
    """100 tiny photos in two class folders: enough for train.py's split checks at batch size 1."""
    for c, wnid in enumerate(WNIDS):
        (tmp / "imagenet" / wnid).mkdir(parents=True)
        for i in range(50):
            Image.new("RGB", (8, 8), (c * 100, i, 0)).save(tmp / "imagenet" / wnid / f"{i}.JPEG")
    return tmp / "imagenet"


def nem_checkpoint(tmp: Path, name: str, poison: bool = False, with_objects: bool = False) -> Path:
    state = ColModule().state_dict()
    if poison:
        state["out.bias"][3] = float("nan")
    obj = {"state_dict": state, "args": argparse.Namespace(lr=1e-3)} if with_objects else state
    torch.save(obj, tmp / name)
    return tmp / name


def ten_class_model(tmp: Path) -> Path:
    torch.save(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10)),
               tmp / "ten.pt")
    return tmp / "ten.pt"


def grid_with_metadata(tmp: Path, name: str, classifier: str = "rn18", images: int = 2,
                       checksum: str | None = None) -> Path:
    """A grid and a .meta.json beside it as validate.py writes them (the fields the readers check)."""
    path = grid_json(tmp, name)
    metadata = {"classifier": classifier, "pretrained": True, "clip_templates": None, "debug": False,
                "dataset": {"kind": "imagenetc", "images_in_split": images, "quick": False},
                "grid_sha256": checksum or hashlib.sha256(path.read_bytes()).hexdigest()}
    path.with_suffix(".meta.json").write_text(json.dumps(metadata))
    return path


def a_png(tmp: Path, name: str) -> Path:
    Image.new("RGB", (4, 4)).save(tmp / name, format="PNG")
    return tmp / name


def a_checkpoint_folder(tmp: Path) -> Path:
    (tmp / "ckpts").mkdir()
    nem_checkpoint(tmp / "ckpts", "final.pth")
    return tmp / "ckpts"


def split_listing_twice(root: Path) -> Path:
    split = root / "images.txt"
    split.write_text(split.read_text() + split.read_text().splitlines()[0] + "\n")
    return root


def two_classes_for_one_image(tmp: Path) -> Path:
    flat, csv = flat_val(tmp)
    csv.write_text(csv.read_text() + "ILSVRC2012_val_00000001,n01443537 1 2 3 4\n")
    return flat


# --------------------------------------------------------------------------- the refusals

@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Path], list[str]]  # builds the inputs in the temporary tree, returns the command line
    message: str                       # regex the one error line must match
    absent: tuple[str, ...] = ()       # outputs (relative to the tree) that must not exist afterwards
    env: Callable[[Path], dict[str, str]] | None = None
    slow: bool = False


CASES = [
    Case("validate --out is a file", lambda t: [VALIDATE, "--out", str(a_file(t))], r"--out .*/file is a file"),
    Case("validate --out under a file", lambda t: [VALIDATE, "--out", str(a_file(t) / "json")],
         r"cannot be created because .*/file is a file", slow=True),
    Case("validate --out not writable", lambda t: [VALIDATE, "--out", "/sys/sympie-json"], r"cannot be written",
         slow=True),
    Case("validate --workers -1", lambda t: [VALIDATE, "--workers", "-1"], r"--workers must be 0 .* got -1",
         slow=True),
    Case("validate --demo with $SYMPIE_CACHE a file", lambda t: [VALIDATE, "--demo", "--out", str(t / "json")],
         r"demo cache folder .*because .*/file is a file", absent=("json",),
         env=lambda t: {"SYMPIE_CACHE": str(a_file(t))}),
    Case("config YAML not UTF-8", lambda t: [VALIDATE, "--out", str(t / "json"), "--config",
                                             str(config(t, "x: 1\n") and _latin1(t / "config_paths.yaml"))],
         r"config file .*config_paths\.yaml is not UTF-8 text \(line 2", absent=("json",)),
    Case("images.txt not UTF-8", lambda t: [VALIDATE, "--root", str(_latin1_split(benchmark(t))), "--random-init",
                                            "--clas", "rn18", "--workers", "0", "--out", str(t / "json")],
         r"split file .*images\.txt is not UTF-8 text \(line 1", absent=("json",), slow=True),
    Case("NaN weights in a SyMPIE checkpoint", lambda t: [
        VALIDATE, "--root", str(benchmark(t)), "--random-init", "--clas", "rn18", "--workers", "0", "--out",
        str(t / "json"), "--colm", str(nem_checkpoint(t, "nan.pth", poison=True))],
        r"nan\.pth holds NaN or infinite values \(first in tensor 'out\.bias'\)", absent=("json",)),
    Case("checkpoint with Python objects, untrusted", lambda t: [
        VALIDATE, "--root", str(benchmark(t)), "--random-init", "--clas", "rn18", "--workers", "0", "--out",
        str(t / "json"), "--colm", str(nem_checkpoint(t, "objects.pth", with_objects=True))],
        r"objects\.pth holds Python objects .* pass --trust-checkpoint", absent=("json",), slow=True),
    Case("classifier without 1000 logits", lambda t: [
        VALIDATE, "--root", str(benchmark(t)), "--clas", str(ten_class_model(t)), "--trust-checkpoint",
        "--workers", "0", "--out", str(t / "json")],
        r"ten\.pt' returns \(2, 10\) .* not \(2, 1000\) logits", absent=("json",), slow=True),
    Case("segmentation --out under a file", lambda t: ["segmentation/eval.py", "--out", str(a_file(t) / "r.json")],
         r"--out .*r\.json cannot be written: .*/file is a file", slow=True),
    Case("compare --out under a file", lambda t: [
        "classification/eval/compare.py", "--base", str(grid_json(t, "none_rn18.json")), "--data",
        str(grid_json(t, "sympie_rn18.json")), "--out", str(a_file(t) / "diff.png")], r"/file is a file"),
    Case("show_grid on a grid holding NaN", lambda t: [
        "classification/eval/show_grid.py", "--json", str(grid_json(t, "nan.json", float("nan")))],
        r"holds nan for defocus_blur at severity 1; accuracies are percentages", absent=("nan.png",)),
    Case("compare with a value above 100", lambda t: [
        "classification/eval/compare.py", "--base", str(grid_json(t, "none_rn18.json", 100.5)), "--data",
        str(grid_json(t, "sympie_rn18.json"))], r"holds 100\.5 .* from 0 to 100",
        absent=("sympie_rn18_vs_none_rn18.png",), slow=True),
    Case("render --out is a file", lambda t: [RENDER, "--val", str(val_folder(t)), "--out", str(a_file(t))],
         r"--out .*/file is a file"),
    Case("make_splits --out under a file", lambda t: [
        "data/make_splits.py", "imagenetc", str(benchmark(t)), "--out", str(a_file(t) / "images.txt")],
        r"images\.txt cannot be written: .*/file is a file", slow=True),
    Case("make_clas_val --out is a file", lambda t: [
        "make_clas_val.py", "--val", str(flat_val(t)[0]), "--annotations", str(t / "LOC_val_solution.csv"),
        "--out", str(a_file(t))], r"--out .*/file is a file", slow=True),
    Case("make_clas_val annotation CSV not UTF-8", lambda t: [
        "make_clas_val.py", "--val", str(flat_val(t, "n01440764\u00e9", "latin-1")[0]), "--annotations",
        str(t / "LOC_val_solution.csv"), "--out", str(t / "classes")],
        r"LOC_val_solution\.csv is not UTF-8 text \(line 2", absent=("classes",)),
    Case("make_clas_val class field ../../x", lambda t: [
        "make_clas_val.py", "--val", str(flat_val(t, "../../x")[0]), "--annotations",
        str(t / "LOC_val_solution.csv"), "--out", str(t / "deep" / "classes")],
        r"line 2 names the class '\.\./\.\./x', which is not an ImageNet wnid", absent=("x", "deep")),
    Case("train --logdir is a file", lambda t: [
        "classification/training/train.py", "--imagenet", str(image_folder(t)), "--batch-size", "1",
        "--logdir", str(a_file(t))], r"--logdir .*/file is a file", slow=True),
    Case("train --resume with no run in --logdir", lambda t: [
        "classification/training/train.py", "--imagenet", str(image_folder(t)), "--batch-size", "1",
        "--logdir", str(t / "logs" / "typo"), "--resume"], r"--resume: log dir .*typo holds no run to continue",
        absent=("logs",)),
    Case("validate --colm is a folder", lambda t: [VALIDATE, "--colm", str(a_checkpoint_folder(t)), "--out",
                                                   str(t / "json")],
         r"SyMPIE checkpoint .*ckpts is a folder \(it holds final\.pth\); pass the checkpoint file itself",
         absent=("json",), slow=True),
    Case("config naming an unset $VARIABLE", lambda t: [
        "data/make_splits.py", "imagenetc", "--config", str(config(t, "imagenetc: $SYMPIE_TEST_UNSET_VARIABLE/c\n"))],
        r"imagenetc' of .* uses the environment variable \$SYMPIE_TEST_UNSET_VARIABLE, which is not set"),
    Case("config setting a key twice", lambda t: [
        "data/make_splits.py", "imagenetc", "--config", str(config(t, "imagenetc: /a\nimagenetc: /b\n"))],
        r"sets the key 'imagenetc' twice \(lines 1 and 2\)"),
    Case("split file listing an image twice", lambda t: [
        VALIDATE, "--root", str(split_listing_twice(benchmark(t))), "--random-init", "--clas", "rn18", "--workers",
        "0", "--out", str(t / "json")], r"lines 1 and 3 of .*images\.txt both list n\d+/", absent=("json",), slow=True),
    Case("show_grid on a PNG", lambda t: ["classification/eval/show_grid.py", "--json", str(a_png(t, "grid.png"))],
         r"grid file .*grid\.png is a PNG image, not a text file"),
    Case("show_grid on a grid beside the metadata of another run", lambda t: [
        "classification/eval/show_grid.py", "--json", str(grid_with_metadata(t, "none_rn18.json", checksum="0" * 64))],
        r"none_rn18\.json and its metadata .*none_rn18\.meta\.json do not belong together", absent=("none_rn18.png",)),
    Case("compare a grid with itself", lambda t: [
        "classification/eval/compare.py", "--base", str(grid_json(t, "g.json")), "--data", str(t / "g.json")],
        r"--base and --data are the same file"),
    Case("compare grids of two classifiers", lambda t: [
        "classification/eval/compare.py", "--base", str(grid_with_metadata(t, "none_rn50_2.json", "rn50_2")),
        "--data", str(grid_with_metadata(t, "sympie_rn18.json"))],
        r"sympie_rn18\.json was evaluated with the classifier rn18 but .*none_rn50_2\.json with rn50_2",
        absent=("sympie_rn18_vs_none_rn50_2.png",)),
    Case("compare grids of two data sets", lambda t: [
        "classification/eval/compare.py", "--base", str(grid_with_metadata(t, "none_rn18.json", images=50)),
        "--data", str(grid_with_metadata(t, "sympie_rn18.json"))],
        r"with the data set imagenetc \(2 split images\) but .* with imagenetc \(50 split images\)"),
    Case("compare --out ''", lambda t: [
        "classification/eval/compare.py", "--base", str(grid_json(t, "none_rn18.json")), "--data",
        str(grid_json(t, "sympie_rn18.json")), "--out", ""], r"--out is empty; pass a file name",
        absent=("sympie_rn18_vs_none_rn18.png",)),
    Case("compare --out with a suffix of no image format", lambda t: [
        "classification/eval/compare.py", "--base", str(grid_json(t, "none_rn18.json")), "--data",
        str(grid_json(t, "sympie_rn18.json")), "--out", str(t / "diff.txt")],
        r"--out .*diff\.txt has the suffix '\.txt', which names no image format", absent=("diff.txt",)),
    Case("render --out inside --val", lambda t: [RENDER, "--val", str(val_folder(t)), "--out", str(t / "val" / "c")],
         r"--out .*val/c lies inside --val .*val; .*choose an output folder outside", absent=("val/c",)),
    Case("make_splits --out ''", lambda t: ["data/make_splits.py", "imagenetc", str(benchmark(t)), "--out", ""],
         r"--out is empty; pass a file name"),
    Case("make_clas_val --out ''", lambda t: [
        "make_clas_val.py", "--val", str(flat_val(t)[0]), "--annotations", str(t / "LOC_val_solution.csv"), "--out", ""],
        r"--out is empty; pass a folder name"),
    Case("make_clas_val: one image, two classes", lambda t: [
        "make_clas_val.py", "--val", str(two_classes_for_one_image(t)), "--annotations",
        str(t / "LOC_val_solution.csv"), "--out", str(t / "classes")],
        r"LOC_val_solution\.csv line 3 gives ILSVRC2012_val_00000001 the class n01443537, but an earlier entry gave "
        r"it n01440764", absent=("classes",)),
    Case("make_figures --out is a file", lambda t: [
        "assets/make_figures.py", "--colm", str(nem_checkpoint(t, "n.pth")), "--colm-label", "x", "--out",
        str(a_file(t))], r"--out .*/file is a file", slow=True),
]


def _latin1(path: Path) -> Path:
    path.write_bytes(b"imagenetc: /data/imagenetc\n# caf\xe9\n")
    return path


def _latin1_split(root: Path) -> Path:
    split = root / "images.txt"
    split.write_bytes(b"n0\xe9/x.JPEG 1\n" + split.read_bytes())
    return root


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_refused_in_one_sentence_and_nothing_half_written(case: Case, tmp_path):
    config(tmp_path)
    argv = case.argv(tmp_path)
    env = case.env(tmp_path) if case.env else None
    before = listing(tmp_path)
    result = run(tmp_path, *argv, env=env)
    assert_one_sentence(result, case.message)
    assert_nothing_half_written(tmp_path, before, refused=True)
    for name in case.absent:
        assert not (tmp_path / name).exists(), name


# --------------------------------------------------------------------------- what must run through

def test_byte_order_mark_in_split_file_is_accepted(tmp_path):
    from classification.eval.benchmark_sets import read_split

    root = benchmark(tmp_path)
    split = root / "images.txt"
    lines = split.read_text().splitlines()
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())
    assert not read_split(split)[0].path.startswith("\ufeff")
    split.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")  # saved on Windows
    assert [f"{line.path} {line.label}" for line in read_split(split)] == lines


def test_sixteen_bit_png_renders_and_evaluates(tmp_path):
    config(tmp_path)
    (tmp_path / "val" / WNIDS[0]).mkdir(parents=True)
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "val" / WNIDS[0] / "ILSVRC2012_val_00000001.png")
    before = listing(tmp_path)
    result = run(tmp_path, RENDER, "--val", str(tmp_path / "val"), "--out", str(tmp_path / "out"), "--parts", "clean",
                 "--workers", "0")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    clean = np.asarray(Image.open(tmp_path / "out" / "clean" / WNIDS[0] / "ILSVRC2012_val_00000001.jpg"))
    assert 100 < clean.mean() < 155 and clean.min() < 30  # the ramp, not white
    from classification.eval.preprocess import load_eval_uint8

    assert load_eval_uint8(tmp_path / "val" / WNIDS[0] / "ILSVRC2012_val_00000001.png").float().mean() < 200
    assert_nothing_half_written(tmp_path, before)


def _as_user_files(root: Path) -> Path:
    """The benchmark as users' folders hold it: the first image renamed with a space and accents, the second
    saved in five other modes (grey, CMYK, RGBA, palette, 16-bit grey), a .DS_Store beside the split file."""
    lines = (root / "images.txt").read_text().splitlines()
    first, second = (line.split()[0] for line in lines[:2])
    renamed = "my phötø 1"
    for path in root.rglob(f"{Path(first).stem}.*"):
        path.rename(path.with_name(path.name.replace(Path(first).stem, renamed)))
    (root / "images.txt").write_text("\n".join([lines[0].replace(Path(first).stem, renamed), *lines[1:]]) + "\n")
    for k, path in enumerate(sorted(root.rglob(f"{Path(second).stem}.*"))):
        rgb = Image.open(path).convert("RGB")
        mode = ("L", "CMYK", "RGBA", "P", "I;16")[k % 5]
        if mode == "I;16":
            Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257).save(path, format="PNG")
        else:
            rgb.convert(mode).save(path, format="PNG" if mode in ("RGBA", "P") else "JPEG")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


@pytest.mark.slow
def test_validate_reads_any_image_mode_and_names_with_spaces(tmp_path):
    config(tmp_path)
    root = _as_user_files(benchmark(tmp_path))
    result = run(tmp_path, VALIDATE, "--root", str(root), "--random-init", "--clas", "rn18", "--workers", "0",
                 "--no-progress", "--out", str(tmp_path / "json"))
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "json" / "none_rn18.meta.json").read_text())
    assert meta["total"] == [[2] * 5] * len(IMAGENETC_CATEGORIES) and meta["dataset"]["missing"] == 0


@pytest.mark.slow
def test_validate_names_a_zero_byte_image_after_its_log_lines(tmp_path):
    config(tmp_path)
    root = benchmark(tmp_path)
    next((root / "weather" / "fog" / "3").rglob("ILSVRC2012_val_00000002.JPEG")).write_bytes(b"")
    before = listing(tmp_path)
    result = run(tmp_path, VALIDATE, "--root", str(root), "--random-init", "--clas", "rn18", "--workers", "0",
                 "--no-progress", "--out", str(tmp_path / "json"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [result.stderr.strip().splitlines()[-1]], result.stderr
    assert re.search(r"fog/3/n\d+/ILSVRC2012_val_00000002\.JPEG \(line 2 of .*images\.txt\) cannot be decoded; "
                     r"replace", errors[0]), errors[0]
    assert not (tmp_path / "json").exists()
    assert_nothing_half_written(tmp_path, before, refused=True)


def test_render_converts_any_mode_skips_system_files_and_keeps_spaced_names(tmp_path):
    config(tmp_path)
    folder = tmp_path / "val" / WNIDS[0]
    folder.mkdir(parents=True)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    rgb.convert("L").save(folder / "grey.JPEG")
    rgb.convert("CMYK").save(folder / "cmyk.JPEG")
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.save(folder / "my phötø 1.JPEG")
    rgb.save(folder / "bitmap.BMP")
    rgb.save(folder / "web.webp")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "val" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    argv = [RENDER, "--val", str(tmp_path / "val"), "--out", str(tmp_path / "out"), "--parts", "clean", "--workers", "0"]
    before = listing(tmp_path)
    result = run(tmp_path, *argv)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out" / "images.txt").read_text(encoding="utf-8").splitlines()
    stems = ("bitmap", "cmyk", "grey", "my phötø 1", "rgba", "web")  # every file torchvision's ImageFolder reads
    assert lines == [f"{WNIDS[0]}/{stem}.JPEG 0" for stem in stems]
    for stem in stems:
        with Image.open(tmp_path / "out" / "clean" / WNIDS[0] / f"{stem}.jpg") as image:
            assert image.mode == "RGB" and image.size == (224, 224)
    assert run(tmp_path, *argv, "--limit", "1").returncode == 0  # a resume keeps the spaced name listed
    assert (tmp_path / "out" / "images.txt").read_text(encoding="utf-8").splitlines() == lines
    assert_nothing_half_written(tmp_path, before)


@pytest.mark.slow
def test_render_corrupt_source_advice_then_resume(tmp_path):
    config(tmp_path)
    val = val_folder(tmp_path, per_class=2)
    broken = val / WNIDS[1] / "ILSVRC2012_val_00000003.JPEG"
    broken.write_bytes(b"truncated")
    argv = [RENDER, "--val", str(val), "--out", str(tmp_path / "out"), "--parts", "clean", "--workers", "0"]
    before = listing(tmp_path)
    assert_one_sentence(run(tmp_path, *argv), r"cannot decode image .*00000003\.JPEG.*delete it, then run again")
    assert_nothing_half_written(tmp_path, before)
    broken.unlink()
    result = run(tmp_path, *argv, "--limit", "3")
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out" / "images.txt").read_text().splitlines()
    assert len(lines) == 3
    result = run(tmp_path, *argv, "--limit", "1")  # a smaller resume keeps the split whole
    assert result.returncode == 0 and (tmp_path / "out" / "images.txt").read_text().splitlines() == lines
    assert_nothing_half_written(tmp_path, before)


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM

class Running:
    """A script started in the background; its stderr is read as it comes, so that a test can wait for what
    the process itself says or does instead of sleeping."""

    def __init__(self, tmp: Path, *argv: str):
        environment = {**os.environ, "SYMPIE_CONFIG": str(tmp / "config_paths.yaml"),
                       "SYMPIE_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=environment, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:  # universal newlines: tqdm's \r-separated updates are lines too
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float = 300, may_end: bool = False) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready():
                if may_end and self.process.poll() is not None:
                    return
                assert self.process.poll() is None, f"ended before {what}:\n" + "\n".join(self.lines)
                assert time.monotonic() < deadline, f"no {what} after {timeout} s"
                self._changed.wait(0.05)

    def said(self, pattern: str) -> Callable[[], bool]:
        return lambda: any(re.search(pattern, line) for line in self.lines)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        returncode = self.process.wait(timeout)
        self._reader.join(timeout)
        return returncode, "\n".join(self.lines)


def catches(pid: int, signum: int) -> Callable[[], bool]:
    """True once process ``pid`` has a handler for ``signum`` (its scripts install theirs before the imports)."""
    def ready() -> bool:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:  # ended (and reaped) meanwhile
            return False
        for line in status.splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
        return False
    return ready


def fork_server_started(pid: int) -> Callable[[], bool]:
    """True once process ``pid`` has started multiprocessing's fork server (a child still importing torch)."""
    def ready() -> bool:
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
                if int(fields["PPid"]) == pid and b"forkserver" in (status.parent / "cmdline").read_bytes():
                    return True
            except (OSError, KeyError, ValueError):
                continue
        return False
    return ready


def rendered_files(out: Path, count: int) -> Callable[[], bool]:
    """True once ``count`` finished files are in ``out`` (temporaries, hidden, do not count)."""
    return lambda: sum(1 for p in out.rglob("*.JPEG") if not p.name.startswith(".")) >= count


STOP_LINE = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}
STOP_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def assert_stopped_in_one_line(returncode: int, stderr: str, signum: int) -> None:
    """Exit status 128 + signal, no traceback or error of any process, the stop line once and last."""
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
    assert returncode == STOP_STATUS[signum], stderr
    assert "Traceback" not in stderr and "Error" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert [line for line in lines if line.startswith(STOP_LINE[signum])] == lines[-1:], stderr


def render_moments() -> list:
    """(signal, whom, moment, workers): the moments of a render.py run to stop it at, start-up included."""
    on_proc = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="watches the process through /proc")
    return [
        pytest.param(signal.SIGINT, "process", "imports", 1, marks=on_proc, id="ctrl-c while importing"),
        pytest.param(signal.SIGINT, "group", "fork server", 2, marks=on_proc,
                     id="terminal ctrl-c while the workers start"),
        pytest.param(signal.SIGINT, "process", "first file", 1, id="ctrl-c after the first file"),
        pytest.param(signal.SIGTERM, "process", "some files", 2, id="sigterm to the main process while rendering"),
        pytest.param(signal.SIGTERM, "group", "some files", 2, id="sigterm to the job while rendering"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("signum, whom, moment, workers", render_moments())
def test_render_stops_in_one_line_whenever_the_signal_comes(signum, whom, moment, workers, tmp_path):
    """Ctrl-C (a process's or the terminal's, which reaches the workers too) and SIGTERM (kill, timeout, job
    schedulers) at several moments of a run: one line, status 130 or 143, no traceback of any process (no
    BrokenPipeError of a worker), finished files intact; never swallowed (the run does not go on)."""
    config(tmp_path)
    val = val_folder(tmp_path, per_class=2, size=256)
    before = listing(tmp_path)
    out = tmp_path / "out"
    running = Running(tmp_path, RENDER, "--val", str(val), "--out", str(out), "--workers", str(workers))
    pid = running.process.pid
    ready = {"imports": catches(pid, signal.SIGTERM), "fork server": fork_server_started(pid),
             "first file": rendered_files(out, 1), "some files": rendered_files(out, 20)}[moment]
    running.wait_for(moment, ready)
    if whom == "group":
        os.killpg(pid, signum)
    else:
        running.process.send_signal(signum)
    assert_stopped_in_one_line(*running.finish(), signum)
    assert not (out / "images.txt").exists()  # the run did not go on to the end
    assert_nothing_half_written(tmp_path, before)


@pytest.mark.slow
@pytest.mark.parametrize("signum, moment", [(signal.SIGINT, "imports"), (signal.SIGTERM, "evaluation")])
def test_validate_stops_in_one_line(signum, moment, tmp_path):
    config(tmp_path)
    root = benchmark(tmp_path)
    before = listing(tmp_path)
    running = Running(tmp_path, VALIDATE, "--root", str(root), "--random-init", "--clas", "rn18", "--workers", "2",
                      "--batch-size", "4", "--out", str(tmp_path / "json"))
    ready = catches(running.process.pid, signal.SIGTERM) if moment == "imports" else running.said(r"imagenetc: .*\| *[1-9]\d*/")
    running.wait_for(moment, ready)
    running.process.send_signal(signum)
    assert_stopped_in_one_line(*running.finish(), signum)
    assert_nothing_half_written(tmp_path, before, refused=True)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="watches the process through /proc")
@pytest.mark.parametrize("script", ["classification/eval/compare.py", "data/make_splits.py"])
def test_other_scripts_stop_in_one_line_while_starting(script, tmp_path):
    config(tmp_path)
    argv = ["--base", str(grid_json(tmp_path, "none_rn18.json")), "--data", str(grid_json(tmp_path, "sympie_rn18.json"))] \
        if script.endswith("compare.py") else ["imagenetc", str(benchmark(tmp_path)), "--out", str(tmp_path / "s.txt")]
    before = listing(tmp_path)
    running = Running(tmp_path, script, *argv)
    running.wait_for("the handlers", catches(running.process.pid, signal.SIGTERM), may_end=True)
    running.process.send_signal(signal.SIGTERM)  # nothing if it has ended
    returncode, stderr = running.finish()
    if returncode == 0:  # it finished before the signal came (no heavy imports): then nothing may be wrong
        assert "Traceback" not in stderr, stderr
    else:
        assert_stopped_in_one_line(returncode, stderr, signal.SIGTERM)
        assert_nothing_half_written(tmp_path, before, refused=True)


@pytest.mark.slow
def test_empty_cells_are_null_and_outputs_honour_the_umask(tmp_path):
    config(tmp_path)
    root = benchmark(tmp_path)
    for path in (root / "weather" / "fog" / "3").rglob("*.JPEG"):  # a whole cell missing
        path.unlink()
    before = listing(tmp_path)
    result = run(tmp_path, VALIDATE, "--root", str(root), "--skip-missing", "--random-init", "--clas", "rn18",
                 "--workers", "0", "--no-progress", "--out", str(tmp_path / "json"), umask=0o027)
    assert result.returncode == 0, result.stderr
    grid_path = tmp_path / "json" / "none_rn18.json"
    grid = json.loads(grid_path.read_text())
    meta = json.loads(grid_path.with_suffix(".meta.json").read_text())
    assert meta["grid_sha256"] == hashlib.sha256(grid_path.read_bytes()).hexdigest()  # they belong together
    assert grid[IMAGENETC_CATEGORIES.index("fog")][2] is None
    assert sum(v is None for row in grid for v in row) == 1
    assert grid_path.stat().st_mode & 0o777 == 0o640
    shown = run(tmp_path, "classification/eval/show_grid.py", "--json", str(grid_path), umask=0o027)
    assert shown.returncode == 0, shown.stderr
    assert " -" in shown.stdout and "1 empty cell left out" in shown.stdout
    assert grid_path.with_suffix(".png").stat().st_mode & 0o777 == 0o640
    assert_nothing_half_written(tmp_path, before)


@pytest.mark.slow
def test_demo_with_a_damaged_cache_renders_it_again(tmp_path):
    config(tmp_path)
    argv = [VALIDATE, "--demo", "--debug", "--colm", "none", "--no-progress", "--out", str(tmp_path / "json")]
    before = listing(tmp_path)  # --debug: one batch classified; the whole set is rendered (and rendered again)
    assert run(tmp_path, *argv).returncode == 0
    victim = next((tmp_path / "cache" / "demo" / "weather" / "fog").rglob("*.JPEG"))
    victim.write_bytes(victim.read_bytes()[:100])  # truncated, as by a full disk
    result = run(tmp_path, *argv)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "missing or changed files; rendering it again" in result.stderr
    assert victim.stat().st_size > 100
    assert_nothing_half_written(tmp_path, before)


# --------------------------------------------------------------------------- in-process checks

def test_clip_embeddings_are_used_when_their_cache_cannot_be_written(tmp_path, caplog):
    from classification.clip.zeroshot import cached_class_embeddings

    a_file(tmp_path, "cache")  # the cache folder's place holds a file: nothing can be written below it
    before = listing(tmp_path)
    embeddings = torch.ones(3, 4)
    got = cached_class_embeddings(tmp_path / "cache" / "clip" / "RN50.pt", lambda: embeddings, {"templates": "single"})
    assert got is embeddings and "could not cache the CLIP class embeddings" in caplog.text
    assert listing(tmp_path) == before


def test_folders_where_files_are_expected_are_named_as_folders(tmp_path):
    from classification.errors import UserInputError
    from classification.eval.benchmark_sets import read_split
    from classification.eval.render import list_sources

    (tmp_path / "split").mkdir()
    with pytest.raises(UserInputError, match=r"split file .*split is a folder, not a file"):
        read_split(tmp_path / "split")
    with pytest.raises(UserInputError, match=r"ImageNet val folder .*/file is a file, not a folder"):
        list_sources(a_file(tmp_path))


def test_a_folder_the_user_may_not_read_is_one_sentence(tmp_path, monkeypatch, capsys):
    from classification.eval import render

    val = val_folder(tmp_path)
    blocked, listing = val / WNIDS[1], Path.iterdir

    def iterdir(self):  # as for a folder of another user, mode 700 (root, running the tests, reads everything)
        if self == blocked:
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(SystemExit) as info:
        render.main(["--val", str(val), "--out", str(tmp_path / "out"), "--workers", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: permission denied on {blocked}; give this user access to it or choose another path."]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- lost work, full disks

@pytest.mark.slow
def test_undecodable_images_are_found_first_or_skipped_and_listed(tmp_path):
    """A damaged file in the last cell must not end a long run with nothing written: --check-files finds it
    before the evaluation, --skip-missing leaves it out and lists it in the metadata."""
    config(tmp_path)
    root = benchmark(tmp_path)
    damaged = next((root / "clean").rglob("ILSVRC2012_val_00000002.*"))
    damaged.write_bytes(damaged.read_bytes()[:50])
    argv = [VALIDATE, "--root", str(root), "--random-init", "--clas", "rn18", "--workers", "2", "--no-progress",
            "--out", str(tmp_path / "json")]
    before = listing(tmp_path)
    checked = run(tmp_path, *argv, "--check-files")
    assert_one_sentence(checked, r"1 of the \d+ files cannot be decoded, e\.g\. .*clean/n\d+/ILSVRC2012_val_00000002"
                                 r"\.jpg \(line 2 of .*images\.txt\); replace them, remove their lines or pass "
                                 r"--skip-missing")
    assert "imagenetc: " not in checked.stderr  # stopped before the evaluation
    assert_nothing_half_written(tmp_path, before, refused=True)
    result = run(tmp_path, *argv, "--skip-missing")
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "json" / "none_rn18.meta.json").read_text())
    assert meta["undecodable"] == 1 and meta["undecodable_images"] == [{"path": str(damaged), "line": 2}]
    clean = IMAGENETC_CATEGORIES.index("clean")
    assert meta["total"][clean] == [1] * 5 and meta["total"][0] == [2] * 5
    assert "1 files could not be decoded and were left out" in result.stderr


def test_disk_full_while_validate_writes_keeps_the_previous_grid(tmp_path, monkeypatch, capsys):
    """ENOSPC on the metadata, after the grid was written: one sentence, the previous grid and metadata (of
    another run) unchanged and together, no temporary file."""
    from classification.eval import validate

    config(tmp_path)
    root = benchmark(tmp_path)
    out = tmp_path / "json"
    out.mkdir()
    previous = {name: f"previous {name}" for name in ("none_rn18.json", "none_rn18.meta.json")}
    for name, text in previous.items():
        (out / name).write_text(text)
    before = listing(tmp_path)
    write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if ".meta.json" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(SystemExit) as info:
        validate.main(["--root", str(root), "--random-init", "--clas", "rn18", "--workers", "0", "--no-progress",
                       "--out", str(out)])
    monkeypatch.undo()
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(r"none_rn18\.json could not be written: No space left on device in .*json; "
                                          r"free some space", errors[0]), errors
    assert {name: (out / name).read_text() for name in previous} == previous
    assert listing(tmp_path) == before


def test_disk_full_while_render_writes_keeps_the_finished_files(tmp_path, monkeypatch, capsys):
    from classification.eval import render

    config(tmp_path)
    val = val_folder(tmp_path)
    before = listing(tmp_path)
    save, calls = Image.Image.save, []

    def full_disk(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(SystemExit) as info:
        render.main(["--val", str(val), "--out", str(tmp_path / "out"), "--parts", "clean", "color", "--workers", "0"])
    monkeypatch.undo()
    assert info.value.code == 2
    assert re.search(r"^error: .*\.jpg could not be written: No space left on device in .*; free some space or choose "
                     r"another output folder", capsys.readouterr().err.strip().splitlines()[-1])
    assert len([p for p in (tmp_path / "out").rglob("*.jpg")]) == 3  # the finished ones
    assert_nothing_half_written(tmp_path, before)


def test_a_heat_map_is_written_in_the_format_its_suffix_names(tmp_path):
    config(tmp_path)
    result = run(tmp_path, "classification/eval/compare.py", "--base", str(grid_json(tmp_path, "none_rn18.json")),
                 "--data", str(grid_json(tmp_path, "sympie_rn18.json", 60.0)), "--out", str(tmp_path / "diff.jpg"))
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "diff.jpg") as image:
        assert image.format == "JPEG"


def test_an_annotation_repeated_with_the_same_class_is_placed_once(tmp_path, caplog):
    import make_clas_val

    flat, csv = flat_val(tmp_path)
    csv.write_text(csv.read_text() + csv.read_text().splitlines()[1] + "\n")
    summary = make_clas_val.main(["--val", str(flat), "--annotations", str(csv), "--out", str(tmp_path / "classes")])
    assert summary["images"] == 1 and summary["placed"] == 1
    assert "names 1 image(s) more than once, always with the same class; each is placed once" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("window", ["fork server start", "pool constructor"])
def test_ctrl_c_in_the_windows_of_the_pool_start_is_never_swallowed(window, tmp_path, monkeypatch, capsys):
    """The lost interrupt: the fork server used to be started with Ctrl-C ignored (SIG_IGN) in this process, and
    the kernel discards a signal that arrives while it is ignored: the run went on to the end and exited 0.
    Here the Ctrl-C is sent exactly inside each window of the pool's start; it must end the run (130)."""
    import multiprocessing.forkserver
    import multiprocessing.pool

    from classification.eval import render

    owner, name = {"fork server start": (multiprocessing.forkserver, "ensure_running"),
                   "pool constructor": (multiprocessing.pool.Pool, "_repopulate_pool")}[window]
    original = getattr(owner, name)

    def interrupted_meanwhile(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted_meanwhile)
    config(tmp_path)
    val = val_folder(tmp_path)
    before = listing(tmp_path)
    with pytest.raises(SystemExit) as info:
        render.main(["--val", str(val), "--out", str(tmp_path / "out"), "--parts", "clean", "--workers", "1"])
    assert info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted (Ctrl-C)")
    assert not (tmp_path / "out" / "images.txt").exists()
    assert_nothing_half_written(tmp_path, before)
