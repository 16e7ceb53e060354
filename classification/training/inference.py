"""The NEM for inference: the same arithmetic as :class:`~classification.training.model.ColModule` in eval
mode, with little else.

* BatchNorm is folded into the convolution before it (``bn2`` into ``conv2``, the stem's into the stem);
  ``bn1`` stays a per-channel affine because ``conv1``'s output is also the block's skip connection.
* The stem (conv 3->64, bias, ReLU) and the average pool after it (5x5, stride 4, padding 1, divisor 25):
  on CUDA one Triton kernel (:mod:`classification.training.stem_kernel`) that never writes the
  full-resolution 64-channel tensor; elsewhere :func:`stem_pool_chunked`, which writes it once per chunk
  of 32 images (BatchNorm folded, ReLU in place) and pools it. The 1/25 of the pool is folded into the
  stem (ReLU commutes with a positive scale).

:class:`FusedNEM` is what ``SyMPIE.from_checkpoint`` returns inside SyMPIE; training keeps ``ColModule``.
Its outputs equal ``ColModule``'s up to float rounding (tests/test_inference.py).
"""
from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from classification.training.model import ColModule, ConvBlock, check_images

log = logging.getLogger(__name__)

POOL_DIVISOR = 25         # AvgPool2d(5, stride 4, padding 1) counts the padding: always 25 pixels
IMAGES_PER_CHUNK = 32     # images per stem chunk on the CPU (stem_pool_chunked)


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``bn(conv(x))`` as one convolution: the folded (weight, bias), computed in float64."""
    scale, shift = batchnorm_affine(bn)
    folded_weight = weight.double() * scale.double()[:, None, None, None]
    folded_bias = bias.double() * scale.double() + shift.double()
    return folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode ``bn(x) == x * scale + shift`` per channel (float64)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.double() - bn.running_mean.double() * scale


class FusedBlock(nn.Module):
    """:class:`~classification.training.model.ConvBlock` with ``bn2`` folded into ``conv2``."""

    def __init__(self, block: ConvBlock):
        super().__init__()
        scale, shift = batchnorm_affine(block.bn1)
        dtype = block.conv1.weight.dtype
        self.register_buffer("conv1_weight", block.conv1.weight.detach().clone())
        self.register_buffer("conv1_bias", block.conv1.bias.detach().clone())
        self.register_buffer("bn1_scale", scale.to(dtype).view(1, -1, 1, 1))
        self.register_buffer("bn1_shift", shift.to(dtype).view(1, -1, 1, 1))
        conv2_weight, conv2_bias = fold_batchnorm(block.conv2.weight.detach(), block.conv2.bias.detach(), block.bn2)
        self.register_buffer("conv2_weight", conv2_weight)
        self.register_buffer("conv2_bias", conv2_bias)

    def forward(self, x: torch.Tensor, pooled: bool = False) -> torch.Tensor:
        """``pooled``: ``x`` is already the average pool of the block's input (the fused stem's output)."""
        x0 = F.conv2d(x if pooled else F.avg_pool2d(x, 5, 4, 1), self.conv1_weight, self.conv1_bias, padding=1)
        hidden = torch.addcmul(self.bn1_shift.to(x0.dtype), x0, self.bn1_scale.to(x0.dtype)).relu_()
        return x0 + F.conv2d(hidden, self.conv2_weight, self.conv2_bias, padding=1).relu_()


class FusedNEM(nn.Module):
    """Eval-only NEM with folded BatchNorm and the fused stem + pool: ``FusedNEM(col_module)(x) -> (B,37)``.

    The weights are buffers copied from ``nem`` (later changes to ``nem`` are not seen). ``train()`` is
    refused: train the plain ``ColModule``.
    """

    def __init__(self, nem: ColModule):
        super().__init__()
        stem, stem_bn = nem.backbone[0], nem.backbone[1]
        weight, bias = fold_batchnorm(stem.weight.detach(), stem.bias.detach(), stem_bn)
        self.register_buffer("stem_weight", weight / POOL_DIVISOR)
        self.register_buffer("stem_bias", bias / POOL_DIVISOR)
        self.blocks = nn.ModuleList(FusedBlock(block) for block in nem.backbone[3:])
        self.out = copy.deepcopy(nem.out).requires_grad_(False)  # the output layer is ColModule's
        self.eval()

    def train(self, mode: bool = True) -> "FusedNEM":
        if mode:
            raise RuntimeError("a fused SyMPIE is for inference only; load it with "
                               "SyMPIE.from_checkpoint(path, fused=False) or use ColModule to train")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.out.weight.dtype)
        h = stem_pool(x, self.stem_weight, self.stem_bias)
        for i, block in enumerate(self.blocks):
            h = block(h, pooled=i == 0)
        return self.out(h.mean((2, 3)))


def stem_pool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``avg_pool2d(relu(conv2d(x, W, b, padding=1)), 5, 4, 1)`` with ``W, b`` already divided by 25 (so
    the pool is a plain sum): the Triton kernel on CUDA, a chunk of images at a time elsewhere; one convolution
    while ``torch.compile`` or ``torch.export`` trace it (a graph of any batch size, which the compiler fuses)."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return stem_pool_plain(x, weight, bias)
    if x.is_cuda:
        from classification.training import stem_kernel
        reason = stem_kernel.unavailable_reason(x)
        if reason is None:
            return stem_kernel.stem_pool_triton(x, weight, bias)
        warn_fallback_once(reason)
        return stem_pool_plain(x, weight, bias)
    return stem_pool_chunked(x, weight, bias)


_warned: set[str] = set()


def warn_fallback_once(reason: str) -> None:
    """Log once per reason that the Triton stem is not used (the PyTorch path gives the same numbers)."""
    if reason not in _warned:
        _warned.add(reason)
        log.warning("fused SyMPIE stem: %s; using the PyTorch convolution instead (same results, slower)", reason)


def stem_pool_plain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The reference arithmetic of :func:`stem_pool` as three PyTorch operations."""
    y = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), padding=1).relu_()
    return F.avg_pool2d(y, 5, 4, 1) * POOL_DIVISOR  # not divisor_override: ONNX's AveragePool has none


def stem_pool_chunked(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      images_per_chunk: int = IMAGES_PER_CHUNK) -> torch.Tensor:
    """:func:`stem_pool` ``images_per_chunk`` images at a time: convolution (channels-last, bias folded),
    ReLU in place and the pool as a sum, so the 64-channel stem output exists for one chunk only.

    One image per chunk takes half the CPU time of 32 on an idle machine (its 12.8 MB stay in cache), but
    with other processes on the cores every operation waits for its threads, and fewer, larger operations
    win (benchmarks/README.md); 32 images cap the stem's memory at 411 MB whatever the batch size.
    Returns a channels-last (B,64,Ho,Wo) tensor.
    """
    b = x.shape[0]
    if b == 0:
        return stem_pool_plain(x, weight, bias)
    dtype = compute_dtype(x)
    weight, bias = weight.to(dtype), bias.to(dtype)
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    if b <= images_per_chunk:
        return F.avg_pool2d(F.conv2d(x, weight, bias, padding=1).relu_(), 5, 4, 1, divisor_override=1)
    return torch.cat([F.avg_pool2d(F.conv2d(x[n:n + images_per_chunk], weight, bias, padding=1).relu_(),
                                   5, 4, 1, divisor_override=1) for n in range(0, b, images_per_chunk)])


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a convolution of ``x`` computes in: autocast's where it is on, else ``x``'s."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
