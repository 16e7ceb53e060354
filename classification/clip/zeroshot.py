"""Zero-shot CLIP RN50 as an ImageNet classifier (``--clas clip``).

The image goes through CLIP's visual tower after re-normalising from ImageNet to CLIP statistics; the
logits are the cosine similarities between the image embedding and 1000 class embeddings. The class
embeddings are the text embeddings of "A photo of a {name}." for open_clip's ImageNet class names
(``templates="single"``, the authors' protocol) or the mean of the 80 OpenAI prompt templates
(``templates="ensemble"``). They are computed once and cached to a file.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

from classification.checkpoint import read_checkpoint, save_checkpoint
from classification.distributed import resolve_device
from classification.errors import UserInputError
from classification.normalization import Renormalize

log = logging.getLogger(__name__)

MODEL_NAME = "RN50"
PRETRAINED = "openai"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SINGLE_TEMPLATE = "A photo of a {}."
TEMPLATE_MODES = ("single", "ensemble")
TEXT_BATCH = 250


def prompt_templates(mode: str) -> list[Callable[[str], str]]:
    """The prompt(s) of ``mode``: ``single`` ("A photo of a {name}.") or ``ensemble`` (OpenAI's 80)."""
    if mode == "single":
        return [SINGLE_TEMPLATE.format]
    if mode == "ensemble":
        return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    raise UserInputError(f"unknown CLIP template mode '{mode}'; choose one of {', '.join(TEMPLATE_MODES)}.")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sympie" / "clip"


@torch.inference_mode()
def encode_class_embeddings(model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
                            templates: Sequence[Callable[[str], str]], batch_size: int = TEXT_BATCH) -> torch.Tensor:
    """(classes, D) unit-norm class embeddings: per class, the normalised mean of its normalised prompt embeddings."""
    device = next(model.parameters()).device
    prompts = [template(name) for name in classnames for template in templates]
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start:start + batch_size]).to(device)
        chunks.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
    per_prompt = torch.cat(chunks).view(len(classnames), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1).cpu()


def cached_class_embeddings(cache_file: Path, compute: Callable[[], torch.Tensor], key: dict) -> torch.Tensor:
    """Load the embeddings from ``cache_file`` if it was written for ``key``; otherwise compute and save atomically."""
    if cache_file.is_file():
        try:
            saved = read_checkpoint(cache_file, "CLIP embedding cache", if_damaged="it is rebuilt")
        except UserInputError as err:  # a damaged cache is simply rebuilt
            log.warning("ignoring the unreadable CLIP embedding cache: %s", err)
        else:
            embeddings = saved.get("embeddings") if isinstance(saved, dict) and saved.get("key") == key else None
            if isinstance(embeddings, torch.Tensor):
                return embeddings
            log.info("%s was written for other settings; recomputing the CLIP class embeddings", cache_file)
    embeddings = compute()
    try:
        save_checkpoint({"key": key, "embeddings": embeddings}, cache_file)
    except (OSError, UserInputError) as err:  # a read-only or full cache: the embeddings are right, only not kept
        log.warning("could not cache the CLIP class embeddings in %s (%s); set XDG_CACHE_HOME to a writable folder "
                    "to keep them", cache_file, getattr(err, "strerror", None) or err)
        return embeddings
    log.info("cached CLIP class embeddings in %s", cache_file)
    return embeddings


class ZeroShotClassifier(nn.Module):
    """Image tower + fixed class embeddings: CLIP-normalised images -> cosine similarity with each class."""

    def __init__(self, visual: nn.Module, class_embeddings: torch.Tensor):
        super().__init__()
        self.visual = visual
        self.register_buffer("class_embeddings", class_embeddings.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.normalize(self.visual(x).float(), dim=-1)
        return features @ self.class_embeddings.t()


def _create_clip(pretrained: bool) -> nn.Module:
    if not pretrained:
        return open_clip.create_model(MODEL_NAME, pretrained=None)
    try:
        return open_clip.create_model(MODEL_NAME, pretrained=PRETRAINED)
    except Exception as err:  # noqa: BLE001 - offline hub, proxy, partial download ...
        raise UserInputError(
            f"the CLIP {MODEL_NAME} '{PRETRAINED}' weights are not cached and could not be downloaded "
            f"({type(err).__name__}); run once on a machine with network (they go to the Hugging Face cache, "
            f"$HF_HOME) and copy the cache here.") from None


def build_clip_classifier(pretrained: bool = True, templates: str = "single",
                          cache_dir: str | os.PathLike | None = None,
                          device: str | torch.device | None = None) -> nn.Module:
    """Zero-shot CLIP RN50: ImageNet-normalised (B,3,224,224) -> (B,1000) cosine similarities, eval mode.

    The class embeddings, when not cached, are encoded on ``device`` (the script's ``--device``, resolved by
    :func:`classification.distributed.resolve_device`; default: this process's GPU when there is one).

    With ``pretrained=False`` the weights are random and so are the class embeddings (encoding 80,000
    prompts with a random text tower would be slow and meaningless); nothing is downloaded or cached.
    """
    modes = prompt_templates(templates)
    model = _create_clip(pretrained).eval()
    classnames = list(open_clip.IMAGENET_CLASSNAMES)
    if pretrained:
        cache_file = Path(cache_dir or default_cache_dir()) / f"{MODEL_NAME}_{PRETRAINED}_{templates}.pt"
        key = {"model": MODEL_NAME, "pretrained": PRETRAINED, "templates": templates, "classes": len(classnames)}
        tokenizer = open_clip.get_tokenizer(MODEL_NAME)

        def compute() -> torch.Tensor:  # the 80-template ensemble is 80,000 prompts
            encoder = model.to(resolve_device(device))
            try:
                return encode_class_embeddings(encoder, tokenizer, classnames, modes)
            finally:
                model.to("cpu")

        embeddings = cached_class_embeddings(cache_file, compute, key)
    else:
        generator = torch.Generator().manual_seed(0)
        width = model.text_projection.shape[1]
        embeddings = F.normalize(torch.randn(len(classnames), width, generator=generator), dim=-1)
    classifier = ZeroShotClassifier(model.visual, embeddings)
    return Renormalize(classifier, CLIP_MEAN, CLIP_STD).eval().requires_grad_(False)
