"""Benchmark builder (data/README.md): ImageNet-C-style evaluation sets rendered from ImageNet val class folders.

Every source image is resized (short side 256, bilinear) and centre-cropped to 224x224 as ImageNet-C
was, then written, as JPEG quality 85, in the layouts ``classification/eval/benchmark_sets.py`` reads:

* ``<group>/<corruption>/<sev>/<wnid>/<stem>.JPEG``: the 15 ImageNet-C corruptions (19 with
  ``--extra``; the extra four go to blur/, digital/, noise/ and weather/, see :data:`EXTRA_GROUPS`);
* ``clean/<wnid>/<stem>.jpg``: the crop itself;
* ``color/<sev>/<wnid>/<stem>.jpg``: one of SyMPIE's colour warps (darken, sunset, night, white),
  drawn uniformly per image and severity;
* ``mixed/<sev>/<wnid>/<stem>.JPEG``: ImageNet-C-Mixed, 2 or 3 distinct ImageNet-C corruptions (drawn
  per image and severity) applied in sequence at that severity;
* ``images.txt`` (and ``mixed/images.txt``): ``<wnid>/<stem>.JPEG <class index>`` per rendered image.

Determinism: every random draw derives from (seed, what, severity, the image's ``<wnid>/<file>`` name),
so the same seed gives the same bytes whatever ``--limit``, ``--workers``, interruptions or images added
to or deleted from the val folder. A run skips files that exist (each file is written under a temporary
name in ``.partial/``, removed at the next start if a run was killed, and renamed into place),
``render_manifest.json`` refuses a resume with another seed, and ``images.txt`` lists every image
rendered so far (a resume with a smaller ``--limit`` keeps the others).

    python classification/eval/render.py --val /data/imagenet/val_classes --out /data/sympie-bench --workers 8
"""
from __future__ import annotations

from classification.errors import stop_quietly_on_signals

stop_quietly_on_signals(__name__)  # before the imports below (seconds): Ctrl-C or SIGTERM meanwhile is one line

import argparse
import contextlib
import hashlib
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from classification.atomic import atomic_path, check_output_dir, write_json
from classification.cli import parse_command_line
from classification.errors import STOP_SIGNALS, UserInputError, report_user_errors
from classification.eval.benchmark_sets import CROP, SEVERITIES, SPLIT_FILE
from classification.imagenet import imagenet_class_index
from classification.rgb8 import pil_rgb8
from classification.textfile import read_json, read_text
from classification.training.corruptions import CORRUPTIONS, IMAGENET_C, IMAGENET_C_GROUPS, corrupt

log = logging.getLogger(__name__)

EXTRA_GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("gaussian_blur",),
    "digital": ("saturate",),
    "noise": ("speckle_noise",),
    "weather": ("spatter",),
}
GROUP_OF: dict[str, str] = {name: group for table in (IMAGENET_C_GROUPS, EXTRA_GROUPS)
                            for group, names in table.items() for name in names}
COLOR_WARPS = ("darken", "sunset", "night", "white")
MIXED_COUNTS = (2, 3)
PARTS = ("imagenet-c", "clean", "color", "mixed")
RESIZE = 256  # then the centre crop of CROP, as ImageNet-C was made
JPEG_QUALITY = 85
IMAGE_EXTENSIONS = IMG_EXTENSIONS  # the files torchvision's ImageFolder reads (.jpg, .png, .bmp, .tif, .webp ...)
MANIFEST = "render_manifest.json"
STAGING = ".partial"  # temporary files, renamed into place when complete


# --------------------------------------------------------------------------- what to render

@dataclass(frozen=True)
class SourceImage:
    """One ImageNet val image; ``index`` is its position in the sorted listing of the whole folder."""

    index: int
    wnid: str
    path: Path

    @property
    def line_path(self) -> str:
        return f"{self.wnid}/{self.path.stem}.JPEG"


class Step(NamedTuple):
    """Apply corruption ``name`` at ``severity`` with random seed ``seed``."""

    name: str
    severity: int
    seed: int


@dataclass(frozen=True)
class Output:
    """A file to write: the crop after ``steps`` (none for clean), saved as JPEG."""

    path: Path
    steps: tuple[Step, ...]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (stable across processes and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class RenderPlan:
    """Where and what to render; :meth:`outputs` lists every file of one source image."""

    out: Path
    seed: int
    corruptions: tuple[str, ...]
    parts: tuple[str, ...]

    def outputs(self, image: SourceImage) -> list[Output]:
        wnid, stem, key = image.wnid, image.path.stem, image.line_path
        outputs: list[Output] = []
        if "imagenet-c" in self.parts:
            for name in self.corruptions:
                for sev in SEVERITIES:
                    path = self.out / GROUP_OF[name] / name / str(sev) / wnid / f"{stem}.JPEG"
                    outputs.append(Output(path, (Step(name, sev, derive_seed(self.seed, name, sev, key)),)))
        if "clean" in self.parts:
            outputs.append(Output(self.out / "clean" / wnid / f"{stem}.jpg", ()))
        if "color" in self.parts:
            for sev in SEVERITIES:
                rng = random.Random(derive_seed(self.seed, "color", sev, key))
                step = Step(rng.choice(COLOR_WARPS), sev, rng.getrandbits(63))
                outputs.append(Output(self.out / "color" / str(sev) / wnid / f"{stem}.jpg", (step,)))
        if "mixed" in self.parts:
            for sev in SEVERITIES:
                rng = random.Random(derive_seed(self.seed, "mixed", sev, key))
                names = rng.sample(IMAGENET_C, rng.choice(MIXED_COUNTS))
                steps = tuple(Step(name, sev, rng.getrandbits(63)) for name in names)
                outputs.append(Output(self.out / "mixed" / str(sev) / wnid / f"{stem}.JPEG", steps))
        return outputs


# --------------------------------------------------------------------------- sources and split file

def list_sources(val: Path) -> list[SourceImage]:
    """Every image of the class folders of ``val``, sorted by (wnid, file name)."""
    if not val.is_dir():
        problem = "is a file, not a folder" if val.exists() else "does not exist"
        raise UserInputError(f"ImageNet val folder {val} {problem}; pass --val with the class folders "
                             f"written by make_clas_val.py.")
    class_index = imagenet_class_index()
    sources: list[SourceImage] = []
    rendered_as: dict[str, Path] = {}  # line path (the rendered file's name) -> its source
    for class_dir in sorted(p for p in val.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if class_dir.name not in class_index:
            raise UserInputError(f"folder {class_dir} is not named after an ImageNet-1k wnid; --val must hold "
                                 f"one folder per class as written by make_clas_val.py.")
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
                source = SourceImage(len(sources), class_dir.name, path)
                if source.line_path in rendered_as:
                    raise UserInputError(f"{rendered_as[source.line_path]} and {path} would both be rendered as "
                                         f"{source.line_path}; rename or remove one of them.")
                rendered_as[source.line_path] = path
                sources.append(source)
    if not sources:
        raise UserInputError(f"{val} holds no images in class folders (<wnid>/<file>.JPEG); "
                             f"run make_clas_val.py first and pass its --out as --val.")
    return sources


def spread_subset(sources: Sequence[SourceImage], limit: int | None) -> list[SourceImage]:
    """``limit`` images spread evenly over the sorted list (so over the classes); all when None."""
    if limit is None or limit >= len(sources):
        return list(sources)
    return [sources[i * len(sources) // limit] for i in range(limit)]


def write_split(path: Path, images: Iterable[SourceImage], sources: Sequence[SourceImage] | None = None) -> None:
    """``images.txt`` of ``images``; with ``sources`` (a resume), the images an earlier run listed that are
    still in ``sources`` are kept too, in source order."""
    class_index = imagenet_class_index()
    chosen = {im.line_path: im for im in images}
    if sources is not None and path.is_file():
        by_line = {s.line_path: s for s in sources}
        for line in read_text(path, "split file").splitlines():
            earlier = by_line.get(line.rsplit(" ", 1)[0])  # file names may hold spaces
            if earlier is not None:
                chosen.setdefault(earlier.line_path, earlier)
    ordered = sorted(chosen.values(), key=lambda im: im.index)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{im.line_path} {class_index[im.wnid]}\n" for im in ordered), encoding="utf-8")


def check_manifest(out: Path, seed: int) -> None:
    """Create ``out`` with a manifest, or check that it was made with the same seed."""
    manifest = out / MANIFEST
    if manifest.is_file():
        recorded = read_json(manifest, "render manifest", "delete the output folder or fix the file")
        if not isinstance(recorded, dict) or recorded.get("seed") != seed:
            seen = recorded.get("seed") if isinstance(recorded, dict) else None
            raise UserInputError(f"{out} was rendered with seed {seen}, not {seed}; pass --seed {seen} to resume "
                                 f"it or choose another --out.")
        return
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"{out} is not empty and has no {MANIFEST}; choose an empty or new --out folder.")
    write_json(manifest, {"seed": seed, "resize": RESIZE, "crop": CROP, "jpeg_quality": JPEG_QUALITY}, indent=2)


# --------------------------------------------------------------------------- rendering

def load_crop(path: Path) -> np.ndarray:
    """Decode RGB, Resize(256) (short side, bilinear, antialiased) and CenterCrop(224): HxWx3 uint8."""
    try:
        with Image.open(path) as image:
            image = pil_rgb8(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserInputError(f"cannot decode image {path} ({err}); replace or delete it, then run again "
                             f"(finished files are kept).") from None
    return np.asarray(resize_and_crop(image))


def resize_and_crop(image: Image.Image) -> Image.Image:
    """torchvision's ``Resize(256)`` + ``CenterCrop(224)`` on a PIL image (same arithmetic, without importing it)."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(RESIZE * long / short)
    size = (RESIZE, new_long) if width <= height else (new_long, RESIZE)
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    left = int(round((size[0] - CROP) / 2.0))
    top = int(round((size[1] - CROP) / 2.0))
    return image.crop((left, top, left + CROP, top + CROP))


def apply_steps(image: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
    for step in steps:
        image = corrupt(image, step.name, step.severity, seed=step.seed)
    return image


def save_jpeg(image: np.ndarray, path: Path, staging: Path | None = None) -> None:
    """JPEG quality 85, written under a temporary name (in ``staging`` if given) and renamed into place."""
    with atomic_path(path, staging) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=JPEG_QUALITY, optimize=True)  # as ImageNet-C


def render_image(plan: RenderPlan, image: SourceImage) -> int:
    """Write the missing outputs of one source image; returns how many files were written."""
    todo = [o for o in plan.outputs(image) if not o.path.exists()]
    if todo:
        crop = load_crop(image.path)
        for output in todo:
            save_jpeg(apply_steps(crop, output.steps), output.path, plan.out / STAGING)
    return len(todo)


_WORKER_PLAN: RenderPlan | None = None


def _init_worker(plan: RenderPlan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to report (one line)


def _render_in_worker(image: SourceImage) -> int:
    assert _WORKER_PLAN is not None
    return render_image(_WORKER_PLAN, image)


@contextlib.contextmanager
def _single_torch_thread():
    """One intra-op thread: on 224x224 images more threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _start_fork_server() -> None:
    """Start the fork server (unless it runs) with Ctrl-C blocked: it keeps it blocked, and ignored once it
    runs, and so do the workers it forks, from birth: a Ctrl-C of the terminal while they import torch and
    set up prints no traceback of theirs, and this process alone reports it (one line). Blocked, not
    ignored, here: a Ctrl-C that reaches this process meanwhile waits and is handled right after. The resource
    tracker is started first: starting, it unblocks Ctrl-C in the calling thread."""
    multiprocessing.resource_tracker.ensure_running()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _pool_context() -> multiprocessing.context.BaseContext:
    """A fork server that imported this module once (cheap, and safe after torch ran OpenMP); else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__ if __name__ != "__main__" else "classification.eval.render"])
    _start_fork_server()
    return context


@contextlib.contextmanager
def _worker_pool(plan: RenderPlan, workers: int):
    """A pool of ``workers`` render processes, terminated on leaving. Ctrl-C and SIGTERM while it starts are
    held back until the pool is whole, then delivered again (to whatever handles them here): a pool cut short
    in its constructor would leave workers that start after this process has exited and print tracebacks."""
    held: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in STOP_SIGNALS}
    pool = None
    try:
        pool = _pool_context().Pool(workers, initializer=_init_worker, initargs=(plan,))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pool is None:
            _deliver(held)
    with pool:
        _deliver(held)
        yield pool


def _deliver(signals: list[int]) -> None:
    """Raise each held signal again, once, in the order they came."""
    for signum in dict.fromkeys(signals):
        signal.raise_signal(signum)


def _render_all(plan: RenderPlan, images: list[SourceImage], workers: int) -> int:
    """Render ``images`` in this process (workers=0) or in a pool; returns the number of files written."""
    bar = tqdm(total=len(images), desc="rendering", unit="img")
    written = 0
    try:
        if workers == 0:
            with _single_torch_thread():
                for image in images:
                    written += render_image(plan, image)
                    bar.update()
                    bar.set_postfix(files=written, refresh=False)
        else:
            with _worker_pool(plan, workers) as pool:
                for count in pool.imap_unordered(_render_in_worker, images):
                    written += count
                    bar.update()
                    bar.set_postfix(files=written, refresh=False)
    finally:
        bar.close()
    return written


def check_apart(val: Path, out: Path) -> None:
    """Refuse an output folder that is the val folder or lies inside it: the next run would list the rendered
    files (class folders of JPEGs) as source images."""
    val_real, out_real = val.expanduser().resolve(), out.resolve()
    if out_real == val_real or val_real in out_real.parents:
        raise UserInputError(f"--out {out} lies inside --val {val}; the rendered files would be read as source "
                             f"images by the next run: choose an output folder outside {val}.")


def render(val: Path, out: str | os.PathLike, seed: int = 0, parts: Sequence[str] = PARTS, corruptions: Sequence[str] | None = None,
           extra: bool = False, limit: int | None = None, workers: int = 0) -> dict:
    """Render the benchmark; returns a summary (images, files written, files present, seconds)."""
    start = time.perf_counter()
    if corruptions is None:
        corruptions = IMAGENET_C + (tuple(n for names in EXTRA_GROUPS.values() for n in names) if extra else ())
    unknown = [n for n in corruptions if n not in GROUP_OF or n not in CORRUPTIONS]
    if unknown:
        raise UserInputError(f"unknown corruption {unknown[0]!r}; choose among {', '.join(GROUP_OF)}.")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise UserInputError(f"unknown part {unknown[0]!r}; choose among {', '.join(PARTS)}.")
    if limit is not None and limit < 1:
        raise UserInputError(f"--limit must be a positive number of images, got {limit}.")
    if workers < 0:
        raise UserInputError(f"--workers must be 0 (in this process) or more, got {workers}.")
    out = check_output_dir(out, "--out")
    check_apart(Path(val), out)
    sources = list_sources(Path(val))
    check_manifest(out, seed)
    shutil.rmtree(out / STAGING, ignore_errors=True)  # temporaries of a killed run
    plan = RenderPlan(out, seed, tuple(corruptions), tuple(parts))
    images = spread_subset(sources, limit)
    total_files = len(images) * len(plan.outputs(images[0]))
    try:
        written = _render_all(plan, images, workers)
    finally:  # also after an error or Ctrl-C: the workers are gone, so are their temporaries
        shutil.rmtree(out / STAGING, ignore_errors=True)
    write_split(out / SPLIT_FILE, images, sources)
    if "mixed" in parts:
        write_split(out / "mixed" / SPLIT_FILE, images, sources)
    summary = {"images": len(images), "written": written, "present": total_files - written,
               "seconds": round(time.perf_counter() - start, 3)}
    log.info("%d images: %d files written, %d already present, in %.1f s; split file %s",
             summary["images"], summary["written"], summary["present"], summary["seconds"], out / SPLIT_FILE)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", required=True, type=Path, help="ImageNet val class folders (make_clas_val.py --out)")
    parser.add_argument("--out", required=True, help="output folder (new, or one to resume)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default: 0)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="what to render (default: all of them)")
    parser.add_argument("--extra", action="store_true",
                        help="also the 4 extra ImageNet-C corruptions (gaussian_blur, saturate, speckle_noise, spatter)")
    parser.add_argument("--corruptions", nargs="+", metavar="NAME", choices=list(GROUP_OF), default=None,
                        help="render only these ImageNet-C corruptions (default: the 15, or 19 with --extra)")
    parser.add_argument("--limit", type=int, default=None,
                        help="render only N images, spread evenly over the classes (same files as a full run)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes, 0 = render in this process (default: all CPU cores)")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> dict:
    args = parse_command_line(build_parser(), argv)
    return render(args.val, args.out, seed=args.seed, parts=args.parts, corruptions=args.corruptions,
                  extra=args.extra, limit=args.limit, workers=args.workers)


if __name__ == "__main__":
    main(sys.argv[1:])
