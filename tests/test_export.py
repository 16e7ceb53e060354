"""Export (classification/training/export.py): the traceable rewrites equal eager, torch.export and ONNX programs
give eager's numbers at other batch and image sizes than the traced ones, the CLI refuses bad requests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from classification.training import export
from classification.training.model import SyMPIE, col_warp, estimation_view

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "classification" / "training" / "checkpoints" / "sympie_demo.pth"
SIZES = [(224, 224), (225, 224), (240, 320), (333, 250), (100, 50)]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("size", SIZES)
def test_traceable_view_and_warp_equal_eager(size):
    x, params = torch.randn(2, 3, *size), torch.randn(2, 37) * 0.3
    assert torch.equal(export.traceable_estimation_view(x), estimation_view(x))
    torch.testing.assert_close(export.traceable_warp(x, params), col_warp(x, params), atol=1e-5, rtol=0)


def tiny_classifier() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10)).eval()


@pytest.mark.slow
def test_torch_export_of_sympie_and_of_sympie_with_a_classifier():
    sympie = SyMPIE.from_checkpoint(DEMO)
    classifier = tiny_classifier()
    for model, reference in ((export.deployable(sympie), sympie),
                             (export.deployable(sympie, classifier), nn.Sequential(sympie, classifier))):
        program = export.export_program(model).module()
        for shape in ((3, 3, 224, 224), (1, 3, 200, 300)):  # neither is the traced (2, 3, 240, 320)
            x = torch.randn(shape)
            with torch.no_grad():
                torch.testing.assert_close(program(x), reference(x), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_onnx_export_from_the_command_line_matches_eager(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    out = export.main(["--colm", str(DEMO), "--out", str(tmp_path / "sympie.onnx")])
    assert [p.name for p in tmp_path.iterdir()] == ["sympie.onnx"]  # no temporary file left
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    sympie = SyMPIE.from_checkpoint(DEMO, fused=False)
    for shape in ((3, 3, 224, 224), (1, 3, 200, 300)):
        x = torch.randn(shape)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, sympie(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("argv, message", [
    (["--out", "x.onnx", "--colm", "none"], "--colm none exports nothing"),
    (["--out", "x.txt"], "must end in .onnx"),
    (["--out", "x.onnx", "--opset", "17"], "needs opset 18"),
    (["--out", "x.onnx", "--clas", "nonsense"], "unknown classifier 'nonsense'"),
])
def test_cli_refuses_bad_requests_in_one_sentence(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        export.main(["--colm", str(DEMO), *argv])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_onnx_export_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "module_available", lambda name: name != "onnxscript")
    with pytest.raises(export.UserInputError, match=r"needs onnxscript; install .*\[export\]"):
        export.export_onnx(export.deployable(SyMPIE.from_checkpoint(DEMO)), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []
