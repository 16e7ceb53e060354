"""DeepLab-V2 architecture, checkpoint loading and the Caffe input conversion."""
import argparse
from pathlib import Path

import pytest
import torch

from classification.errors import UserInputError
from classification.normalization import IMAGENET_MEAN, normalize
from classification.training.model import ColModule
from segmentation.deeplab import DeeplabNW, extract_deeplab_state_dict, load_deeplab
from segmentation.renorm import CAFFE_MEAN_BGR, CaffeRenorm, ImagenetInput, imagenet_to_caffe

pytestmark = pytest.mark.usefixtures("single_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "reference" / "model" / "deeplab_state_dict_keys.txt"


def reference_keys():
    rows = []
    for line in FIXTURE.read_text().splitlines():
        key, shape = line.split(" ", 1)
        shape = shape.split("]")[0].strip("[ ")
        rows.append((key, tuple(int(s) for s in shape.split(",") if s.strip())))
    return rows


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DeeplabNW(19, "ResNet50").eval()


def test_state_dict_matches_reference_keys_order_and_shapes(model):
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert len(ours) == 326
    assert ours == reference_keys()


def test_feature_and_logit_sizes_for_512x1024():
    with torch.device("meta"):
        meta_model = DeeplabNW()
        logits, features = meta_model(torch.empty(1, 3, 512, 1024))
    assert tuple(features.shape) == (1, 2048, 65, 129)
    assert tuple(logits.shape) == (1, 19, 512, 1024)


def test_logits_are_upsampled_to_odd_input_size(model):
    with torch.inference_mode():
        logits, features = model(torch.randn(1, 3, 45, 67))
    assert logits.shape == (1, 19, 45, 67)
    assert features.shape[1] == 2048


def test_logits_are_bilinear_align_corners_upsampling_of_the_first_two_branches(model):
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        logits, features = model(x)
        branches = model.clas.conv2d_list
        expected = torch.nn.functional.interpolate(branches[0](features) + branches[1](features), size=(40, 56),
                                                   mode="bilinear", align_corners=True)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("branch,changes", [(0, True), (1, True), (2, False), (3, False)])
def test_only_the_first_two_classifier_branches_are_used(model, branch, changes):
    x = torch.randn(1, 3, 33, 41)
    with torch.inference_mode():
        before, _ = model(x)
        conv = model.clas.conv2d_list[branch]
        saved = conv.weight.clone(), conv.bias.clone()
        conv.weight.add_(torch.randn_like(conv.weight) * 0.1)
        conv.bias.add_(1.0)
        after, _ = model(x)
        conv.weight.copy_(saved[0])
        conv.bias.copy_(saved[1])
    assert (not torch.allclose(before, after)) == changes


def test_unknown_backbone_is_rejected():
    with pytest.raises(ValueError, match="ResNet101"):
        DeeplabNW(19, "ResNet101")


# --------------------------------------------------------------------------- checkpoints

def test_loads_dataparallel_checkpoint_format(model, tmp_path):
    path = tmp_path / "cityscapesfinal.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    loaded = load_deeplab(path)
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_accepts_plain_state_dict(model):
    state = extract_deeplab_state_dict(model.state_dict())
    assert list(state) == list(model.state_dict())


def test_rejects_other_architecture_naming_file_and_keys(tmp_path):
    path = tmp_path / "sympie.pth"
    torch.save(ColModule().state_dict(), path)
    with pytest.raises(UserInputError, match="sympie.pth") as info:
        load_deeplab(path)
    message = str(info.value)
    assert "missing keys: conv1.weight" in message and "unexpected keys: backbone.0.weight" in message
    assert "\n" not in message


def test_rejects_wrong_number_of_classes(model):
    state = model.state_dict()
    state["clas.conv2d_list.0.weight"] = torch.zeros(7, 2048, 3, 3)
    with pytest.raises(UserInputError, match="wrong shapes: clas.conv2d_list.0.weight"):
        extract_deeplab_state_dict(state)


def test_missing_and_unreadable_checkpoints(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_deeplab(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="garbage.pth"):
        load_deeplab(garbage)
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    with pytest.raises(UserInputError, match="not a state_dict"):
        load_deeplab(listed)


def test_checkpoint_with_python_objects_needs_trust(model, tmp_path):
    path = tmp_path / "with_config.pth"
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "config": argparse.Namespace(lr=2.5e-4)}, path)
    with pytest.raises(UserInputError, match="--trust-checkpoint"):
        load_deeplab(path)
    loaded = load_deeplab(path, trusted=True)
    assert torch.equal(loaded.conv1.weight, model.conv1.weight)


# --------------------------------------------------------------------------- Caffe input

def test_caffe_renorm_matches_definition():
    rgb01 = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    x = normalize(rgb01).float()
    mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    expected = (rgb01 * 255)[:, [2, 1, 0]] - mean
    torch.testing.assert_close(CaffeRenorm()(x).double(), expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(imagenet_to_caffe(x), CaffeRenorm()(x))


def test_caffe_renorm_of_the_imagenet_mean_image():
    x = torch.zeros(1, 3, 2, 2)  # ImageNet mean colour
    out = CaffeRenorm()(x)
    for c, (m, caffe) in enumerate(zip(IMAGENET_MEAN[::-1], CAFFE_MEAN_BGR)):
        torch.testing.assert_close(out[0, c], torch.full((2, 2), 255 * m - caffe), atol=1e-4, rtol=0)


def test_imagenet_input_wrapper_feeds_caffe_input():
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.sum()

    x = torch.randn(1, 3, 4, 4)
    ImagenetInput(Probe())(x)
    torch.testing.assert_close(seen["x"], CaffeRenorm()(x))
