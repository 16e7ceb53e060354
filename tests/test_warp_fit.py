"""classification/training/warp_fit.py: the least-squares warp recovers parameters it is given."""
from __future__ import annotations

import pytest
import torch

from classification.training.model import IDENTITY_PARAMS, col_warp
from classification.training.warp_fit import fit_warp


def colour_params(b: int, generator: torch.Generator) -> torch.Tensor:
    matrix = torch.eye(3) + 0.3 * torch.randn(b, 3, 3, generator=generator)
    shift = 0.5 * torch.randn(b, 3, generator=generator)
    return torch.cat([matrix.reshape(b, 9), shift, torch.tensor(IDENTITY_PARAMS[12:]).expand(b, 25)], 1).double()


def test_fit_recovers_a_colour_warp_exactly():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 40, 36, generator=generator, dtype=torch.float64)
    params = colour_params(3, generator)
    for kernel in (False, True):  # the identity kernel is fitted exactly too
        fitted = fit_warp(images, col_warp(images, params), kernel=kernel)
        assert fitted.dtype == images.dtype
        assert torch.allclose(fitted, params, atol=1e-6)  # the matrix, the shift and the kernel in their order


def test_alternating_rounds_lower_the_error_down_to_an_exact_blur():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 32, 32, generator=generator, dtype=torch.float64)
    kernel = torch.rand(2, 25, generator=generator, dtype=torch.float64)
    blur = torch.cat([torch.tensor(IDENTITY_PARAMS[:12]).double().expand(2, 12), kernel / kernel.sum(1, keepdim=True)], 1)
    coloured = col_warp(col_warp(images, colour_params(2, generator)), blur)
    for target, gain in ((col_warp(images, blur), 1e-3), (coloured, 0.1)):
        errors = [(col_warp(images, fit_warp(images, target, rounds=r)) - target).pow(2).mean() for r in range(6)]
        assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(errors, errors[1:]))
        assert errors[-1] < gain * errors[0]
    assert torch.equal(fit_warp(images, coloured, kernel=False), fit_warp(images, coloured, rounds=0))


def test_fit_of_an_image_onto_itself_is_the_identity_and_flat_images_stay_finite():
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(fit_warp(images, images), torch.tensor(IDENTITY_PARAMS).expand(2, 37), atol=1e-3)
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert torch.isfinite(fit_warp(flat, torch.rand(1, 3, 8, 8))).all()


def test_fit_refuses_images_of_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        fit_warp(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
