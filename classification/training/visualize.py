"""Image tensors for TensorBoard (no plotting library): image grids and signed heatmaps of parameters."""
from __future__ import annotations

import torch
from torchvision.utils import make_grid

from classification.normalization import denormalize
from classification.training.model import split_params


def image_grid(images: torch.Tensor, max_images: int = 8) -> torch.Tensor:
    """ImageNet-normalised (B,3,H,W) -> one (3,H',W') grid in [0, 1] of the first ``max_images``."""
    shown = denormalize(images[:max_images].detach().float().cpu()).clamp_(0, 1)
    return make_grid(shown, nrow=shown.shape[0], padding=2, pad_value=1.0)


def signed_heatmap(values: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """(B,h,w) values -> (B,3,h*cell,w*cell) images: red positive, blue negative, white zero.

    One scale (the largest magnitude) for the whole batch, so that images are comparable.
    """
    values = values.detach().float().cpu()
    scaled = values / values.abs().max().clamp_min(1e-12)
    positive, negative = scaled.clamp(min=0), (-scaled).clamp(min=0)
    rgb = torch.stack([1 - negative, 1 - positive - negative, 1 - positive], dim=1)
    return rgb.repeat_interleave(cell, dim=2).repeat_interleave(cell, dim=3)


def parameter_images(params: torch.Tensor, max_images: int = 8) -> dict[str, torch.Tensor]:
    """Grids of the predicted 4x3 colour parameters (matrix rows, then the shift) and 5x5 kernels."""
    matrix, shift, kernel = split_params(params[:max_images].detach())
    colour = torch.cat([matrix, shift.unsqueeze(1)], dim=1)  # (B,4,3)
    return {
        "colour": make_grid(signed_heatmap(colour), nrow=colour.shape[0], padding=4, pad_value=0.5),
        "kernel": make_grid(signed_heatmap(kernel), nrow=kernel.shape[0], padding=4, pad_value=0.5),
    }
