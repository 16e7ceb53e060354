"""Write the split files the evaluation loaders read, from a dataset's folder tree.

Subcommands (the folder defaults to the ``config_paths.yaml`` key of the same name; layouts in
``data/README.md``):

* ``imagenetc [ROOT]`` -> ``ROOT/images.txt`` for ImageNet-C, -C-Bar or -C-Mixed (``--key`` picks
  the config key). Every folder whose sub-folders are wnids counts as one category; the split lists
  the images present in all of them, one ``<wnid>/<file>.JPEG <class_index>`` line each, the class
  index being the wnid's position among the 1000 sorted ImageNet wnids.
* ``cbar-severities [ROOT]``: ImageNet-C-Bar's generator names its severity folders after the
  corruption parameter (``caustic_refraction/2.35/``); this links ``1``..``5`` to them, in order.
* ``cityscapes [ROOT]``, ``acdc [ROOT]``, ``darkzurich [ROOT]`` -> ``ROOT/val.txt``: one
  ``<image> <labelIds>`` line per validation image, both relative to ``ROOT``.

    python data/make_splits.py imagenetc /data/imagenet-c
    python data/make_splits.py cityscapes            # uses the 'cityscapes' key of config_paths.yaml
"""
from __future__ import annotations

from classification.errors import stop_quietly_on_signals

stop_quietly_on_signals(__name__)  # before the imports below: Ctrl-C or SIGTERM meanwhile is one line

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from classification.atomic import atomic_path, check_output_file
from classification.cli import parse_command_line
from classification.errors import UserInputError, report_user_errors
from classification.imagenet import SPLIT_FILE, STORED_SUFFIXES, imagenet_class_index
from classification.paths import add_config_argument, dataset_path

log = logging.getLogger("make_splits")

WNID = re.compile(r"^n\d{8}$")
OTHER_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")  # lower-cased; warned about when not a name the evaluation reads


# --------------------------------------------------------------------------- ImageNet-C / C-Bar / C-Mixed

def _subdirs(folder: Path) -> list[os.DirEntry]:
    return sorted((e for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name)


def find_category_folders(root: Path) -> list[Path]:
    """Folders whose sub-folders are wnids (``root`` itself included), searched depth-first."""
    found: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        children = _subdirs(folder)
        if any(WNID.match(entry.name) for entry in children):
            found.append(folder)
        else:
            pending.extend(Path(entry.path) for entry in reversed(children))
    return sorted(found)


def line_paths_in(category: Path) -> set[str]:
    """``<wnid>/<stem>.JPEG`` of every image below ``category`` stored under a name the evaluation reads
    (``<stem>.JPEG`` or ``<stem>.jpg``); other image files are counted in a warning and left out."""
    lines: set[str] = set()
    unread: list[str] = []
    for wnid_dir in _subdirs(category):
        if not WNID.match(wnid_dir.name):
            continue
        for entry in os.scandir(wnid_dir.path):
            stem, ext = os.path.splitext(entry.name)
            if entry.name.startswith(".") or not entry.is_file():
                continue
            if ext in STORED_SUFFIXES:
                lines.add(f"{wnid_dir.name}/{stem}.JPEG")
            elif ext.lower() in OTHER_IMAGE_SUFFIXES:
                unread.append(entry.name)
    if unread:
        log.warning("%s: %d image files are left out (e.g. %s): the evaluation reads <name>.JPEG or <name>.jpg "
                    "only; convert or rename them.", category, len(unread), unread[0])
    return lines


def imagenetc_lines(root: Path) -> list[str]:
    """The ``images.txt`` lines for the images present in every category folder below ``root``."""
    categories = find_category_folders(root)
    if not categories:
        raise UserInputError(f"{root} holds no folders of wnid sub-folders (e.g. blur/defocus_blur/1/n01440764/); "
                             f"check the layout in data/README.md.")
    common: set[str] | None = None
    union: set[str] = set()
    sizes: dict[Path, int] = {}
    for category in tqdm(categories, desc="listing category folders", unit="folder"):
        lines = line_paths_in(category)
        sizes[category] = len(lines)
        common = lines if common is None else common & lines
        union |= lines
    if not common:
        raise UserInputError(f"no image of {root} is present in every one of its {len(categories)} category "
                             f"folders; complete the dataset or point at one of its parts.")
    if len(union) > len(common):
        warn_incomplete(root, {c: len(union) - n for c, n in sizes.items() if n < len(union)}, union, len(common))
    index = imagenet_class_index()
    unknown = sorted({line.split("/")[0] for line in common} - set(index))
    if unknown:
        raise UserInputError(f"folder name {unknown[0]} under {root} is not an ImageNet-1k wnid; "
                             f"only the 1000 ILSVRC2012 classes can be evaluated.")
    log.info("%d images common to %d category folders of %s", len(common), len(categories), root)
    return [f"{line} {index[line.split('/')[0]]}" for line in sorted(common)]


MAX_NAMED_FOLDERS = 5


def warn_incomplete(root: Path, lacking: dict[Path, int], union: set[str], kept: int) -> None:
    """One warning for the images that some category folders lack (left out of the split): the folders that lack
    them (with how many each) and the first such image of the first folder (listed again to find it)."""
    first = next(iter(lacking))
    example = min(union - line_paths_in(first))
    named = ", ".join(f"{c.relative_to(root)} ({n})" for c, n in list(lacking.items())[:MAX_NAMED_FOLDERS])
    more = f" and {len(lacking) - MAX_NAMED_FOLDERS} more" if len(lacking) > MAX_NAMED_FOLDERS else ""
    log.warning("%d images are missing from some category folders and are left out of the split (%d kept): "
                "missing from %s%s; e.g. %s lacks %s.", len(union) - kept, kept, named, more,
                first.relative_to(root), example)


PARAMETER_FOLDER = re.compile(r"^\d+\.\d+$")


def link_cbar_severities(root: Path) -> int:
    """Symlink ``1``..``5`` to the parameter-named severity folders of ImageNet-C-Bar's generator.

    The generator writes ``<corruption>/<parameter, e.g. 2.35>/<wnid>/...``; the five parameters of a
    corruption increase with the severity, so their numeric order gives severities 1..5. Returns the
    number of links made (0 on a second run); refuses, before making any link, if a ``1``..``5`` entry
    exists and is not the expected link.
    """
    if not root.is_dir():
        raise UserInputError(f"ImageNet-C-Bar folder {root} does not exist; pass the generator's output folder.")
    links: list[tuple[Path, str]] = []
    for corruption in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        params = sorted((p.name for p in corruption.iterdir() if p.is_dir() and PARAMETER_FOLDER.match(p.name)),
                        key=float)
        if not params:
            continue
        if len(params) != 5:
            raise UserInputError(f"{corruption} has {len(params)} severity folders ({', '.join(params)}), "
                                 f"expected 5; finish or redo that corruption with the generator.")
        for severity, param in enumerate(params, start=1):
            link = corruption / str(severity)
            if link.is_symlink() and os.readlink(link) == param:
                continue
            if link.exists() or link.is_symlink():
                raise UserInputError(f"{link} exists and is not a link to {param}; remove it and run again.")
            links.append((link, param))
    if not links and not any(root.glob("*/1")):
        raise UserInputError(f"{root} has no parameter-named severity folders (e.g. caustic_refraction/2.35/); "
                             f"pass the folder ImageNet-C-Bar's generator wrote.")
    for link, param in links:
        link.symlink_to(param, target_is_directory=True)
    log.info("%d severity links made under %s", len(links), root)
    return len(links)


# --------------------------------------------------------------------------- segmentation sets

@dataclass(frozen=True)
class PairLayout:
    """Where a segmentation dataset keeps its images and labelId maps.

    ``image_dirs`` (relative to the root) are searched recursively for files ending in ``image_suffix``;
    an image's label is found by swapping the first path component ``image_top`` for ``label_top`` and
    the suffix ``image_suffix`` for ``label_suffix``.
    """

    image_top: str
    label_top: str
    image_suffix: str
    label_suffix: str

    def label_of(self, image: str) -> str:
        top, rest = image.split("/", 1)
        assert top == self.image_top and rest.endswith(self.image_suffix)
        return f"{self.label_top}/{rest[:-len(self.image_suffix)]}{self.label_suffix}"


CITYSCAPES = PairLayout("leftImg8bit", "gtFine", "_leftImg8bit.png", "_gtFine_labelIds.png")
ACDC = PairLayout("rgb_anon", "gt", "_rgb_anon.png", "_gt_labelIds.png")
DARK_ZURICH = ACDC
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


def pair_lines(root: Path, layout: PairLayout, image_dirs: list[str]) -> list[str]:
    """``<image> <label>`` lines (relative to ``root``) for every image below ``image_dirs``."""
    lines = []
    for image_dir in image_dirs:
        folder = root / image_dir
        if not folder.is_dir():
            raise UserInputError(f"{folder} does not exist; extract the dataset so that {root} holds "
                                 f"{image_dir}/ (layouts: data/README.md).")
        images = sorted(p.relative_to(root).as_posix() for p in folder.rglob(f"*{layout.image_suffix}")
                        if not p.name.startswith("."))  # macOS ._ files are not images
        if not images:
            raise UserInputError(f"{folder} holds no *{layout.image_suffix} images; check the layout in data/README.md.")
        for image in images:
            if any(c.isspace() for c in image):
                raise UserInputError(f"image {root / image} has a space in its path, and split lines are "
                                     f"'<image> <label>' separated by a space; rename it.")
            label = layout.label_of(image)
            if not (root / label).is_file():
                raise UserInputError(f"label {root / label} of image {image} is missing; extract the ground-truth "
                                     f"archive into {root}.")
            lines.append(f"{image} {label}")
    return lines


def cityscapes_lines(root: Path, split: str) -> list[str]:
    return pair_lines(root, CITYSCAPES, [f"leftImg8bit/{split}"])


def acdc_lines(root: Path, split: str, conditions: list[str]) -> list[str]:
    return pair_lines(root, ACDC, [f"rgb_anon/{condition}/{split}" for condition in conditions])


def darkzurich_lines(root: Path, split: str) -> list[str]:
    return pair_lines(root, DARK_ZURICH, [f"rgb_anon/{split}/night"])


# --------------------------------------------------------------------------- CLI

def write_lines(path: Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    log.info("wrote %s (%d lines)", path, len(lines))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="dataset", required=True)

    def command(name: str, help_text: str, default_key: str, writes_split: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("root", nargs="?", type=Path, default=None,
                         help=f"dataset folder (default: the config key, '{default_key}' unless --key)")
        if writes_split:
            sub.add_argument("--out", default=None, help="split file to write (default: inside the root)")
        add_config_argument(sub)
        sub.set_defaults(key=default_key)
        return sub

    imagenetc = command("imagenetc", f"{SPLIT_FILE} for ImageNet-C, -C-Bar or -C-Mixed", "imagenetc")
    imagenetc.add_argument("--key", choices=("imagenetc", "imagenetc-bar", "imagenetc-mixed"), default="imagenetc",
                           help="config key used when ROOT is not given (default: imagenetc)")
    command("cbar-severities", "link 1..5 to ImageNet-C-Bar's parameter-named severity folders", "imagenetc-bar",
            writes_split=False)
    for name, key in (("cityscapes", "cityscapes"), ("acdc", "acdc"), ("darkzurich", "darkzurich")):
        sub = command(name, f"val.txt for {name}", key)
        sub.add_argument("--split", default="val", help="official split folder name (default: val)")
    acdc = commands.choices["acdc"]
    acdc.add_argument("--conditions", nargs="+", choices=ACDC_CONDITIONS, default=list(ACDC_CONDITIONS),
                      help="ACDC conditions to include (default: all four)")
    return parser


def read_only_advice(root: Path, dataset: str) -> str:
    """What to do when the split file cannot be written into ``root`` (a shared, read-only dataset)."""
    problem = f"{root} cannot be written (a shared, read-only copy?)"
    if dataset == "imagenetc":
        return f"{problem}; pass --out PATH for the split file and give validate.py --split PATH."
    layout = {"cityscapes": CITYSCAPES, "acdc": ACDC, "darkzurich": DARK_ZURICH}[dataset]
    return (f"{problem}; make a folder of your own holding links to its {layout.image_top}/ and {layout.label_top}/ "
            f"(ln -s), run this command on it and point '{dataset}' of config_paths.yaml there.")


@report_user_errors
def main(argv: list[str] | None = None) -> Path:
    """Run one subcommand; returns the split file written (the root for ``cbar-severities``)."""
    args = parse_command_line(build_parser(), argv)
    root = dataset_path(args.key, args.config, args.root)
    if args.dataset == "cbar-severities":
        link_cbar_severities(root)
        return root
    default_name = SPLIT_FILE if args.dataset == "imagenetc" else f"{args.split}.txt"
    if args.out is None and not os.access(root, os.W_OK):
        raise UserInputError(read_only_advice(root, args.dataset))
    out = check_output_file(root / default_name if args.out is None else args.out, "--out")  # before the listing
    if args.dataset == "imagenetc":
        lines = imagenetc_lines(root)
    elif args.dataset == "cityscapes":
        lines = cityscapes_lines(root, args.split)
    elif args.dataset == "acdc":
        lines = acdc_lines(root, args.split, args.conditions)
    else:
        lines = darkzurich_lines(root, args.split)
    write_lines(out, lines)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
