"""Sort the flat ImageNet validation folder into one sub-folder per class (wnid).

The class of every image comes from either the ILSVRC bounding-box annotations (a folder of
``ILSVRC2012_val_XXXXXXXX.xml`` files; the ``<name>`` of its objects is the wnid) or Kaggle's
``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token of the prediction string is
the wnid). Files are copied, hard-linked or symlinked into ``<out>/<wnid>/<file>``.

The run is idempotent: a target that already holds the same file is left alone, so a second run does
nothing. A target holding a *different* file stops the run before anything is written.

    python make_clas_val.py --val /data/imagenet/val --annotations /data/LOC_val_solution.csv \
        --out /data/imagenet/val_classes --mode hardlink
"""
from __future__ import annotations

from classification.errors import stop_quietly_on_signals

stop_quietly_on_signals(__name__)  # before the imports below: Ctrl-C or SIGTERM meanwhile is one line

import argparse
import csv
import filecmp
import io
import logging
import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from classification.atomic import atomic_path, check_output_dir
from classification.cli import parse_command_line
from classification.errors import UserInputError, report_user_errors
from classification.imagenet import imagenet_class_index
from classification.textfile import read_text

log = logging.getLogger("make_clas_val")

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
MODES = ("copy", "hardlink", "symlink")
WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class Placement:
    """One validation image and the class folder it belongs in."""

    source: Path
    wnid: str

    def target(self, out: Path) -> Path:
        return out / self.wnid / self.source.name


# --------------------------------------------------------------------------- annotations

def read_annotations(path: Path) -> dict[str, str]:
    """Image id (file name without extension) -> wnid, from an XML folder or a Kaggle CSV."""
    if path.is_dir():
        return check_imagenet_classes(_read_xml_folder(path), path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return check_imagenet_classes(_read_kaggle_csv(path), path)
    raise UserInputError(f"annotations {path} are neither a folder of ILSVRC XML files nor a .csv file; "
                         f"pass the ILSVRC2012 bbox val folder or LOC_val_solution.csv.")


def check_imagenet_classes(labels: dict[str, str], source: Path) -> dict[str, str]:
    """``labels`` if every class is one of the 1000 ImageNet-1k wnids (the classifiers' outputs)."""
    known = imagenet_class_index()
    unknown = sorted({wnid for wnid in labels.values() if wnid not in known})
    if unknown:
        image = min(image for image, wnid in labels.items() if wnid == unknown[0])
        raise UserInputError(f"{source} names {len(unknown)} class(es) outside the 1000 ImageNet-1k wnids, e.g. "
                             f"{unknown[0]} for {image}; pass the ILSVRC2012 validation annotations.")
    return labels


def _read_xml_folder(folder: Path) -> dict[str, str]:
    labels: dict[str, str] = {}
    repeats = 0
    for xml_path in sorted(p for p in folder.rglob("*.xml") if not p.name.startswith(".")):  # no macOS ._ files
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as err:
            raise UserInputError(f"annotation {xml_path} is not valid XML ({err}); re-extract the annotations.") from None
        names = {node.text.strip() for node in root.iter("name") if node.text and node.text.strip()}
        if len(names) != 1:
            found = ", ".join(sorted(names)) or "none"
            raise UserInputError(f"annotation {xml_path} must name exactly one class in its <object><name> "
                                 f"tags, found: {found}.")
        repeats += add_label(labels, xml_path.stem, check_wnid(names.pop(), f"annotation {xml_path}"),
                             f"annotation {xml_path}")
    if not labels:
        raise UserInputError(f"annotation folder {folder} holds no .xml files; pass the ILSVRC2012 bbox val folder.")
    warn_repeats(repeats, folder)
    return labels


def add_label(labels: dict[str, str], image: str, wnid: str, where: str) -> bool:
    """``labels[image] = wnid``, refusing a second, different class for an image (which one would be right?);
    the same class named again changes nothing and is accepted (an annotation file merged with itself).
    Returns whether ``image`` was there already."""
    earlier = labels.get(image)
    if earlier is not None and earlier != wnid:
        raise UserInputError(f"{where} gives {image} the class {wnid}, but an earlier entry gave it {earlier}; "
                             f"keep one annotation per image (re-download the annotations).")
    labels[image] = wnid
    return earlier is not None


def warn_repeats(repeats: int, source: Path) -> None:
    if repeats:
        log.warning("%s names %d image(s) more than once, always with the same class; each is placed once.",
                    source, repeats)


def check_wnid(wnid: str, where: str) -> str:
    """An ImageNet wnid ('n' and 8 digits) or a sentence naming ``where`` it was read: it becomes a folder
    name under --out, so nothing else (e.g. '../x') may pass."""
    if not WNID.fullmatch(wnid):
        raise UserInputError(f"{where} names the class {wnid!r}, which is not an ImageNet wnid ('n' followed by 8 "
                             f"digits, e.g. n01440764); fix or re-download the annotations.")
    return wnid


def _read_kaggle_csv(path: Path) -> dict[str, str]:
    labels: dict[str, str] = {}
    repeats = 0
    reader = csv.DictReader(io.StringIO(read_text(path, "annotation file"), newline=""))
    if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
        raise UserInputError(f"{path} must have the header 'ImageId,PredictionString' "
                             f"(Kaggle's LOC_val_solution.csv).")
    for line, row in enumerate(reader, start=2):
        tokens = (row["PredictionString"] or "").split()
        if not row["ImageId"] or not tokens:
            raise UserInputError(f"{path} line {line} has no image id or no class; fix or re-download the file.")
        repeats += add_label(labels, row["ImageId"].strip(), check_wnid(tokens[0], f"{path} line {line}"),
                             f"{path} line {line}")
    if not labels:
        raise UserInputError(f"{path} lists no images; re-download LOC_val_solution.csv.")
    warn_repeats(repeats, path)
    return labels


# --------------------------------------------------------------------------- planning

def plan(val: Path, labels: dict[str, str]) -> list[Placement]:
    """Match every annotated id to its image in ``val``; both sides must be complete."""
    if not val.is_dir():
        raise UserInputError(f"validation folder {val} does not exist; pass the folder holding ILSVRC2012_val_*.JPEG.")
    images = {p.stem: p for p in sorted(val.iterdir())
              if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")}
    if not images:
        raise UserInputError(f"validation folder {val} holds no images (.JPEG/.jpg/.png); "
                             f"pass the folder the ILSVRC2012 val archive was extracted to.")
    missing = sorted(set(labels) - set(images))
    if missing:
        raise UserInputError(f"the annotations name {len(missing)} image(s) that are not in {val}, e.g. "
                             f"{missing[0]}; extract the complete val archive or pass matching annotations.")
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise UserInputError(f"{len(unlabelled)} image(s) in {val} have no annotation, e.g. {images[unlabelled[0]].name}; "
                             f"pass the annotations of the whole validation set.")
    return [Placement(images[key], labels[key]) for key in sorted(images)]


def holds_same_file(target: Path, source: Path) -> bool:
    """True when ``target`` is ``source`` (same inode, or a symlink to it) or has identical bytes."""
    if not target.exists():
        return False
    if os.path.samefile(target, source):
        return True
    return filecmp.cmp(target, source, shallow=False)


def check_conflicts(placements: list[Placement], out: Path) -> list[Placement]:
    """The placements still to do; refuses (before writing anything) if a target holds another file."""
    todo = []
    for placement in placements:
        target = placement.target(out)
        if target.is_symlink() and not target.exists():
            raise UserInputError(f"{target} is a broken symlink; delete it and run again.")
        if not target.exists():
            todo.append(placement)
        elif not holds_same_file(target, placement.source):
            raise UserInputError(f"{target} already exists and differs from {placement.source}; "
                                 f"refusing to overwrite it (choose another --out or remove the file).")
    return todo


# --------------------------------------------------------------------------- writing

def place(source: Path, target: Path, mode: str) -> None:
    """Copy, hard-link or symlink ``source`` to ``target`` through a temporary name (atomic)."""
    with atomic_path(target) as tmp:
        if mode == "copy":
            shutil.copyfile(source, tmp)
            return
        tmp.unlink()
        if mode == "hardlink":
            try:
                os.link(source, tmp)
            except OSError as err:
                raise UserInputError(f"cannot hard-link {source} into {target.parent} ({err.strerror}); "
                                     f"use --mode copy or symlink (hard links need one file system).") from None
        else:
            os.symlink(source.resolve(), tmp)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", required=True, type=Path, help="flat folder with ILSVRC2012_val_*.JPEG")
    parser.add_argument("--annotations", required=True, type=Path,
                        help="ILSVRC2012 bbox val folder (*.xml) or Kaggle LOC_val_solution.csv")
    parser.add_argument("--out", required=True, help="output folder, one sub-folder per wnid")
    parser.add_argument("--mode", choices=MODES, default="copy", help="how files get there (default: copy)")
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> dict[str, int]:
    """Run the tool; returns counts ``{'images', 'classes', 'placed', 'present'}``."""
    args = parse_command_line(build_parser(), argv)
    args.out = check_output_dir(args.out, "--out")
    labels = read_annotations(args.annotations)
    placements = plan(args.val, labels)
    if args.out.resolve() == args.val.resolve():
        raise UserInputError(f"--out {args.out} must differ from --val; pick a new folder for the class folders.")
    todo = check_conflicts(placements, args.out)
    for placement in tqdm(todo, desc=f"{args.mode} into class folders", unit="img", disable=not todo):
        place(placement.source, placement.target(args.out), args.mode)
    classes = Counter(p.wnid for p in placements)
    summary = {"images": len(placements), "classes": len(classes), "placed": len(todo),
               "present": len(placements) - len(todo)}
    log.info("%d images in %d class folders under %s: %d %s, %d already in place.",
             summary["images"], summary["classes"], args.out, summary["placed"],
             {"copy": "copied", "hardlink": "hard-linked", "symlink": "symlinked"}[args.mode], summary["present"])
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
