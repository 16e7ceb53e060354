"""The SyMPIE module: checkpoint layout, fixture equivalence with the original DWM, wrappers, loading."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from classification.errors import UserInputError
from classification.normalization import IMAGENET_MEAN, IMAGENET_STD
from classification.training.model import (
    NUM_PARAMS, Clamp, ColModule, ColWarp, CorrectCol, CorrectColMulti, SyMPIE, col_warp, estimation_view,
    load_nem_checkpoint,
)
from conftest import REFERENCE

DWM = torch.load(REFERENCE / "model" / "dwm_fixture.pt", weights_only=True)


def reference_keys() -> list[tuple[str, list[int], str]]:
    rows = []
    for line in (REFERENCE / "model" / "nem_state_dict_keys.txt").read_text().splitlines():
        key, rest = line.split(" ", 1)
        shape, dtype = rest.rsplit(" ", 1)
        rows.append((key, eval(shape), dtype))  # shape is a literal list like [64, 3, 3, 3]
    return rows


def test_nem_state_dict_matches_release_layout():
    state = ColModule().state_dict()
    expected = reference_keys()
    assert list(state) == [k for k, _, _ in expected]
    for key, shape, dtype in expected:
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype).removeprefix("torch.") == dtype, key


def test_nem_output_and_size():
    nem = ColModule().eval()
    out = nem(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, NUM_PARAMS)
    assert sum(p.numel() for p in nem.parameters()) == pytest.approx(4.67e6, rel=0.01)


def test_nem_block_resolutions():
    """The three ConvBlocks run at 56, 14 and 3 pixels for a 224 input."""
    sizes = []
    nem = ColModule()
    for block in list(nem.backbone)[3:]:
        block.conv1.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    nem(torch.randn(1, 3, 224, 224))
    assert sizes == [56, 14, 3]


def test_colwarp_matches_original_fixture():
    out = ColWarp()(DWM["x"], DWM["params"])
    torch.testing.assert_close(out, DWM["warped"], atol=1e-5, rtol=0)


def test_clamp_matches_original_fixture_and_is_identity_in_training():
    clamp = Clamp().eval()
    x = DWM["warped"].clone()
    torch.testing.assert_close(clamp(x), DWM["clamped"], atol=1e-5, rtol=0)
    torch.testing.assert_close(x, DWM["warped"])  # caller's tensor untouched
    assert clamp.train()(x) is x
    assert set(dict(clamp.named_buffers())) == {"min", "max"}
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(clamp.min.flatten(), -mean / std)
    torch.testing.assert_close(clamp.max.flatten(), (1 - mean) / std)


def test_colwarp_identity_parameters_leave_image_unchanged():
    x = torch.randn(3, 3, 17, 31)
    identity = torch.zeros(3, NUM_PARAMS)
    identity[:, :9] = torch.eye(3).flatten()
    identity[:, 12 + 12] = 1.0  # centre tap of the 5x5 kernel
    torch.testing.assert_close(col_warp(x, identity), x)


def test_colwarp_each_image_uses_its_own_parameters():
    x = torch.randn(4, 3, 12, 12)
    p = torch.randn(4, NUM_PARAMS)
    batched = col_warp(x, p)
    for i in range(4):
        torch.testing.assert_close(batched[i:i + 1], col_warp(x[i:i + 1], p[i:i + 1]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("images, params, match", [
    (torch.randn(2, 1, 8, 8), torch.randn(2, 37), r"\(B,3,H,W\)"),
    (torch.randn(3, 8, 8), torch.randn(1, 37), r"\(B,3,H,W\)"),
    (torch.randn(2, 3, 8, 8), torch.randn(2, 36), r"\(2, 37\)"),
    (torch.randn(2, 3, 8, 8), torch.randn(3, 37), r"\(2, 37\)"),
    (torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8), torch.randn(2, 37), "float"),
    (torch.randn(2, 3, 0, 8), torch.randn(2, 37), r"at least one pixel, got .*\(2, 3, 0, 8\)"),
])
def test_colwarp_rejects_bad_shapes(images, params, match):
    with pytest.raises(ValueError, match=match):
        col_warp(images, params)


def test_sympie_on_empty_and_tiny_batches():
    """An empty batch passes through (grouped convolutions refused it); 1-pixel images are estimated on
    their resized view like any other size."""
    sympie = SyMPIE().eval()
    with torch.no_grad():
        assert sympie(torch.randn(0, 3, 8, 8)).shape == (0, 3, 8, 8)
        out = sympie(torch.randn(2, 3, 1, 7))
    assert out.shape == (2, 3, 1, 7) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="at least one pixel"):
        sympie.estimate(torch.randn(1, 3, 5, 0))


def tiny_classifier(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


def test_correctcolmulti_gradients_reach_only_the_nem():
    model = CorrectColMulti([tiny_classifier(1), tiny_classifier(2)]).train()
    before = {k: v.clone() for k, v in model.classifiers.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(4, 3, 224, 224), torch.randint(0, 10, (4,))
    for clasid in (0, 1):
        logits, params, corrected = model(x, clasid)
        assert logits.shape == (4, 10) and params.shape == (4, NUM_PARAMS) and corrected.shape == x.shape
        nn.functional.cross_entropy(logits, y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.nem.parameters())
    assert all(p.grad is None for p in model.classifiers.parameters())
    opt.step()
    assert all(not c.training for c in model.classifiers)
    after = model.classifiers.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched too


def test_correctcol_forward_and_train_mode_keeps_classifier_frozen():
    model = CorrectCol(tiny_classifier(3))
    model.train()
    assert model.nem.training and not model.classifiers[0].training
    logits, params, corrected = model(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 10)
    assert not any(p.requires_grad for p in model.classifiers.parameters())


def test_sympie_any_size_estimates_on_232_crop_224_view():
    torch.manual_seed(0)
    sympie = SyMPIE().eval()
    x = torch.randn(2, 3, 300, 500)
    view = estimation_view(x)
    assert view.shape == (2, 3, 224, 224)
    # Resize(232) keeps the aspect ratio: 300x500 -> 232x387, centre crop 224
    out = sympie(x)
    assert out.shape == x.shape
    expected = sympie.clamp(col_warp(x, sympie.nem(view)))
    torch.testing.assert_close(out, expected)
    square = torch.randn(1, 3, 224, 224)
    assert estimation_view(square) is square


def save_forms(tmp_path, state):
    torch.save(state, tmp_path / "plain.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    wrapper = CorrectColMulti([tiny_classifier(0)], nem=ColModule())
    wrapper.nem.load_state_dict(state)
    torch.save({"student": {f"module.{k}": v for k, v in wrapper.state_dict().items()}, "iteration": 7},
               tmp_path / "train.pth")


def test_checkpoint_forms_all_load(tmp_path):
    state = ColModule().state_dict()
    save_forms(tmp_path, state)
    for name in ("plain", "ddp", "train"):
        loaded = load_nem_checkpoint(tmp_path / f"{name}.pth")
        assert list(loaded) == list(state)
        assert all(torch.equal(loaded[k], state[k]) for k in state), name
    sympie = SyMPIE.from_checkpoint(tmp_path / "ddp.pth")
    assert not sympie.training
    assert torch.equal(sympie.nem.out.weight, state["out.weight"])


def test_wrong_checkpoint_names_file_and_keys(tmp_path):
    torch.save(nn.Linear(3, 4).state_dict(), tmp_path / "other.pth")
    with pytest.raises(UserInputError, match=r"other\.pth.*missing keys: backbone\.0\.weight.*unexpected keys: weight, bias"):
        load_nem_checkpoint(tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="does not exist"):
        load_nem_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="could not be read"):
        load_nem_checkpoint(tmp_path / "garbage.pth")


def test_images_of_another_dtype_than_the_weights_are_one_sentence():
    """A float16 batch into a float32 SyMPIE was accepted by the input check and died inside a convolution."""
    model = SyMPIE().eval()
    with pytest.raises(ValueError, match=r"expected torch\.float32 images, the dtype of the model's weights, got "
                                         r"torch\.float16"):
        model(torch.rand(1, 3, 32, 32, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"expected torch\.float32 images"):
        model.nem(torch.rand(1, 3, 32, 32, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: the weights stay float32
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
