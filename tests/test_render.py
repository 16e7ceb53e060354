"""The benchmark builder (classification/eval/render.py) on a tiny synthetic ImageNet val folder."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from classification.errors import UserInputError
from classification.eval import render as R
from classification.training.corruptions import IMAGENET_C

WNIDS = ("n01440764", "n01443537", "n15075141")  # class indices 0, 1, 999
FAST = ["contrast", "gaussian_noise"]  # two quick corruptions for the tests that are not about the set


def make_val(root: Path, per_class: int = 2) -> Path:
    """Small random-texture photos in class folders; sizes vary so the resize/crop path is exercised."""
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(WNIDS):
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            h, w = 60 + 10 * i, 80 - 10 * c
            base = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
            image = Image.fromarray(base).resize((w, h), Image.BILINEAR)
            image.save(root / wnid / f"ILSVRC2012_val_{c * per_class + i:08d}.JPEG", quality=95)
    return root


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> Path:
    return make_val(tmp_path_factory.mktemp("val"))


@pytest.fixture(scope="module")
def rendered(val, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench") / "out"
    summary = R.render(val, out, seed=7, corruptions=FAST, workers=0)
    return out, summary


def test_resize_and_crop_matches_torchvision():
    reference = T.Compose([T.Resize(256), T.CenterCrop(224)])
    rng = np.random.default_rng(1)
    for w, h in ((500, 375), (375, 500), (256, 256), (90, 61), (1000, 333)):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert np.array_equal(np.asarray(R.resize_and_crop(image)), np.asarray(reference(image)))


def test_layout_split_files_and_manifest(rendered):
    out, summary = rendered
    stems = [f"{wnid}/ILSVRC2012_val_{c * 2 + i:08d}" for c, wnid in enumerate(WNIDS) for i in range(2)]
    expected = {f"clean/{s}.jpg" for s in stems}
    for sev in R.SEVERITIES:
        expected |= {f"digital/contrast/{sev}/{s}.JPEG" for s in stems}
        expected |= {f"noise/gaussian_noise/{sev}/{s}.JPEG" for s in stems}
        expected |= {f"color/{sev}/{s}.jpg" for s in stems}
        expected |= {f"mixed/{sev}/{s}.JPEG" for s in stems}
    images = {k for k in files(out) if k.endswith((".JPEG", ".jpg"))}
    assert images == expected
    assert summary == {"images": 6, "written": len(expected), "present": 0, "seconds": summary["seconds"]}
    lines = [f"{s}.JPEG {label}" for s, label in zip(stems, (0, 0, 1, 1, 999, 999))]
    assert (out / "images.txt").read_text().splitlines() == lines
    assert (out / "mixed" / "images.txt").read_text().splitlines() == lines
    assert '"seed": 7' in (out / R.MANIFEST).read_text()
    for name in sorted(images)[::7]:
        with Image.open(out / name) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (224, 224)
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


def test_clean_is_the_crop_saved_at_quality_85(rendered, val):
    out, _ = rendered
    source = val / WNIDS[0] / "ILSVRC2012_val_00000000.JPEG"
    with Image.open(source) as image:
        crop = T.CenterCrop(224)(T.Resize(256)(image.convert("RGB")))
    with Image.open(out / "clean" / WNIDS[0] / "ILSVRC2012_val_00000000.jpg") as saved:
        decoded = np.asarray(saved, dtype=np.int16)
    assert np.abs(decoded - np.asarray(crop, dtype=np.int16)).mean() < 3


def test_same_seed_same_bytes_whatever_the_limit(rendered, val, tmp_path):
    out, _ = rendered
    again = tmp_path / "again"
    summary = R.render(val, again, seed=7, corruptions=FAST, limit=2, workers=0)
    assert summary["images"] == 2
    assert (again / "images.txt").read_text().splitlines() == [
        "n01440764/ILSVRC2012_val_00000000.JPEG 0", "n01443537/ILSVRC2012_val_00000003.JPEG 1"]
    full = files(out)
    subset = {k: v for k, v in files(again).items() if k.endswith((".JPEG", ".jpg"))}
    assert len(subset) == 2 * 21
    assert all(full[k] == v for k, v in subset.items())


def test_other_seed_other_random_draws(val, rendered, tmp_path):
    out, _ = rendered
    other = tmp_path / "other"
    R.render(val, other, seed=8, corruptions=["gaussian_noise"], parts=["imagenet-c", "clean"], limit=1, workers=0)
    name = "noise/gaussian_noise/3/n01440764/ILSVRC2012_val_00000000.JPEG"
    assert (other / name).read_bytes() != (out / name).read_bytes()
    clean = "clean/n01440764/ILSVRC2012_val_00000000.jpg"
    assert (other / clean).read_bytes() == (out / clean).read_bytes()


def test_resume_writes_only_missing_files(val, tmp_path):
    out = tmp_path / "out"
    R.render(val, out, seed=3, corruptions=["contrast"], parts=["imagenet-c", "clean"], workers=0)
    removed = out / "digital" / "contrast" / "4" / WNIDS[1] / "ILSVRC2012_val_00000002.JPEG"
    original = removed.read_bytes()
    removed.unlink()
    before = mtimes(out)
    summary = R.render(val, out, seed=3, corruptions=["contrast"], parts=["imagenet-c", "clean"], workers=0)
    assert (summary["written"], summary["present"]) == (1, 6 * 6 - 1)
    assert removed.read_bytes() == original
    after = mtimes(out)
    assert {p: t for p, t in after.items() if p.suffix in (".JPEG", ".jpg") and p != removed} == \
        {p: t for p, t in before.items() if p.suffix in (".JPEG", ".jpg")}


def test_refuses_an_output_folder_of_another_seed(rendered, val, capsys):
    out, _ = rendered
    before = files(out)
    with pytest.raises(SystemExit) as exit_info:
        R.main(["--val", str(val), "--out", str(out), "--seed", "8", "--corruptions", *FAST, "--workers", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "seed 7, not 8" in err and "--seed 7" in err and len(err.splitlines()) == 1
    assert files(out) == before


def test_refuses_a_foreign_non_empty_folder(val, tmp_path):
    out = tmp_path / "imagenet-c"
    (out / "blur").mkdir(parents=True)
    with pytest.raises(UserInputError, match="not empty and has no render_manifest.json"):
        R.render(val, out, seed=0, corruptions=FAST, workers=0)
    assert sorted(p.name for p in out.iterdir()) == ["blur"]


def test_resume_with_a_smaller_limit_keeps_the_split_whole(val, tmp_path):
    out = tmp_path / "out"
    R.render(val, out, seed=7, corruptions=["contrast"], parts=["clean"], limit=4, workers=0)
    four = (out / "images.txt").read_text().splitlines()
    R.render(val, out, seed=7, corruptions=["contrast"], parts=["clean"], limit=2, workers=0)
    assert (out / "images.txt").read_text().splitlines() == four and len(four) == 4


def test_temporaries_of_a_killed_run_are_removed_at_the_next_start(val, tmp_path):
    out = tmp_path / "out"
    R.render(val, out, seed=7, corruptions=["contrast"], parts=["clean"], limit=1, workers=0)
    leftover = out / R.STAGING / ".ILSVRC2012_val_00000000.jpg.abc.tmp.jpg"  # what a SIGKILL leaves
    leftover.parent.mkdir()
    leftover.write_bytes(b"half")
    R.render(val, out, seed=7, corruptions=["contrast"], parts=["clean"], limit=1, workers=0)
    assert not (out / R.STAGING).exists()
    assert not [p for p in out.rglob(".*") if p.name != R.STAGING]


@pytest.mark.parametrize("setup, message", [
    (lambda root: (root / "n01440764").mkdir(), "holds no images in class folders"),
    (lambda root: (root / "cats").mkdir(), "not named after an ImageNet-1k wnid"),
])
def test_bad_val_folders(tmp_path, setup, message):
    val = tmp_path / "val"
    val.mkdir()
    setup(val)
    with pytest.raises(UserInputError, match=message):
        R.render(val, tmp_path / "out", corruptions=FAST, workers=0)
    assert not (tmp_path / "out").exists()


def test_undecodable_source_image(tmp_path):
    val = make_val(tmp_path / "val", per_class=1)
    broken = val / WNIDS[2] / "ILSVRC2012_val_00000002.JPEG"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(UserInputError, match="cannot decode image .*ILSVRC2012_val_00000002.JPEG.*delete it, then "
                                             "run again"):
        R.render(val, tmp_path / "out", corruptions=["contrast"], parts=["clean"], workers=0)
    assert not (tmp_path / "out" / "images.txt").exists()
    done = files(tmp_path / "out" / "clean")
    broken.unlink()  # the advice: the resume is accepted, and what was rendered stays as it was
    R.render(val, tmp_path / "out", corruptions=["contrast"], parts=["clean"], workers=0)
    assert {k: v for k, v in files(tmp_path / "out" / "clean").items() if k in done} == done
    assert len((tmp_path / "out" / "images.txt").read_text().splitlines()) == 2


def test_bad_arguments(val, tmp_path):
    with pytest.raises(UserInputError, match="unknown corruption 'blurry'"):
        R.render(val, tmp_path / "o", corruptions=["blurry"])
    with pytest.raises(UserInputError, match="unknown part 'colour'"):
        R.render(val, tmp_path / "o", parts=["colour"])
    with pytest.raises(UserInputError, match="--limit"):
        R.render(val, tmp_path / "o", limit=0)


def test_extra_corruptions_go_to_imagenet_c_groups(tmp_path):
    plan = R.RenderPlan(tmp_path, 0, ("gaussian_blur", "saturate", "speckle_noise", "spatter"), ("imagenet-c",))
    image = R.SourceImage(0, "n01440764", Path("ILSVRC2012_val_00000001.JPEG"))
    folders = sorted({o.path.relative_to(tmp_path).parts[:2] for o in plan.outputs(image)})
    assert folders == [("blur", "gaussian_blur"), ("digital", "saturate"), ("noise", "speckle_noise"),
                       ("weather", "spatter")]


def test_color_and_mixed_recipes():
    plan = R.RenderPlan(Path("/out"), 0, (), ("color", "mixed"))
    warps, counts = Counter(), Counter()
    for index in range(300):
        outputs = plan.outputs(R.SourceImage(index, "n01440764", Path(f"{index}.JPEG")))
        assert outputs == plan.outputs(R.SourceImage(index, "n01440764", Path(f"{index}.JPEG")))
        for output in outputs:
            severity = int(output.path.parts[-3])
            assert all(step.severity == severity for step in output.steps)
            if output.path.relative_to("/out").parts[0] == "color":
                assert len(output.steps) == 1
                warps[output.steps[0].name] += 1
            else:
                names = [step.name for step in output.steps]
                assert len(set(names)) == len(names) and set(names) <= set(IMAGENET_C)
                counts[len(names)] += 1
    assert set(warps) == set(R.COLOR_WARPS) and min(warps.values()) > 300
    assert set(counts) == {2, 3} and min(counts.values()) > 600


def test_derived_seeds_are_stable():
    assert R.derive_seed(0, "fog", 3, 17) == R.derive_seed(0, "fog", 3, 17)
    assert len({R.derive_seed(0, "fog", s, i) for s in R.SEVERITIES for i in range(100)}) == 500
    assert 0 <= R.derive_seed("x") < 2**63


@pytest.mark.slow
def test_workers_give_the_same_bytes(rendered, val, tmp_path):
    out, _ = rendered
    parallel = tmp_path / "parallel"
    R.render(val, parallel, seed=7, corruptions=FAST, parts=["imagenet-c", "mixed"], limit=3, workers=2)
    full = files(out)
    produced = {k: v for k, v in files(parallel).items() if k.endswith(".JPEG")}
    assert len(produced) == 3 * 15
    assert all(full[k] == v for k, v in produced.items())


@pytest.mark.slow
def test_render_then_validate(val, tmp_path):
    """End to end: the builder's output is what validate.py reads (ImageNet-C grid and ImageNet-C-Mixed)."""
    validate = pytest.importorskip("classification.eval.validate")
    out = tmp_path / "bench"
    R.render(val, out, seed=0, limit=2, workers=0)
    tiny = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 1000))
    torch.save(tiny, tmp_path / "tiny_classifier.pt")  # a pickled module: --clas reads it when trusted
    common = ["--clas", str(tmp_path / "tiny_classifier.pt"), "--trust-checkpoint", "--device", "cpu", "--workers",
              "0", "--batch_size", "64", "--no-progress", "--out", str(tmp_path / "json")]
    grid_json = validate.main(["--root", str(out), *common])
    meta = json.loads(grid_json.with_suffix(".meta.json").read_text())
    assert len(meta["rows"]) == 17 and meta["rows"][-2:] == ["colwarp", "clean"]
    assert meta["total"] == [[2] * 5] * 17
    assert len(json.loads(grid_json.read_text())) == 17
    mixed_json = validate.main(["--mixed", "--root", str(out / "mixed"), *common])
    assert json.loads(mixed_json.with_suffix(".meta.json").read_text())["total"] == [[2] * 5]


def test_two_sources_that_would_be_rendered_as_one_file_are_refused(tmp_path):
    folder = tmp_path / WNIDS[0]
    folder.mkdir()
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    image.save(folder / "photo.JPEG")
    image.save(folder / "photo.png")
    with pytest.raises(UserInputError, match=r"photo\.JPEG and .*photo\.png would both be rendered as"):
        R.list_sources(tmp_path)
    (folder / "photo.png").rename(folder / "photo 2.png")
    assert [s.line_path for s in R.list_sources(tmp_path)] == [f"{WNIDS[0]}/photo 2.JPEG", f"{WNIDS[0]}/photo.JPEG"]
