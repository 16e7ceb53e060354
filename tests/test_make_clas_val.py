"""make_clas_val.py on a synthetic ImageNet val folder with XML and Kaggle CSV annotations."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_clas_val", REPO / "make_clas_val.py")
make_clas_val = importlib.util.module_from_spec(_spec)
sys.modules["make_clas_val"] = make_clas_val
_spec.loader.exec_module(make_clas_val)

LABELS = {
    "ILSVRC2012_val_00000001": "n01751748",
    "ILSVRC2012_val_00000002": "n09193705",
    "ILSVRC2012_val_00000003": "n01751748",
    "ILSVRC2012_val_00000004": "n02105855",
}

XML_TEMPLATE = """<annotation>
  <folder>val</folder>
  <filename>{image_id}</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  {objects}
</annotation>
"""
OBJECT_TEMPLATE = "<object><name>{wnid}</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>"


def make_val(root: Path) -> Path:
    val = root / "val"
    val.mkdir()
    for i, image_id in enumerate(LABELS):
        (val / f"{image_id}.JPEG").write_bytes(b"fake jpeg " + bytes([i]) * 50)
    return val


def make_xml(root: Path, labels=LABELS) -> Path:
    folder = root / "bbox_val" / "val"
    folder.mkdir(parents=True)
    for image_id, wnid in labels.items():
        objects = "\n".join(OBJECT_TEMPLATE.format(wnid=wnid) for _ in range(2))
        (folder / f"{image_id}.xml").write_text(XML_TEMPLATE.format(image_id=image_id, objects=objects))
    return folder.parent


def make_csv(root: Path, labels=LABELS) -> Path:
    path = root / "LOC_val_solution.csv"
    rows = [f"{image_id},{wnid} 10 20 100 200 {wnid} 5 5 50 50" for image_id, wnid in labels.items()]
    path.write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    return path


def tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def expected_tree(val: Path) -> dict[str, bytes]:
    return {f"{wnid}/{image_id}.JPEG": (val / f"{image_id}.JPEG").read_bytes() for image_id, wnid in LABELS.items()}


@pytest.mark.parametrize("annotations", ["xml", "csv"])
@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_sorts_into_class_folders_and_is_idempotent(tmp_path, annotations, mode):
    val = make_val(tmp_path)
    ann = make_xml(tmp_path) if annotations == "xml" else make_csv(tmp_path)
    out = tmp_path / "out"
    argv = ["--val", str(val), "--annotations", str(ann), "--out", str(out), "--mode", mode]

    first = make_clas_val.main(argv)
    assert first == {"images": 4, "classes": 3, "placed": 4, "present": 0}
    assert tree(out) == expected_tree(val)
    target = out / "n01751748" / "ILSVRC2012_val_00000001.JPEG"
    if mode == "symlink":
        assert target.is_symlink()
    elif mode == "hardlink":
        assert os.path.samefile(target, val / "ILSVRC2012_val_00000001.JPEG")
    else:
        assert not target.is_symlink() and not os.path.samefile(target, val / "ILSVRC2012_val_00000001.JPEG")

    mtimes = {p: p.lstat().st_mtime_ns for p in out.rglob("*")}
    second = make_clas_val.main(argv)
    assert second == {"images": 4, "classes": 3, "placed": 0, "present": 4}
    assert {p: p.lstat().st_mtime_ns for p in out.rglob("*")} == mtimes
    assert not [p for p in out.rglob(".*")], "no temporary files left behind"


def test_copy_then_other_mode_counts_identical_files_as_done(tmp_path):
    val = make_val(tmp_path)
    csv_path = make_csv(tmp_path)
    out = tmp_path / "out"
    make_clas_val.main(["--val", str(val), "--annotations", str(csv_path), "--out", str(out), "--mode", "copy"])
    again = make_clas_val.main(["--val", str(val), "--annotations", str(csv_path), "--out", str(out), "--mode", "symlink"])
    assert again["placed"] == 0


def test_refuses_to_overwrite_a_different_file_and_writes_nothing(tmp_path, capsys):
    val = make_val(tmp_path)
    csv_path = make_csv(tmp_path)
    out = tmp_path / "out"
    clash = out / "n09193705" / "ILSVRC2012_val_00000002.JPEG"
    clash.parent.mkdir(parents=True)
    clash.write_bytes(b"something else")
    with pytest.raises(SystemExit) as exit_info:
        make_clas_val.main(["--val", str(val), "--annotations", str(csv_path), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and str(clash) in err
    assert tree(out) == {"n09193705/ILSVRC2012_val_00000002.JPEG": b"something else"}


@pytest.mark.parametrize("annotations", ["xml", "csv"])
def test_annotation_naming_a_missing_file(tmp_path, capsys, annotations):
    val = make_val(tmp_path)
    labels = dict(LABELS, ILSVRC2012_val_00000099="n01751748")
    ann = make_xml(tmp_path, labels) if annotations == "xml" else make_csv(tmp_path, labels)
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        make_clas_val.main(["--val", str(val), "--annotations", str(ann), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert "ILSVRC2012_val_00000099" in err and "not in" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_val_folder_without_images(tmp_path, capsys):
    val = tmp_path / "val"
    val.mkdir()
    (val / "readme.txt").write_text("nothing here")
    with pytest.raises(SystemExit):
        make_clas_val.main(["--val", str(val), "--annotations", str(make_csv(tmp_path)), "--out", str(tmp_path / "o")])
    assert "holds no images" in capsys.readouterr().err


def test_image_without_annotation(tmp_path, capsys):
    val = make_val(tmp_path)
    labels = dict(list(LABELS.items())[:3])
    with pytest.raises(SystemExit):
        make_clas_val.main(["--val", str(val), "--annotations", str(make_csv(tmp_path, labels)),
                            "--out", str(tmp_path / "o")])
    assert "ILSVRC2012_val_00000004.JPEG" in capsys.readouterr().err


def test_xml_with_conflicting_classes(tmp_path, capsys):
    val = make_val(tmp_path)
    ann = make_xml(tmp_path)
    bad = ann / "val" / "ILSVRC2012_val_00000001.xml"
    bad.write_text(XML_TEMPLATE.format(image_id="x", objects=OBJECT_TEMPLATE.format(wnid="n01751748")
                                       + OBJECT_TEMPLATE.format(wnid="n02105855")))
    with pytest.raises(SystemExit):
        make_clas_val.main(["--val", str(val), "--annotations", str(ann), "--out", str(tmp_path / "o")])
    assert "exactly one class" in capsys.readouterr().err


def test_bad_csv_header(tmp_path, capsys):
    val = make_val(tmp_path)
    bad = tmp_path / "labels.csv"
    bad.write_text("file,label\nILSVRC2012_val_00000001,n01751748\n")
    with pytest.raises(SystemExit):
        make_clas_val.main(["--val", str(val), "--annotations", str(bad), "--out", str(tmp_path / "o")])
    assert "ImageId,PredictionString" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_as_a_script(tmp_path):
    val = make_val(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO / "make_clas_val.py"), "--val", str(val),
                             "--annotations", str(make_csv(tmp_path)), "--out", str(out), "--mode", "hardlink"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "4 images in 3 class folders" in result.stderr + result.stdout
    assert tree(out) == expected_tree(val)


def test_csv_with_byte_order_mark_and_crlf_and_xml_with_byte_order_mark(tmp_path):
    val = make_val(tmp_path)
    csv = make_csv(tmp_path)
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_text().replace("\n", "\r\n").encode())
    assert make_clas_val.read_annotations(csv) == LABELS
    xml = make_xml(tmp_path)
    for path in xml.rglob("*.xml"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert make_clas_val.read_annotations(xml) == LABELS
    make_clas_val.main(["--val", str(val), "--annotations", str(csv), "--out", str(tmp_path / "o")])
    assert tree(tmp_path / "o") == expected_tree(val)


def test_a_class_outside_imagenet_1k_is_refused_before_anything_is_written(tmp_path, capsys):
    val = make_val(tmp_path)
    csv = make_csv(tmp_path, {**LABELS, "ILSVRC2012_val_00000004": "n99999999"})
    with pytest.raises(SystemExit):
        make_clas_val.main(["--val", str(val), "--annotations", str(csv), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "names 1 class(es) outside the 1000 ImageNet-1k wnids, e.g. n99999999 for ILSVRC2012_val_00000004" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("annotations", ["xml", "csv"])
def test_hidden_files_of_macos_archives_are_skipped(tmp_path, annotations):
    val = make_val(tmp_path)
    (val / "._ILSVRC2012_val_00000001.JPEG").write_bytes(b"\0\5\26\7AppleDouble")
    (val / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    ann = make_xml(tmp_path) if annotations == "xml" else make_csv(tmp_path)
    if annotations == "xml":
        (ann / "val" / "._ILSVRC2012_val_00000001.xml").write_bytes(b"\0\5\26\7AppleDouble")
    make_clas_val.main(["--val", str(val), "--annotations", str(ann), "--out", str(tmp_path / "o")])
    assert tree(tmp_path / "o") == expected_tree(val)
