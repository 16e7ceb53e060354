"""The warp parameters that best map one image onto another (least squares): the ceiling of what SyMPIE's
warp can undo when the clean image is known (``benchmarks/bench_demo_model.py --oracle``).

The warp is linear in its colour part for a fixed kernel and in its kernel for a fixed colour part, so the
fit alternates exact least-squares solutions over all pixels of each image: the colour matrix and shift
``(M, s)``, then the 5x5 kernel (shared by the three channels), and so on. Every solution lowers the squared
error; the result is a local optimum of the joint problem, which is not linear.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from classification.training.model import IDENTITY_PARAMS, check_images, col_warp

RIDGE = 1e-6  # relative to the mean diagonal of each normal matrix: keeps flat images solvable


def _solve_ridge(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``(gram + ridge * I) x = rhs`` for a batch of normal matrices (float64)."""
    n = gram.shape[-1]
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[:, None, None]
    return torch.linalg.solve(gram + RIDGE * scale * torch.eye(n, dtype=gram.dtype, device=gram.device), rhs)


def _blur(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Each image's (B,25) kernel over its three channels: :func:`col_warp` with the identity colour part."""
    identity_colour = torch.tensor(IDENTITY_PARAMS[:12], dtype=images.dtype, device=images.device)
    return col_warp(images, torch.cat([identity_colour.expand(images.shape[0], 12), kernel], 1))


def _fit_colour(images: torch.Tensor, targets: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Least-squares (B,12) colour matrix and shift for a fixed kernel: the kernel commutes with the colour
    matrix, so ``warp(x) = M^T blur(x) + blur(1) M^T s`` is linear in ``M`` and ``M^T s``."""
    b, c, h, w = images.shape
    ones = _blur(images.new_ones(b, c, h, w), kernel)[:, :1]
    x = torch.cat([_blur(images, kernel), ones], 1).flatten(2)  # (B,4,P)
    affine = _solve_ridge(x @ x.transpose(1, 2), x @ targets.flatten(2).transpose(1, 2))  # (B,4,3)
    matrix, bias = affine[:, :c], affine[:, c]
    # M^T s = bias; M is singular for a flat image, where the pseudo-inverse keeps the shift finite
    shift = (torch.linalg.pinv(matrix.transpose(1, 2), rtol=1e-12) @ bias.unsqueeze(-1)).squeeze(-1)
    return torch.cat([matrix.reshape(b, 9), shift], 1)


def _fit_kernel(coloured: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Least-squares (B,25) kernel, shared by the channels, from the colour-corrected images to the targets."""
    b, c, h, w = coloured.shape
    patches = F.unfold(coloured.reshape(b * c, 1, h, w), 5, padding=2)  # (B*3, 25, P), row-major kernel order
    patches = patches.view(b, c, 25, h * w).transpose(1, 2).reshape(b, 25, c * h * w)
    return _solve_ridge(patches @ patches.transpose(1, 2), patches @ targets.reshape(b, c * h * w, 1)).squeeze(-1)


@torch.no_grad()
def fit_warp(images: torch.Tensor, targets: torch.Tensor, kernel: bool = True, rounds: int = 4) -> torch.Tensor:
    """(B,37) warp parameters such that ``col_warp(images, params)`` is close to ``targets`` (both (B,3,H,W)
    ImageNet-normalised): the least-squares colour matrix and shift with the identity kernel, then, if
    ``kernel``, ``rounds`` alternations of the least-squares kernel and colour (each lowers the error)."""
    check_images(images)
    check_images(targets)
    if images.shape != targets.shape:
        raise ValueError(f"images {tuple(images.shape)} and targets {tuple(targets.shape)} differ in shape")
    x, z = images.double(), targets.double()
    identity = torch.tensor(IDENTITY_PARAMS[12:], dtype=torch.float64, device=x.device).expand(x.shape[0], 25)
    k = identity
    colour = _fit_colour(x, z, k)
    for _ in range(rounds if kernel else 0):
        k = _fit_kernel(col_warp(x, torch.cat([colour, identity], 1)), z)
        colour = _fit_colour(x, z, k)
    return torch.cat([colour, k], 1).to(images.dtype)
