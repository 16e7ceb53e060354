"""The small-scale path (beyond the paper): identity init, classifier targets, flat folders, clean crops,
frozen NEM BatchNorm, the float16 export, the bad inputs and a seeded run of ``--recipe small``."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from classification.errors import UserInputError
from classification.training import photo_folder
from classification.training import train as train_module
from classification.training import trainer as trainer_module
from classification.training.corrupted_folder import (NO_LABEL, DistortImageFolder, apply_random_corruptions,
                                                     distort_batch, scan_image_folder)
from classification.training.corruptions import TRAINING_SET
from classification.training.engine import (calibrate_batchnorm, classifier_targets, freeze_batchnorm, hard_labels,
                                            target_loss, train_step)
from classification.training.model import (ColModule, CorrectColMulti, SyMPIE, col_warp, identity_init_,
                                           load_nem_checkpoint)
from classification.training.train import build_parser, main, train

pytestmark = pytest.mark.usefixtures("single_thread")

FAST = ["--epochs", "1", "--iters-per-epoch", "2", "--batch-size", "2", "--workers", "0", "--val-workers", "0",
        "--val-iters", "1", "--resize-size", "36", "--crop-size", "32", "--device", "cpu", "--print-every", "1",
        "--image-every", "0", "--seed", "1"]


def tiny_classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 1000))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
    """120 small photos directly in the folder (no class sub-folders), and an empty dataset config beside it."""
    root = tmp_path_factory.mktemp("flat")
    (root.parent / "no_datasets.yaml").write_text("{}\n")
    rng = np.random.default_rng(0)
    for i in range(120):
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    return root


def args_for(folder, logdir, *extra):
    return ["--imagenet", str(folder), "--logdir", str(logdir), "--config", str(folder.parent / "no_datasets.yaml"),
            *FAST, *extra]


# ------------------------------------------------------------------ identity init

def test_identity_init_gives_the_input_back_exactly():
    torch.manual_seed(3)
    nem = identity_init_(ColModule())
    x = torch.randn(3, 3, 224, 224) * 2
    assert torch.equal(col_warp(x, nem(x)), x)
    model = CorrectColMulti([tiny_classifier()], nem)  # training mode: the clamp lets everything through
    _, _, corrected = model(x)
    assert torch.equal(corrected, x)
    assert torch.equal(SyMPIE(nem).eval()(x.clamp(-1.5, 1.5)), x.clamp(-1.5, 1.5))  # inside the clamp's range


def test_identity_init_is_wired_to_both_student_and_teacher(flat_folder, tmp_path, monkeypatch):
    seen = {}

    def capture(student, teacher, x, y, z, **kwargs):
        seen["params"] = (student.estimate(x).detach(), teacher.estimate(x).detach())
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "train_step", capture)
    args = build_parser().parse_args(args_for(flat_folder, tmp_path / "run", "--labels", "classifier",
                                              "--init", "identity"))
    with pytest.raises(KeyboardInterrupt):
        train(args, classifiers=[tiny_classifier()])
    identity = torch.tensor(small_identity()).expand(2, -1)
    assert all(torch.equal(p, identity) for p in seen["params"])


def small_identity() -> list[float]:
    kernel = [0.0] * 25
    kernel[12] = 1.0
    return [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, *kernel]


# ------------------------------------------------------------------ classifier targets

def test_classifier_targets_are_the_clean_prediction_or_its_softmax():
    classifier = tiny_classifier()
    clean = torch.randn(4, 3, 32, 32)
    logits = classifier(clean)
    assert torch.equal(classifier_targets(classifier, clean, "hard"), logits.argmax(1))
    soft = classifier_targets(classifier, clean, "kl", temperature=2.0)
    assert torch.allclose(soft, F.softmax(logits / 2, 1)) and torch.equal(hard_labels(soft), logits.argmax(1))


def test_target_loss_is_cross_entropy_for_labels_and_scaled_kl_for_probabilities():
    logits, other = torch.randn(4, 10), torch.randn(4, 10)
    labels = torch.tensor([1, 2, 3, 4])
    assert torch.equal(target_loss(logits, labels), F.cross_entropy(logits, labels))
    target = F.softmax(other / 3, 1)
    expected = 9 * (target * (target.log() - F.log_softmax(logits / 3, 1))).sum(1).mean()
    assert torch.allclose(target_loss(logits, target, 3.0), expected)
    assert target_loss(other / 3 * 3, target, 3.0).abs() < 1e-6  # the target's own logits: zero divergence


@pytest.mark.parametrize("distill", ["hard", "kl"])
def test_labels_classifier_trains_on_the_classifiers_clean_output(flat_folder, tmp_path, monkeypatch, distill):
    """Every step's target is the frozen classifier's output on the clean crop z (the flat folder has no labels)."""
    classifier = tiny_classifier()
    targets = []
    real_step = trainer_module.train_step

    def checking(student, teacher, x, y, z, **kwargs):
        expected = classifier(z)
        expected = expected.argmax(1) if distill == "hard" else F.softmax(expected, 1)
        targets.append(torch.equal(y, expected))
        return real_step(student, teacher, x, y, z, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", checking)
    args = build_parser().parse_args(args_for(flat_folder, tmp_path / "run", "--labels", "classifier",
                                              "--distill", distill))
    train(args, classifiers=[classifier])
    assert targets == [True, True]
    assert len(load_nem_checkpoint(tmp_path / "run" / "final.pth")) == 51


def test_flat_folder_is_scanned_only_without_dataset_labels(flat_folder):
    classes, samples = scan_image_folder(flat_folder, labelled=False)
    assert classes == [] and len(samples) == 120 and {label for _, label in samples} == {NO_LABEL}
    dataset = DistortImageFolder(flat_folder, "train", resize_size=36, crop_size=32, seed=0, labelled=False)
    x, y, z = dataset[0]
    assert y == NO_LABEL and x.shape == z.shape == (3, 32, 32)


# ------------------------------------------------------------------ bad input: one sentence

@pytest.mark.parametrize("extra, words", [
    (["--labels", "dataset"], ["no class sub-folders", "--labels classifier"]),
    (["--labels", "classifier", "--init", "zeros"], ["--init", "'zeros'", "random, identity"]),
    (["--labels", "teacher"], ["--labels", "'teacher'"]),
    (["--labels", "classifier", "--distill", "soft"], ["--distill", "'soft'"]),
    (["--labels", "classifier", "--clean-fraction", "1.5"], ["--clean-fraction", "1.5"]),
    (["--labels", "classifier", "--bn-calibration-batches", "-1"], ["--bn-calibration-batches", "-1"]),
    (["--recipe", "large"], ["--recipe", "'large'"]),
])
def test_bad_input_gets_one_sentence(flat_folder, tmp_path, capsys, extra, words):
    with pytest.raises(SystemExit) as exit_info:
        main(args_for(flat_folder, tmp_path / "run", *extra))
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert all(word in message for word in words), message


def test_demo_and_small_recipe_are_not_combined(capsys):
    with pytest.raises(SystemExit):
        main(["--demo", "--recipe", "small"])
    assert "--recipe small" in capsys.readouterr().err


# ------------------------------------------------------------------ clean crops, frozen BatchNorm, round 2

def test_clean_fraction_one_leaves_every_crop_clean():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert apply_random_corruptions(image, random.Random(0), TRAINING_SET, clean_fraction=1.0) is image
    batch = torch.rand(3, 3, 32, 32)
    assert torch.equal(distort_batch(batch, random.Random(0), TRAINING_SET, clean_fraction=1.0), batch)


def test_clean_fraction_zero_draws_exactly_as_the_paper():
    """No extra random draw when the fraction is 0: the corruption stream is the paper's."""
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a, b = random.Random(5), random.Random(5)
    out = apply_random_corruptions(image, a, TRAINING_SET)
    assert np.array_equal(out, apply_random_corruptions(image, b, TRAINING_SET, clean_fraction=0.0))
    assert a.random() == b.random()


def make_step_models():
    torch.manual_seed(0)
    student = CorrectColMulti([tiny_classifier()])
    teacher = CorrectColMulti(student.classifiers).eval()
    optimizer = torch.optim.Adam(student.nem.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    return student, teacher, dict(clasid=0, optimizer=optimizer, scheduler=scheduler)


def test_frozen_batchnorm_keeps_running_statistics_and_round2_weight_zero_skips_the_teacher():
    student, teacher, kwargs = make_step_models()
    freeze_batchnorm(student.nem)
    before = {k: v.clone() for k, v in student.nem.state_dict().items() if "running" in k}
    x, z = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    teacher.forward = lambda *a: pytest.fail("the teacher ran although round 2 has weight 0")
    out = train_step(student, teacher, x, torch.tensor([1, 2]), z, round2_weight=0.0, **kwargs)
    assert out.metrics["ce_round2"] == 0
    after = student.nem.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert student.nem.backbone[0].weight.grad is not None  # round 1 still trained the NEM


def test_batchnorm_calibration_uses_the_plain_mean_of_the_batches_and_changes_nothing_else():
    torch.manual_seed(0)
    nem = ColModule().eval()
    weights = {k: v.clone() for k, v in nem.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(2, 3, 64, 64) + 1, torch.randn(2, 3, 64, 64) - 3]
    calibrate_batchnorm(nem, batches)
    first_conv, first_bn = nem.backbone[0], nem.backbone[1]
    with torch.no_grad():
        expected = torch.stack([first_conv(b).mean((0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(first_bn.running_mean, expected, atol=1e-5)
    assert first_bn.momentum == 0.1 and not nem.training
    assert all(torch.equal(v, nem.state_dict()[k]) for k, v in weights.items())


# ------------------------------------------------------------------ float16 export and loading

def test_float16_checkpoint_loads_as_float32_everywhere(tmp_path):
    torch.manual_seed(0)
    nem = ColModule()
    model = CorrectColMulti([tiny_classifier()], nem)
    path = tmp_path / "half.pth"
    trainer_module.export_half(model, path)
    saved = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    state = load_nem_checkpoint(path)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert torch.equal(state["out.weight"], nem.out.weight.detach().half().float())
    sympie = SyMPIE.from_checkpoint(path)
    assert sympie.nem.out.weight.dtype == torch.float32
    assert path.stat().st_size < 12e6


# ------------------------------------------------------------------ the recipe itself

def parse(argv):
    from classification.training.recipes import parse_command_line

    return parse_command_line(build_parser(), argv)


def test_small_recipe_settings_and_overrides():
    args = parse(["--recipe", "small", "--lr", "1e-4"])
    assert args.lr == 1e-4  # an explicit flag wins
    assert (args.init, args.labels, args.classifiers, args.imagenet, args.photos) == \
        ("identity", "classifier", ["effnet_lite0"], None, "labelled_folder")
    assert args.corruptions.count("sunset") == 3 and args.corruptions.count("fog") == 1
    assert sorted(set(args.corruptions)) == sorted(TRAINING_SET)


def test_small_recipe_with_no_color_config_and_unfrozen_batchnorm(tmp_path):
    """--no-color takes the colour warps out of the recipe's mix, --config does not replace the photos, and
    --no-freeze-nem-bn overrides the recipe like any other explicit flag."""
    from classification.training.corrupted_folder import COLOR_WARPS, training_methods

    (tmp_path / "seg.yaml").write_text("{}\n")
    args = parse(["--recipe", "small", "--no-color", "--no-freeze-nem-bn", "--config", str(tmp_path / "seg.yaml")])
    methods = training_methods(args.no_color, args.corruptions)
    assert not set(methods) & set(COLOR_WARPS) and methods.count("brightness") == 3 and methods.count("fog") == 1
    assert args.imagenet is None and args.photos == "labelled_folder" and args.freeze_nem_bn is False


def test_a_flag_the_recipe_depends_on_takes_the_recipes_dependent_values_with_it():
    """--recipe small --labels dataset trains with the cross-entropy (the recipe's --distill kl only applies to
    classifier targets) instead of refusing with a sentence about --distill, which the user never typed."""
    from classification.training.train import check_flags

    args = parse(["--recipe", "small", "--labels", "dataset"])
    assert (args.labels, args.distill, args.temperature) == ("dataset", "hard", 1.0)
    check_flags(args)
    args = parse(["--recipe", "small", "--labels", "dataset", "--distill", "kl"])  # typed: refused, naming it
    with pytest.raises(UserInputError, match="^--distill kl needs --labels classifier"):
        check_flags(args)


def test_demo_is_the_smoke_recipe_and_explicit_flags_win(tmp_path):
    smoke, demo = parse(["--recipe", "smoke"]), parse(["--demo"])
    assert vars(smoke) == {**vars(demo), "demo": False}
    assert (demo.recipe, demo.photos, demo.classifiers, demo.epochs) == ("smoke", "samples", ["effnet_lite0"], 2)
    assert parse(["--demo", "--imagenet", str(tmp_path), "--epochs", "1"]).imagenet == str(tmp_path)
    with pytest.raises(UserInputError, match="^--demo is --recipe smoke, so it cannot be combined with --recipe small"):
        parse(["--demo", "--recipe", "small"])
    with pytest.raises(UserInputError, match="^--recipe 'fast' is not one of paper, small, smoke"):
        parse(["--recipe", "fast"])
    paper = parse([])
    assert vars(paper) == vars(build_parser().parse_args([]))  # the paper's recipe is the flags' defaults


def photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(path)


def test_photo_folder_variants_are_seeded_labelled_and_hold_out_every_fifth(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMPIE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(photo_folder, "VARIANTS_PER_PHOTO", 2)
    photos = tmp_path / "photos"
    for i in range(6):  # the same file name in two classes must not collide
        photo(photos / ("n01440764" if i < 3 else "n01443537") / f"p{i % 3}.jpg", i)
    train, heldout = photo_folder.split_photos(photo_folder.labelled_photos(photos))
    assert [(p.parent.name, p.name, label) for p, label in heldout] == [("n01440764", "p0.jpg", 0),
                                                                        ("n01443537", "p2.jpg", 1)]
    assert len(train) == 4
    folder = photo_folder.training_folder(photos)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    assert files == ["n01440764/p1.jpg_00.jpg", "n01440764/p1.jpg_01.jpg", "n01440764/p2.jpg_00.jpg",
                     "n01440764/p2.jpg_01.jpg", "n01443537/p0.jpg_00.jpg", "n01443537/p0.jpg_01.jpg",
                     "n01443537/p1.jpg_00.jpg", "n01443537/p1.jpg_01.jpg"]
    assert len([d for d in folder.iterdir() if d.is_dir()]) == 1000  # folder i is class i
    first = {f: (folder / f).read_bytes() for f in files}
    (folder / files[0]).unlink()  # a damaged cache is made again, the same bytes
    again = photo_folder.training_folder(photos)
    assert {f: (again / f).read_bytes() for f in files} == first


@pytest.mark.parametrize("layout, words", [
    ("empty", "is empty"),
    ("flat", "holds photos but no class sub-folders"),
    ("not_wnids", "sub-folders that are not ImageNet wnids (cats)"),
    ("undecodable", "cannot decode photo"),
])
def test_bad_photo_folders_get_one_sentence(tmp_path, monkeypatch, capsys, layout, words):
    monkeypatch.setenv("SYMPIE_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    if layout == "flat":
        photo(photos / "a.jpg", 0)
    elif layout == "not_wnids":
        photo(photos / "cats" / "a.jpg", 0)
    elif layout == "undecodable":
        for i in range(3):
            (photos / "n01440764").mkdir(exist_ok=True)
            (photos / "n01440764" / f"{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SystemExit):
        main(["--recipe", "small", "--imagenet", str(photos), "--logdir", str(tmp_path / "log")])
    message = capsys.readouterr().err.strip()
    assert words in message and str(photos) in message and len(message.splitlines()) == 1
    assert not (tmp_path / "log").exists()


def test_small_recipe_needs_the_photo_folder(capsys):
    with pytest.raises(SystemExit):
        main(["--recipe", "small"])
    assert "pass it with --imagenet PATH" in capsys.readouterr().err


@pytest.mark.slow
def test_small_recipe_short_run_is_repeatable(tmp_path, monkeypatch):
    """Two short runs of ``--recipe small`` (effnet_lite0, a folder of 10 tiny labelled photos) write identical
    checkpoints."""
    monkeypatch.setenv("SYMPIE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(photo_folder, "VARIANTS_PER_PHOTO", 16)  # 128 files: the validation split (1 in 50) fits
    for i in range(10):
        photo(tmp_path / "photos" / ("n01440764", "n01443537")[i % 2] / f"{i}.jpg", i)
    outputs = []
    for name in ("a", "b"):
        main(["--recipe", "small", "--imagenet", str(tmp_path / "photos"), "--epochs", "1", "--iters-per-epoch", "2",
              "--batch-size", "2", "--logdir", str(tmp_path / name), "--export", str(tmp_path / f"{name}.pth")])
        outputs.append(torch.load(tmp_path / f"{name}.pth", weights_only=True))
    assert outputs[0].keys() == outputs[1].keys() and all(torch.equal(outputs[0][k], outputs[1][k]) for k in outputs[0])
    assert not torch.equal(outputs[0]["out.weight"], torch.zeros_like(outputs[0]["out.weight"]))  # it trained
