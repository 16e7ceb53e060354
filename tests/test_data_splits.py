"""data/make_splits.py on synthetic ImageNet-C / C-Bar / Mixed, Cityscapes, ACDC and Dark Zurich trees."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_splits", REPO / "data" / "make_splits.py")
make_splits = importlib.util.module_from_spec(_spec)
sys.modules["make_splits"] = make_splits
_spec.loader.exec_module(make_splits)

# first, second and last of the 1000 sorted ImageNet wnids
IMAGES = {"n01440764": ["ILSVRC2012_val_00000293", "ILSVRC2012_val_00002138"],
          "n01443537": ["ILSVRC2012_val_00000236"],
          "n15075141": ["ILSVRC2012_val_00000194"]}
EXPECTED_LINES = [
    "n01440764/ILSVRC2012_val_00000293.JPEG 0",
    "n01440764/ILSVRC2012_val_00002138.JPEG 0",
    "n01443537/ILSVRC2012_val_00000236.JPEG 1",
    "n15075141/ILSVRC2012_val_00000194.JPEG 999",
]


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def fill_category(folder: Path, ext: str = ".JPEG", images=IMAGES) -> None:
    for wnid, stems in images.items():
        for stem in stems:
            touch(folder / wnid / f"{stem}{ext}")


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_class_index_is_sorted_imagenet_order():
    index = make_splits.imagenet_class_index()
    assert len(index) == 1000 and index["n01440764"] == 0 and index["n15075141"] == 999
    assert list(index) == sorted(index)


def test_imagenetc_tree(tmp_path):
    root = tmp_path / "imagenet-c"
    for group, corruption in (("blur", "defocus_blur"), ("noise", "shot_noise"), ("weather", "fog")):
        for severity in range(1, 6):
            fill_category(root / group / corruption / str(severity))
    for severity in range(1, 6):
        fill_category(root / "color" / str(severity), ext=".jpg")
    fill_category(root / "clean", ext=".jpg")
    out = make_splits.main(["imagenetc", str(root)])
    assert out == root / "images.txt"
    assert read_lines(out) == EXPECTED_LINES


def test_imagenetc_bar_and_mixed_trees(tmp_path):
    bar = tmp_path / "bar"
    for corruption in ("blue_noise_sample", "plasma_noise"):
        for severity in range(1, 6):
            fill_category(bar / corruption / str(severity))
    fill_category(bar / "clean", ext=".jpg")
    assert read_lines(make_splits.main(["imagenetc", str(bar)])) == EXPECTED_LINES

    mixed = tmp_path / "mixed"
    for severity in range(1, 6):
        fill_category(mixed / str(severity), ext=".jpg" if severity % 2 else ".JPEG")
    out = tmp_path / "elsewhere" / "split.txt"
    make_splits.main(["imagenetc", str(mixed), "--out", str(out)])
    assert read_lines(out) == EXPECTED_LINES


def test_imagenetc_keeps_only_images_present_everywhere(tmp_path, caplog):
    root = tmp_path / "c"
    fill_category(root / "blur" / "zoom_blur" / "1")
    partial = {wnid: stems[:1] for wnid, stems in IMAGES.items()}
    fill_category(root / "blur" / "zoom_blur" / "2", images=partial)
    lines = read_lines(make_splits.main(["imagenetc", str(root)]))
    assert lines == [EXPECTED_LINES[0], EXPECTED_LINES[2], EXPECTED_LINES[3]]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings  # once, naming the folder that lacks the image (not every other folder)
    assert "missing from blur/zoom_blur/2 (1)" in warnings[0], warnings[0]
    assert f"blur/zoom_blur/2 lacks {EXPECTED_LINES[1].split()[0]}" in warnings[0], warnings[0]


def test_imagenetc_counts_only_names_the_evaluation_reads(tmp_path, caplog):
    """.JPEG and .jpg (exact case) are what the loader looks for; a .png or .jpeg would be reported missing
    at evaluation time, so it is left out here, with a warning naming the folder."""
    root = tmp_path / "c"
    fill_category(root / "blur" / "zoom_blur" / "1")
    fill_category(root / "blur" / "zoom_blur" / "2", ext=".jpg")
    touch(root / "blur" / "zoom_blur" / "2" / "n01440764" / "ILSVRC2012_val_00000293.JPEG")  # both names: one line
    odd = {"n01440764": IMAGES["n01440764"]}
    fill_category(root / "blur" / "zoom_blur" / "3", images={**IMAGES, **{"n01443537": []}})
    fill_category(root / "blur" / "zoom_blur" / "3", ext=".png", images={"n01443537": IMAGES["n01443537"]})
    fill_category(root / "blur" / "zoom_blur" / "3", ext=".jpeg", images=odd)
    lines = read_lines(make_splits.main(["imagenetc", str(root)]))
    assert lines == [EXPECTED_LINES[0], EXPECTED_LINES[1], EXPECTED_LINES[3]]
    assert "zoom_blur/3: 3 image files are left out" in caplog.text and "<name>.JPEG or <name>.jpg" in caplog.text


def test_imagenetc_from_config_key(tmp_path):
    root = tmp_path / "mixed"
    fill_category(root / "1")
    config = tmp_path / "paths.yaml"
    config.write_text(f"imagenetc-mixed: {root}\n")
    out = make_splits.main(["imagenetc", "--key", "imagenetc-mixed", "--config", str(config)])
    assert read_lines(out) == EXPECTED_LINES


@pytest.mark.parametrize("setup, message", [
    (lambda root: touch(root / "blur" / "readme.txt"), "holds no folders of wnid sub-folders"),
    (lambda root: fill_category(root / "1", images={"n99999999": ["a"]}), "not an ImageNet-1k wnid"),
])
def test_imagenetc_bad_trees(tmp_path, capsys, setup, message):
    root = tmp_path / "c"
    root.mkdir()
    setup(root)
    with pytest.raises(SystemExit):
        make_splits.main(["imagenetc", str(root)])
    assert message in capsys.readouterr().err
    assert not (root / "images.txt").exists()


def test_placeholder_config_key(tmp_path, capsys):
    config = tmp_path / "paths.yaml"
    config.write_text("cityscapes: /path/to/cityscapes\n")
    with pytest.raises(SystemExit):
        make_splits.main(["cityscapes", "--config", str(config)])
    assert "key 'cityscapes'" in capsys.readouterr().err


def make_cityscapes(root: Path) -> list[str]:
    lines = []
    for city, frames in (("frankfurt", ["000000_000294", "000001_007973"]), ("lindau", ["000000_000019"])):
        for frame in frames:
            image = f"leftImg8bit/val/{city}/{city}_{frame}_leftImg8bit.png"
            label = f"gtFine/val/{city}/{city}_{frame}_gtFine_labelIds.png"
            touch(root / image)
            touch(root / label)
            touch(root / label.replace("labelIds", "color"))
            lines.append(f"{image} {label}")
    touch(root / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    return lines


def test_cityscapes(tmp_path):
    expected = make_cityscapes(tmp_path)
    touch(tmp_path / "leftImg8bit/val/lindau/._lindau_000000_000019_leftImg8bit.png")  # macOS AppleDouble file
    assert read_lines(make_splits.main(["cityscapes", str(tmp_path)])) == sorted(expected)


def test_cityscapes_missing_label(tmp_path, capsys):
    make_cityscapes(tmp_path)
    (tmp_path / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(SystemExit):
        make_splits.main(["cityscapes", str(tmp_path)])
    err = capsys.readouterr().err
    assert "lindau_000000_000019_gtFine_labelIds.png" in err and "is missing" in err
    assert not (tmp_path / "val.txt").exists()


def test_cityscapes_missing_split_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_splits.main(["cityscapes", str(tmp_path)])
    assert "leftImg8bit/val" in capsys.readouterr().err


def test_cityscapes_image_with_a_space_is_refused(tmp_path, capsys):
    make_cityscapes(tmp_path)
    image = tmp_path / "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png"
    spaced = image.with_name("lindau 000000_000019_leftImg8bit.png")
    image.rename(spaced)
    touch(tmp_path / "gtFine/val/lindau/lindau 000000_000019_gtFine_labelIds.png")
    with pytest.raises(SystemExit):
        make_splits.main(["cityscapes", str(tmp_path)])
    assert f"image {spaced} has a space in its path" in capsys.readouterr().err
    assert not (tmp_path / "val.txt").exists()


def test_imagenetc_read_only_root_points_at_out_and_split(tmp_path, capsys, monkeypatch):
    root = tmp_path / "imagenet-c"
    fill_category(root / "blur" / "defocus_blur" / "1")
    monkeypatch.setattr(make_splits.os, "access", lambda path, mode: Path(path) != root)  # a read-only mount
    with pytest.raises(SystemExit):
        make_splits.main(["imagenetc", str(root)])
    assert "cannot be written (a shared, read-only copy?); pass --out PATH for the split file and give validate.py " \
           "--split PATH" in capsys.readouterr().err
    out = make_splits.main(["imagenetc", str(root), "--out", str(tmp_path / "images.txt")])
    assert read_lines(out) == EXPECTED_LINES


def test_segmentation_read_only_root_points_at_a_folder_of_links(tmp_path, capsys, monkeypatch):
    expected = make_cityscapes(tmp_path)
    monkeypatch.setattr(make_splits.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(SystemExit):
        make_splits.main(["cityscapes", str(tmp_path)])
    assert "make a folder of your own holding links to its leftImg8bit/ and gtFine/ (ln -s), run this command on " \
           "it and point 'cityscapes' of config_paths.yaml there." in capsys.readouterr().err
    mine = tmp_path / "mine"  # the advice followed
    mine.mkdir()
    for top in ("leftImg8bit", "gtFine"):
        (mine / top).symlink_to(tmp_path / top, target_is_directory=True)
    assert read_lines(make_splits.main(["cityscapes", str(mine)])) == sorted(expected)


def test_imagenetc_split_of_spaced_unicode_names_is_read_back(tmp_path):
    from classification.eval.benchmark_sets import read_split

    root = tmp_path / "imagenet-c"
    fill_category(root / "blur" / "defocus_blur" / "1", images={"n01440764": ["my phötø 1"]})
    out = make_splits.main(["imagenetc", str(root)])
    assert [(line.path, line.label) for line in read_split(out)] == [("n01440764/my phötø 1.JPEG", 0)]


def make_acdc(root: Path) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for condition, sequence in (("fog", "GOPR0475"), ("night", "GOPR0351"), ("rain", "GOPR0400"), ("snow", "GP010122")):
        for frame in ("000041", "000123"):
            image = f"rgb_anon/{condition}/val/{sequence}/{sequence}_frame_{frame}_rgb_anon.png"
            label = f"gt/{condition}/val/{sequence}/{sequence}_frame_{frame}_gt_labelIds.png"
            touch(root / image)
            touch(root / label)
            lines.setdefault(condition, []).append(f"{image} {label}")
        touch(root / f"rgb_anon/{condition}/train/{sequence}/{sequence}_frame_000001_rgb_anon.png")
        touch(root / f"rgb_anon/{condition}/val_ref/{sequence}/{sequence}_frame_000041_rgb_ref_anon.png")
    return lines


def test_acdc_all_conditions_and_subset(tmp_path):
    expected = make_acdc(tmp_path)
    all_lines = read_lines(make_splits.main(["acdc", str(tmp_path)]))
    assert all_lines == [line for condition in ("fog", "night", "rain", "snow") for line in expected[condition]]
    night = read_lines(make_splits.main(["acdc", str(tmp_path), "--conditions", "night",
                                         "--out", str(tmp_path / "night.txt")]))
    assert night == expected["night"]


def test_dark_zurich(tmp_path):
    expected = []
    for frame in ("000321", "000002"):
        image = f"rgb_anon/val/night/GOPR0356/GOPR0356_frame_{frame}_rgb_anon.png"
        label = f"gt/val/night/GOPR0356/GOPR0356_frame_{frame}_gt_labelIds.png"
        touch(tmp_path / image)
        touch(tmp_path / label)
        touch(tmp_path / label.replace("labelIds", "invGray"))
        expected.append(f"{image} {label}")
    assert read_lines(make_splits.main(["darkzurich", str(tmp_path)])) == sorted(expected)


@pytest.mark.slow
def test_runs_as_a_script(tmp_path):
    expected = make_cityscapes(tmp_path)
    result = subprocess.run([sys.executable, "make_splits.py", "cityscapes", str(tmp_path)],
                            cwd=REPO / "data", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert read_lines(tmp_path / "val.txt") == sorted(expected)


CBAR_PARAMETERS = {"caustic_refraction": ("2.35", "3.20", "4.90", "6.60", "9.15"),
                   "inverse_sparkles": ("1.00", "2.00", "4.00", "9.00", "10.00")}


def make_cbar_generator_output(root: Path) -> None:
    for corruption, params in CBAR_PARAMETERS.items():
        for param in params:
            fill_category(root / corruption / param)


def test_cbar_severity_links_then_split(tmp_path):
    root = tmp_path / "ImageNet-C-Bar"
    make_cbar_generator_output(root)
    assert make_splits.main(["cbar-severities", str(root)]) == root
    for corruption, params in CBAR_PARAMETERS.items():
        for severity, param in enumerate(params, start=1):  # numeric order: 10.00 after 9.00
            link = root / corruption / str(severity)
            assert link.is_symlink() and link.resolve() == (root / corruption / param).resolve()
    assert make_splits.link_cbar_severities(root) == 0  # idempotent
    fill_category(root / "clean", ext=".jpg")
    assert read_lines(make_splits.main(["imagenetc", str(root)])) == EXPECTED_LINES


def test_cbar_severity_links_refuse_conflicts(tmp_path, capsys):
    root = tmp_path / "bar"
    make_cbar_generator_output(root)
    (root / "inverse_sparkles" / "3").mkdir()
    with pytest.raises(SystemExit):
        make_splits.main(["cbar-severities", str(root)])
    assert "inverse_sparkles/3 exists and is not a link to 4.00" in capsys.readouterr().err
    assert not any(p.is_symlink() for p in root.rglob("*")), "no link made before the check"


def test_cbar_severity_links_need_five_folders(tmp_path, capsys):
    root = tmp_path / "bar"
    fill_category(root / "sparkles" / "1.00")
    with pytest.raises(SystemExit):
        make_splits.main(["cbar-severities", str(root)])
    assert "expected 5" in capsys.readouterr().err
