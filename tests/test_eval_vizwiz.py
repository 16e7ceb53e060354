"""VizWiz: annotations, argmax over the listed categories, prediction files and accuracy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from classification.errors import UserInputError
from classification.eval import eval_vizwiz
from classification.eval.vizwiz import VizWiz, accuracy, predict_vizwiz, read_annotations

CATEGORIES = [3, 7, 500]


class FirstChannelClassifier(nn.Module):
    """Class 999 always wins overall; among CATEGORIES, 7 wins for bright images and 500 for dark ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x[:, 0].mean(dim=(1, 2)) > 0).float()
        logits = torch.zeros(len(x), 1000)
        logits[:, 999] = 100.0
        logits[:, 7] = bright
        logits[:, 500] = 1 - bright
        return logits


@pytest.fixture
def vizwiz_root(tmp_path):
    names = [f"VizWiz_val_{i:08d}.jpg" for i in range(5)]
    (tmp_path / "val").mkdir()
    for i, name in enumerate(names):
        value = 230 if i % 2 == 0 else 20
        Image.fromarray(np.full((50, 70, 3), value, dtype=np.uint8)).save(tmp_path / "val" / name)
    annotations = {"categories": [{"id": c, "name": str(c)} for c in CATEGORIES], "images": names,
                   "labels": {names[0]: [7, 3], names[1]: 500, names[2]: 3}}
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    return tmp_path


def test_predictions_use_only_listed_categories(vizwiz_root):
    dataset = VizWiz(vizwiz_root)
    preds = predict_vizwiz({"orig": FirstChannelClassifier()}, dataset, batch_size=2, workers=0, progress=False)["orig"]
    assert preds == {f"VizWiz_val_{i:08d}.jpg": 7 if i % 2 == 0 else 500 for i in range(5)}
    acc, scored = accuracy(preds, dataset.annotations.labels)
    assert scored == 3 and acc == pytest.approx(200 / 3)


def test_cli_writes_both_prediction_files(vizwiz_root, tmp_path, monkeypatch, capsys):
    from classification.training.model import ColModule

    monkeypatch.setattr(eval_vizwiz, "build_classifier", lambda name, pretrained=True, trusted=False, device=None: FirstChannelClassifier())
    checkpoint = tmp_path / "nem.pth"
    torch.save(ColModule().state_dict(), checkpoint)
    written = eval_vizwiz.main(["--root", str(vizwiz_root), "--colm", str(checkpoint), "--out", str(tmp_path / "out"),
                                "--workers", "0", "--device", "cpu", "--no-progress"])
    assert sorted(p.name for p in written.values()) == ["pred_orig.json", "pred_warp.json"]
    for path in written.values():
        preds = json.loads(path.read_text())
        assert len(preds) == 5 and set(preds.values()) <= set(CATEGORIES)
    assert "accuracy 66.67%" in capsys.readouterr().out


def test_annotation_list_format(tmp_path):
    (tmp_path / "annotations.json").write_text(json.dumps({
        "categories": [{"id": 1}], "images": ["VizWiz_test_1.jpg"],
        "annotations": [{"image": "VizWiz_test_1.jpg", "category_id": 1}]}))
    assert read_annotations(tmp_path).labels == {"VizWiz_test_1.jpg": {1}}


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ({"images": []}, "not a VizWiz-Classification annotation file"),
    ({"categories": [{"id": 1200}], "images": []}, "0..999"),
    ({"categories": [{"id": 1}], "images": ["VizWiz_val_9.jpg"]}, "VizWiz_val_9.jpg"),
])
def test_bad_input(tmp_path, content, message):
    if content is not None:
        (tmp_path / "annotations.json").write_text(json.dumps(content))
    with pytest.raises(UserInputError, match=message):
        VizWiz(tmp_path)


def test_byte_order_mark_and_crlf_annotations_are_read(vizwiz_root):
    source = vizwiz_root / "annotations.json"
    text = json.dumps(json.loads(source.read_text()), indent=1).replace("\n", "\r\n")
    source.write_bytes(b"\xef\xbb\xbf" + text.encode())
    dataset = VizWiz(vizwiz_root)
    assert dataset.annotations.category_ids == CATEGORIES and dataset.annotations.labels["VizWiz_val_00000001.jpg"] == {500}


@pytest.mark.parametrize("content, message", [
    ('{"categories": [{"id": 1}], "images": ["VizWiz_val_1.jpg"', r"not valid JSON \(.* at line 1 column \d+\)"),
    ("", "is empty"),
    ({"categories": [{"id": 1}], "images": "VizWiz_val_1.jpg"}, "'images' .* must be a list of file names"),
    ({"categories": [{"id": 1}], "images": [], "labels": {"VizWiz_val_1.jpg": "cat"}},
     r"label of 'VizWiz_val_1\.jpg' .* is 'cat'; labels are ImageNet class indices"),
    ({"categories": [{"id": 1}], "images": [], "annotations": [{"image": ["a"], "category_id": 1}]},
     "lacks the 'image' file name"),
    ({"categories": [{"id": 1}], "images": []}, "'images' in .* lists no image"),
])
def test_malformed_annotations_are_one_sentence(tmp_path, content, message):
    text = content if isinstance(content, str) else json.dumps(content)
    (tmp_path / "annotations.json").write_text(text)
    with pytest.raises(UserInputError, match=message):
        read_annotations(tmp_path)


def test_images_extracted_next_to_the_annotations_are_found(vizwiz_root):
    for image in sorted((vizwiz_root / "val").iterdir()):
        image.rename(vizwiz_root / image.name)
    dataset = VizWiz(vizwiz_root)
    assert dataset.paths == [vizwiz_root / f"VizWiz_val_{i:08d}.jpg" for i in range(5)]


def test_an_output_path_that_is_a_folder_is_refused_before_the_predictions(vizwiz_root, tmp_path, monkeypatch,
                                                                           capsys):
    out = tmp_path / "out"
    (out / "pred_orig.json").mkdir(parents=True)
    monkeypatch.setattr(eval_vizwiz, "predict_vizwiz", lambda *a, **k: pytest.fail("predicted before the check"))
    with pytest.raises(SystemExit) as exit_info:
        eval_vizwiz.main(["--root", str(vizwiz_root), "--out", str(out), "--workers", "0", "--device", "cpu",
                          "--random-init", "--clas", "rn18"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{out / 'pred_orig.json'} is a folder" in err and "Traceback" not in err


def test_labels_keyed_by_path_belong_to_the_image_of_that_file_name(tmp_path):
    (tmp_path / "annotations.json").write_text(json.dumps({
        "categories": [{"id": 1}], "images": ["VizWiz_val_1.jpg", "VizWiz_val_2.jpg"],
        "labels": {"val/VizWiz_val_1.jpg": 1, "val/VizWiz_val_2.jpg": [1]}}))
    assert read_annotations(tmp_path).labels == {"VizWiz_val_1.jpg": {1}, "VizWiz_val_2.jpg": {1}}


def test_labels_that_match_no_image_are_one_sentence(tmp_path):
    (tmp_path / "annotations.json").write_text(json.dumps({
        "categories": [{"id": 1}], "images": ["VizWiz_val_1.jpg"], "labels": {"img_0001.jpg": 1}}))
    with pytest.raises(UserInputError, match=r"the labels in .*annotations\.json name none of its 'images' \(a label "
                                             r"is keyed 'img_0001\.jpg', an image is 'VizWiz_val_1\.jpg'\)"):
        read_annotations(tmp_path)
