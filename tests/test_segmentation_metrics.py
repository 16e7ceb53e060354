"""Confusion matrix, IoU / mIoU, ignore handling and the per-class table."""
import io
import math

import numpy as np
import pytest
import torch

from segmentation.metrics import ConfusionMatrix, confusion_matrix, format_table, nanmean, supports_color

# 3 classes, ignore label 255.  gt rows, prediction columns.
GT = torch.tensor([[0, 0, 1, 1, 2, 255],
                   [0, 1, 1, 2, 2, 255]])
PRED = torch.tensor([[0, 1, 1, 1, 2, 0],
                     [0, 1, 2, 2, 0, 2]])
HAND_MATRIX = [[2, 1, 0],   # class 0: 3 pixels, 2 right, 1 -> class 1
               [0, 3, 1],   # class 1: 4 pixels, 3 right, 1 -> class 2
               [1, 0, 2]]   # class 2: 3 pixels, 2 right, 1 -> class 0


def test_confusion_matrix_by_hand_and_ignore():
    assert confusion_matrix(PRED, GT, 3).tolist() == HAND_MATRIX


def test_iou_precision_accuracy_and_miou_by_hand():
    matrix = ConfusionMatrix(3)
    matrix.update(PRED, GT)
    # IoU = TP / (TP + FP + FN): class 0: 2/(2+1+1), class 1: 3/(3+1+1), class 2: 2/(2+1+1)
    np.testing.assert_allclose(matrix.iou(), [2 / 4, 3 / 5, 2 / 4])
    np.testing.assert_allclose(matrix.pixel_accuracy(), [2 / 3, 3 / 4, 2 / 3])
    np.testing.assert_allclose(matrix.precision(), [2 / 3, 3 / 4, 2 / 3])
    assert matrix.miou() == pytest.approx(100 * (0.5 + 0.6 + 0.5) / 3)


def test_updates_accumulate():
    matrix = ConfusionMatrix(3)
    matrix.update(PRED, GT)
    matrix.update(PRED[:1], GT[:1])
    assert matrix.matrix.tolist() == (torch.tensor(HAND_MATRIX) + confusion_matrix(PRED[:1], GT[:1], 3)).tolist()


def test_absent_classes_are_nan_and_left_out_of_the_mean():
    matrix = ConfusionMatrix(4)
    matrix.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    iou = matrix.iou()
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert matrix.miou() == pytest.approx(100 * (0.5 + 0.5) / 2)
    # a class that is predicted but never present has IoU 0, not NaN
    matrix.update(torch.tensor([3]), torch.tensor([1]))
    assert matrix.iou()[3] == 0.0 and math.isnan(matrix.pixel_accuracy()[3])


def test_negative_and_large_labels_are_ignored_and_predictions_do_not_matter_there():
    gt = torch.tensor([-1, 255, 19, 0])
    a = confusion_matrix(torch.tensor([0, 0, 0, 0]), gt, 19)
    b = confusion_matrix(torch.tensor([5, 7, 18, 0]), gt, 19)
    assert torch.equal(a, b) and a.sum() == 1


def test_all_ignored_gives_nan_miou():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255))
    assert math.isnan(matrix.miou())
    assert math.isnan(nanmean(np.array([np.nan, np.nan])))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 3)


def test_summary_keys():
    matrix = ConfusionMatrix(3)
    matrix.update(PRED, GT)
    summary = matrix.summary()
    assert set(summary) == {"miou", "iou", "pixel_accuracy", "precision", "confusion"}
    assert summary["confusion"].tolist() == HAND_MATRIX


def test_table_plain_and_coloured():
    matrix = ConfusionMatrix(3)
    matrix.update(PRED, GT)
    names = ["road", "sidewalk", "building"]
    plain = format_table(matrix.summary(), names, color=False)
    assert "\033[" not in plain
    lines = plain.splitlines()
    row = next(line for line in lines if line.startswith("sidewalk"))
    assert row.split()[1:] == ["75.0", "75.0", "60.0"]
    mean_row = next(line for line in lines if line.startswith("mean"))
    assert float(mean_row.split()[-1]) == pytest.approx(100 * 1.6 / 3, abs=0.05)
    coloured = format_table(matrix.summary(), names, color=True)
    assert "\033[" in coloured and coloured.count("\n") == plain.count("\n")


def test_colour_only_on_terminals(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert not supports_color(io.StringIO())

    class FakeTty(io.StringIO):
        def isatty(self):
            return True

    assert supports_color(FakeTty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not supports_color(FakeTty())
