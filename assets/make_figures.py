"""Draw ``assets/compare_example.png`` and ``assets/before_after.png`` from a SyMPIE checkpoint.

    python assets/make_figures.py --colm classification/training/checkpoints/sympie_demo.pth \
        --colm-label "demo model (train.py --recipe small), not the paper's" [--grids DIR]  # reuse the demo's grids

* ``compare_example.png``: the compare heat map of the embedded demo (``validate.py --demo``): effnet_lite0
  behind SyMPIE minus effnet_lite0 alone, on the mini ImageNet-C of the repository's twelve photos.
* ``before_after.png``: sample photos clean, corrupted by our engine and corrected by SyMPIE, each with
  effnet_lite0's top-1 prediction (green: the photo's label, red: another class). The rows are picked by a
  rule, written under the figure: of the six sample photos x the 19 corruptions (15 ImageNet-C, 4 colour
  warps) at severity 3, the :data:`HELPED_ROWS` with the largest rise of the label's probability under
  SyMPIE, then the :data:`HURT_ROWS` with the largest fall (one row per corruption at most).

``--colm-label`` is written into both titles: say what the checkpoint is (the figures in the repository
show the shipped demo model ``sympie_demo.pth``, trained by ``train.py --recipe small``; not the released
model).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from classification.atomic import atomic_path, check_output_dir
from classification.classifiers import build_classifier
from classification.errors import UserInputError, report_user_errors
from classification.eval import validate
from classification.eval.embedded_demo import DEMO_CLASSIFIER, VIEWS_PER_PHOTO
from classification.eval.grids import delta, load_grid, render_heatmap
from classification.normalization import denormalize, normalize
from classification.samples import PHOTO_LABELS, SAMPLE_LABELS, sample_path
from classification.training.corruptions import IMAGENET_C, corrupt
from classification.training.model import SyMPIE
from classification.checkpoint import add_trust_argument

ASSETS = Path(__file__).resolve().parent
INK = (33, 37, 41)
RIGHT, WRONG = (25, 135, 84), (220, 53, 69)
CANDIDATE_CORRUPTIONS = (*IMAGENET_C, "darken", "sunset", "night", "white")
BEFORE_AFTER_SEVERITY = 3
HELPED_ROWS, HURT_ROWS = 3, 2
SEED = 0
TILE, CAPTION, LEFT, HEADER, PAD = 224, 22, 130, 70, 8


def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=1)
def class_names() -> list[str]:
    """Short ImageNet class names (the first synonym), by class index."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in range(1000)]


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)


def to_uint8(batch: torch.Tensor) -> list[np.ndarray]:
    return list(batch.clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy())


def load_sample(name: str) -> np.ndarray:
    with Image.open(sample_path(name)) as image:
        return np.asarray(image.convert("RGB"))


def label_probability(classifier: torch.nn.Module, images: list[np.ndarray], labels: list[int]) -> np.ndarray:
    probabilities = classifier(normalize(to_tensor(images))).softmax(1)
    return probabilities[torch.arange(len(labels)), torch.tensor(labels)].numpy()


def pick_rows(gain: np.ndarray, pairs: list[tuple[str, str]]) -> list[int]:
    """Indices of the :data:`HELPED_ROWS` largest gains, then the :data:`HURT_ROWS` most negative ones, each
    corruption used once."""
    chosen: list[int] = []
    for order, count in ((np.argsort(-gain, kind="stable"), HELPED_ROWS), (np.argsort(gain, kind="stable"), HURT_ROWS)):
        taken = 0
        for i in order:
            if taken == count:
                break
            if pairs[i][1] not in {pairs[j][1] for j in chosen}:
                chosen.append(int(i))
                taken += 1
    return chosen


@torch.no_grad()
def before_after(colm: Path, colm_label: str, out: Path, trusted: bool = False) -> Path:
    """Rows of (clean, corrupted, corrected) sample photos with effnet_lite0's predictions, picked by the rule
    of the module docstring."""
    sympie, classifier = SyMPIE.from_checkpoint(colm, trusted=trusted), build_classifier(DEMO_CLASSIFIER)
    pairs = [(photo, name) for photo in sorted(SAMPLE_LABELS) for name in CANDIDATE_CORRUPTIONS]
    photos = {photo: load_sample(photo) for photo in SAMPLE_LABELS}
    all_corrupted = [corrupt(photos[photo], name, BEFORE_AFTER_SEVERITY, seed=SEED) for photo, name in pairs]
    all_corrected = to_uint8(denormalize(sympie(normalize(to_tensor(all_corrupted)))))
    labels = [SAMPLE_LABELS[photo] for photo, _ in pairs]
    gain = label_probability(classifier, all_corrected, labels) - label_probability(classifier, all_corrupted, labels)
    rows = pick_rows(gain, pairs)
    chosen = [pairs[i] for i in rows]
    clean = [photos[photo] for photo, _ in chosen]
    corrupted, corrected = [all_corrupted[i] for i in rows], [all_corrected[i] for i in rows]
    columns = (("clean", clean), (f"corrupted (severity {BEFORE_AFTER_SEVERITY})", corrupted),
               ("corrected by SyMPIE", corrected))
    predictions = [classifier(normalize(to_tensor(images))).argmax(1).tolist() for _, images in columns]

    width = LEFT + len(columns) * (TILE + PAD) + PAD
    title = textwrap.wrap(f"SyMPIE: {colm_label}", width=width // 8)
    header = HEADER + 18 * (len(title) - 1)
    height = header + len(chosen) * (TILE + CAPTION + PAD) + 62
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.multiline_text((PAD, PAD), "\n".join(title), font=font(15), fill=INK, spacing=3)
    for j, (name, _) in enumerate(columns):
        draw.text((LEFT + j * (TILE + PAD) + TILE // 2, header - 8), name, font=font(14), fill=INK, anchor="mb")
    for i, (photo, name) in enumerate(chosen):
        top = header + i * (TILE + CAPTION + PAD)
        draw.multiline_text((PAD, top + TILE // 2), f"{name}\n{'helped' if i < HELPED_ROWS else 'hurt'}: "
                            f"{gain[rows[i]]:+.2f}", font=font(14), fill=INK, anchor="lm")
        for j, (_, images) in enumerate(columns):
            left = LEFT + j * (TILE + PAD)
            canvas.paste(Image.fromarray(images[i]), (left, top))
            label = predictions[j][i]
            draw.text((left + TILE // 2, top + TILE + 3), class_names()[label], font=font(13),
                      fill=RIGHT if label == SAMPLE_LABELS[photo] else WRONG, anchor="mt")
    note = (f"rows picked by rule: of the {len(SAMPLE_LABELS)} sample photos x {len(CANDIDATE_CORRUPTIONS)} corruptions "
            f"at severity {BEFORE_AFTER_SEVERITY}, the {HELPED_ROWS} with the largest rise of the label's probability "
            f"under SyMPIE (helped), then the {HURT_ROWS} with the largest fall (hurt), one row per corruption; "
            f"captions: {DEMO_CLASSIFIER} top-1 (green = the photo's label, red = another class)")
    draw.multiline_text((PAD, height - 54), "\n".join(textwrap.wrap(note, width=width // 7)), font=font(12),
                        fill=(90, 90, 90), spacing=2)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return out


def compare_example(colm: Path, colm_label: str, out: Path, grids: Path | None = None,
                    trusted: bool = False) -> Path:
    """The compare heat map of the embedded demo with ``colm``, with an explicit title. The demo runs in
    ``grids`` (a temporary folder by default) unless both of its grids are already there."""
    with contextlib.ExitStack() as stack:
        folder = grids if grids is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base, data = folder / f"demo_none_{DEMO_CLASSIFIER}.json", folder / f"demo_{colm.stem}_{DEMO_CLASSIFIER}.json"
        if not (base.is_file() and data.is_file()):
            validate.main(["--demo", "--colm", str(colm), "--out", str(folder), "--no-progress",
                           *(["--trust-checkpoint"] if trusted else [])])
        title = (f"Embedded demo ({len(PHOTO_LABELS)} photos x {VIEWS_PER_PHOTO} views, "
                 f"{len(PHOTO_LABELS) * VIEWS_PER_PHOTO} images per cell): {DEMO_CLASSIFIER} behind SyMPIE ({colm_label}) "
                 f"minus {DEMO_CLASSIFIER} alone, accuracy points")
        return render_heatmap(delta(load_grid(data), load_grid(base)), out, title, signed=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--colm", required=True, type=Path, help="SyMPIE (NEM) checkpoint, e.g. final.pth of a run")
    parser.add_argument("--colm-label", required=True,
                        help="what the checkpoint is, written into the titles (e.g. 'demo checkpoint, 100 "
                             "iterations on 6 photos, not the released model')")
    parser.add_argument("--out", type=Path, default=ASSETS, help="output folder (default: assets/)")
    parser.add_argument("--grids", type=Path, default=None,
                        help="folder of the demo's grids: reused when present, else the demo writes them there "
                             "(default: a temporary folder)")
    parser.add_argument("--only", choices=("compare", "before_after"), help="draw one of the two figures")
    add_trust_argument(parser)
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    check_output_dir(args.out, "--out")  # before the drawing, not after it
    if not args.colm.is_file():
        raise UserInputError(f"SyMPIE checkpoint {args.colm} does not exist; pass the path of a .pth file "
                             f"(e.g. final.pth of a training run).")
    written = []
    if args.only in (None, "before_after"):
        written.append(before_after(args.colm, args.colm_label, args.out / "before_after.png", args.trust_checkpoint))
    if args.only in (None, "compare"):
        written.append(compare_example(args.colm, args.colm_label, args.out / "compare_example.png", args.grids,
                                       args.trust_checkpoint))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return written


if __name__ == "__main__":
    main()
