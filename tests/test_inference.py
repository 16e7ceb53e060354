"""The fused inference NEM (classification/training/inference.py) gives the plain module's numbers."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from classification.normalization import normalize
from classification.training.inference import FusedNEM, stem_pool_chunked, stem_pool_plain
from classification.training.model import ColModule, SyMPIE
from classification.training.stem_kernel import unavailable_reason
from tests.conftest import SAMPLE_NAMES, reference_image

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "classification" / "training" / "checkpoints" / "sympie_demo.pth"

pytestmark = pytest.mark.usefixtures("single_thread")


def random_nem() -> ColModule:
    """A NEM whose BatchNorm layers do something (trained-like statistics and affine weights)."""
    nem = ColModule()
    for m in nem.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 2.0)
            m.weight.data.uniform_(-1.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return nem.eval()


def photos() -> torch.Tensor:
    """The six 224x224 sample photos, ImageNet-normalised."""
    images = torch.stack([torch.from_numpy(reference_image(n)).permute(2, 0, 1) for n in SAMPLE_NAMES])
    return normalize(images.float() / 255)


@pytest.mark.parametrize("shape", [(2, 3, 224, 224), (2, 3, 68, 92), (1, 3, 70, 77), (0, 3, 224, 224)])
def test_fused_nem_equals_plain_in_float32(shape):
    nem = random_nem()
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = nem(x), FusedNEM(nem)(x)
    assert got.shape == expected.shape == (shape[0], 37)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_fused_sympie_equals_plain_on_real_photos():
    """The shipped demo model on real photos, at 224x224 and at another size (Resize + crop view)."""
    plain = SyMPIE.from_checkpoint(DEMO, fused=False)
    fused = SyMPIE.from_checkpoint(DEMO)
    assert isinstance(plain.nem, ColModule) and isinstance(fused.nem, FusedNEM)
    x = photos()[:3]
    for images in (x, x[:2, :, :200, :180].contiguous(memory_format=torch.channels_last)):
        with torch.no_grad():
            torch.testing.assert_close(fused(images), plain(images), atol=1e-4, rtol=0)
            torch.testing.assert_close(fused.estimate(images), plain.estimate(images), atol=1e-4, rtol=0)


def test_fused_sympie_in_bfloat16_within_bfloat16_tolerance():
    plain = SyMPIE.from_checkpoint(DEMO, fused=False)
    fused = SyMPIE.from_checkpoint(DEMO)
    x = photos()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = plain.estimate(x), fused.estimate(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    exact = plain.estimate(x)
    # Both differ from float32 by bfloat16 rounding; they differ from each other by no more than that.
    bf16_error = (expected.float() - exact).abs().max()
    assert (got.float() - expected.float()).abs().max() <= 2 * bf16_error + 1e-2
    with torch.no_grad():
        torch.testing.assert_close(fused.to(torch.bfloat16)(x.bfloat16()).float(),
                                   plain.to(torch.bfloat16)(x.bfloat16()).float(), atol=0.1, rtol=0.02)


def test_chunked_stem_equals_plain_for_every_chunk_size():
    weight, bias = torch.randn(64, 3, 3, 3) * 0.2, torch.randn(64) * 0.1
    x = torch.randn(5, 3, 36, 44)
    expected = stem_pool_plain(x, weight, bias)
    for images in (1, 2, 5, 8):  # 2: an uneven last chunk
        torch.testing.assert_close(stem_pool_chunked(x, weight, bias, images), expected, atol=1e-5, rtol=0)


def test_fused_nem_refuses_training_and_bad_images():
    fused = SyMPIE.from_checkpoint(DEMO)
    with pytest.raises(RuntimeError, match="inference only.*fused=False"):
        fused.train()
    with pytest.raises(ValueError, match="at least one pixel"):
        fused(torch.zeros(1, 3, 0, 5))
    with pytest.raises(ValueError, match="float tensor"):
        fused.nem(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expected torch.float32 images"):  # the kernel's dtypes aside
        fused.nem(torch.zeros(1, 3, 224, 224, dtype=torch.float16))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter takes CPU tensors")
def test_triton_kernel_refuses_cpu_tensors_in_one_phrase():
    assert unavailable_reason(torch.zeros(1, 3, 8, 8)) == "the Triton kernel runs on CUDA tensors, not on cpu"


TRITON_CHECK = textwrap.dedent("""
    import torch
    from classification.training.inference import stem_pool_plain
    from classification.training.stem_kernel import stem_pool_triton, unavailable_reason
    torch.manual_seed(0)
    weight, bias = torch.randn(64, 3, 3, 3) * 0.1, torch.randn(64) * 0.05
    for shape in [(2, 3, 17, 23), (1, 3, 8, 8), (1, 3, 3, 4)]:
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(stem_pool_triton(x, weight, bias), stem_pool_plain(x, weight, bias),
                                   atol=1e-5, rtol=0)
        xb = x.bfloat16()
        expected = stem_pool_plain(xb.float(), weight.bfloat16().float(), bias)
        torch.testing.assert_close(stem_pool_triton(xb, weight, bias).float(), expected, atol=1e-3, rtol=2 ** -7)
    assert "float64" in unavailable_reason(torch.zeros(1, 3, 8, 8, dtype=torch.float64))
    print("ok")
""")


@pytest.mark.slow
def test_triton_kernel_in_the_interpreter():
    """The CUDA kernel's arithmetic, run by Triton's interpreter on the CPU (float32 and bfloat16)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_validate_compile_puts_the_nem_through_torch_compile(monkeypatch):
    from classification.eval import evaluate, validate

    compiled = []
    monkeypatch.setattr(evaluate.torch, "compile", lambda module: compiled.append(module) or module)
    model = evaluate.build_eval_model(nn.Identity(), DEMO, compile_nem=True)
    assert compiled == [model.sympie.nem] and isinstance(compiled[0], FusedNEM)
    assert evaluate.build_eval_model(nn.Identity(), DEMO).sympie.nem is not compiled[0] and len(compiled) == 1
    assert validate.build_parser().parse_args(["--compile"]).compile
