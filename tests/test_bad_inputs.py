"""Bad inputs and faults a new user runs into, each through the real command line in a fresh temporary tree.

Every refusal must be exit status 2 and exactly one line on stderr ("error: ..."), no traceback, and leave
nothing half-written (no temporary files, no output that was refused). The accepted inputs (a byte-order
mark, 16-bit PNGs, empty grid cells, a resume after following the advice) must run through.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
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
HIDDEN_TEMPORARY = re.compile(r"^\..*\.tmp|^\.write-test\.|^\.partial$")
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


def assert_nothing_half_written(tmp: Path) -> None:
    leftovers = [p for p in tmp.rglob(".*") if HIDDEN_TEMPORARY.match(p.name)]
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
    result = run(tmp_path, *argv, env=case.env(tmp_path) if case.env else None)
    assert_one_sentence(result, case.message)
    assert_nothing_half_written(tmp_path)
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
    result = run(tmp_path, RENDER, "--val", str(tmp_path / "val"), "--out", str(tmp_path / "out"), "--parts", "clean",
                 "--workers", "0")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    clean = np.asarray(Image.open(tmp_path / "out" / "clean" / WNIDS[0] / "ILSVRC2012_val_00000001.jpg"))
    assert 100 < clean.mean() < 155 and clean.min() < 30  # the ramp, not white
    from classification.eval.preprocess import load_eval_uint8

    assert load_eval_uint8(tmp_path / "val" / WNIDS[0] / "ILSVRC2012_val_00000001.png").float().mean() < 200
    assert_nothing_half_written(tmp_path)


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
    result = run(tmp_path, VALIDATE, "--root", str(root), "--random-init", "--clas", "rn18", "--workers", "0",
                 "--no-progress", "--out", str(tmp_path / "json"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [result.stderr.strip().splitlines()[-1]], result.stderr
    assert re.search(r"fog/3/n\d+/ILSVRC2012_val_00000002\.JPEG \(line 2 of .*images\.txt\) cannot be decoded; "
                     r"replace", errors[0]), errors[0]
    assert not (tmp_path / "json").exists()
    assert_nothing_half_written(tmp_path)


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
    assert_nothing_half_written(tmp_path)


@pytest.mark.slow
def test_render_corrupt_source_advice_then_resume(tmp_path):
    config(tmp_path)
    val = val_folder(tmp_path, per_class=2)
    broken = val / WNIDS[1] / "ILSVRC2012_val_00000003.JPEG"
    broken.write_bytes(b"truncated")
    argv = [RENDER, "--val", str(val), "--out", str(tmp_path / "out"), "--parts", "clean", "--workers", "0"]
    assert_one_sentence(run(tmp_path, *argv), r"cannot decode image .*00000003\.JPEG.*delete it, then run again")
    assert_nothing_half_written(tmp_path)
    broken.unlink()
    result = run(tmp_path, *argv, "--limit", "3")
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out" / "images.txt").read_text().splitlines()
    assert len(lines) == 3
    result = run(tmp_path, *argv, "--limit", "1")  # a smaller resume keeps the split whole
    assert result.returncode == 0 and (tmp_path / "out" / "images.txt").read_text().splitlines() == lines
    assert_nothing_half_written(tmp_path)


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_status_130(tmp_path):
    config(tmp_path)
    val = val_folder(tmp_path, per_class=40, size=300)
    environment = {**os.environ, "SYMPIE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, RENDER, "--val", str(val), "--out", str(tmp_path / "out"),
                                "--workers", "1"], cwd=REPO, env=environment, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "out").rglob("*.JPEG")):  # the worker is rendering
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert [line for line in stderr.splitlines() if line.startswith("interrupted")] == \
        [stderr.strip().splitlines()[-1]]
    assert_nothing_half_written(tmp_path)


def _fork_server_of(pid: int) -> bool:
    """True once process ``pid`` has started multiprocessing's fork server (a child still importing torch)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields["PPid"]) == pid and b"forkserver" in (status.parent / "cmdline").read_bytes():
                return True
        except (OSError, KeyError, ValueError):
            continue
    return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="finds the fork server through /proc")
def test_ctrl_c_of_the_terminal_while_workers_start_is_one_line(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: the fork server and workers, still importing torch,
    must stay silent and the main process alone report it."""
    config(tmp_path)
    val = val_folder(tmp_path, per_class=4, size=300)
    environment = {**os.environ, "SYMPIE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, RENDER, "--val", str(val), "--out", str(tmp_path / "out"),
                                "--workers", "2"], cwd=REPO, env=environment, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while not _fork_server_of(process.pid):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # the fork server now imports torch (seconds); the main process waits for its first worker
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("interrupted"), stderr
    assert not (tmp_path / "out" / "images.txt").exists()
    assert_nothing_half_written(tmp_path)


@pytest.mark.slow
def test_empty_cells_are_null_and_outputs_honour_the_umask(tmp_path):
    config(tmp_path)
    root = benchmark(tmp_path)
    for path in (root / "weather" / "fog" / "3").rglob("*.JPEG"):  # a whole cell missing
        path.unlink()
    result = run(tmp_path, VALIDATE, "--root", str(root), "--skip-missing", "--random-init", "--clas", "rn18",
                 "--workers", "0", "--no-progress", "--out", str(tmp_path / "json"), umask=0o027)
    assert result.returncode == 0, result.stderr
    grid_path = tmp_path / "json" / "none_rn18.json"
    grid = json.loads(grid_path.read_text())
    assert grid[IMAGENETC_CATEGORIES.index("fog")][2] is None
    assert sum(v is None for row in grid for v in row) == 1
    assert grid_path.stat().st_mode & 0o777 == 0o640
    shown = run(tmp_path, "classification/eval/show_grid.py", "--json", str(grid_path), umask=0o027)
    assert shown.returncode == 0, shown.stderr
    assert " -" in shown.stdout and "1 empty cell left out" in shown.stdout
    assert grid_path.with_suffix(".png").stat().st_mode & 0o777 == 0o640
    assert_nothing_half_written(tmp_path)


@pytest.mark.slow
def test_demo_with_a_damaged_cache_renders_it_again(tmp_path):
    config(tmp_path)
    argv = [VALIDATE, "--demo", "--colm", "none", "--no-progress", "--out", str(tmp_path / "json")]
    assert run(tmp_path, *argv).returncode == 0
    victim = next((tmp_path / "cache" / "demo" / "weather" / "fog").rglob("*.JPEG"))
    victim.write_bytes(victim.read_bytes()[:100])  # truncated, as by a full disk
    result = run(tmp_path, *argv)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "missing or changed files; rendering it again" in result.stderr
    assert victim.stat().st_size > 100
    assert_nothing_half_written(tmp_path)


# --------------------------------------------------------------------------- in-process checks

def test_clip_embeddings_are_used_when_their_cache_cannot_be_written(tmp_path, caplog):
    from classification.clip.zeroshot import cached_class_embeddings

    a_file(tmp_path, "cache")  # the cache folder's place holds a file: nothing can be written below it
    embeddings = torch.ones(3, 4)
    got = cached_class_embeddings(tmp_path / "cache" / "clip" / "RN50.pt", lambda: embeddings, {"templates": "single"})
    assert got is embeddings and "could not cache the CLIP class embeddings" in caplog.text
    assert_nothing_half_written(tmp_path)


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
