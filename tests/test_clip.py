"""Zero-shot CLIP head: prompts, class-embedding cache, re-normalisation, the random-weight build."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from classification.clip import zeroshot
from classification.clip.zeroshot import (CLIP_MEAN, CLIP_STD, build_clip_classifier, cached_class_embeddings,
                                          encode_class_embeddings, prompt_templates)
from classification.errors import UserInputError
from classification.normalization import normalize

EMBED = 8


class FakeClip(nn.Module):
    """A CLIP-shaped stand-in: text embedding = mean of token embeddings; visual = pooled linear map."""

    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(49408, EMBED)
        self.visual = FakeVisual()
        self.text_projection = nn.Parameter(torch.zeros(EMBED, EMBED))
        self.texts_encoded = 0

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.texts_encoded += len(tokens)
        return self.tokens(tokens).mean(dim=1)


class FakeVisual(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, EMBED)
        self.seen = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return self.proj(x.mean(dim=(2, 3)))


def test_prompt_templates():
    (single,) = prompt_templates("single")
    assert single("tench") == "A photo of a tench."
    assert len(prompt_templates("ensemble")) == 80
    with pytest.raises(UserInputError, match="template mode"):
        prompt_templates("three")


def test_embeddings_are_normalised_means_of_normalised_prompts():
    import open_clip

    model, tokenizer = FakeClip(), open_clip.get_tokenizer("RN50")
    templates = prompt_templates("ensemble")[:3]
    emb = encode_class_embeddings(model, tokenizer, ["tench", "goldfish"], templates, batch_size=4)
    assert emb.shape == (2, EMBED)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2))
    with torch.no_grad():
        per = F.normalize(model.encode_text(tokenizer([t("goldfish") for t in templates])), dim=-1)
    assert torch.allclose(emb[1], F.normalize(per.mean(0), dim=0), atol=1e-6)


def test_cache_is_written_once_and_keyed(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.ones(3, 2)

    path = tmp_path / "emb.pt"
    first = cached_class_embeddings(path, compute, {"templates": "single"})
    second = cached_class_embeddings(path, compute, {"templates": "single"})
    assert len(calls) == 1 and torch.equal(first, second)
    cached_class_embeddings(path, compute, {"templates": "ensemble"})
    assert len(calls) == 2
    path.write_bytes(b"garbage")
    cached_class_embeddings(path, compute, {"templates": "ensemble"})
    assert len(calls) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.pt"]  # no temporary files left


def test_pretrained_path_caches_and_renormalises(tmp_path, monkeypatch):
    fake = FakeClip()
    monkeypatch.setattr(zeroshot, "_create_clip", lambda pretrained: fake)
    model = build_clip_classifier(pretrained=True, cache_dir=tmp_path)
    assert fake.texts_encoded == 1000
    assert (tmp_path / "RN50_openai_single.pt").is_file()
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        logits = model(normalize(images))
    assert logits.shape == (2, 1000)
    assert torch.allclose(fake.visual.seen, normalize(images, CLIP_MEAN, CLIP_STD), atol=1e-5)
    assert logits.abs().max() <= 1 + 1e-5  # cosine similarities

    fake2 = FakeClip()
    monkeypatch.setattr(zeroshot, "_create_clip", lambda pretrained: fake2)
    build_clip_classifier(pretrained=True, cache_dir=tmp_path)
    assert fake2.texts_encoded == 0  # read from the cache


def test_download_failure_is_one_sentence(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(UserInputError, match="could not be downloaded"):
        build_clip_classifier(pretrained=True)


@pytest.mark.slow
def test_random_weights_build_offline():
    model = build_clip_classifier(pretrained=False)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 1000)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
