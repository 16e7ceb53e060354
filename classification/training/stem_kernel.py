"""Triton kernel for the NEM's stem on CUDA: conv 3->64 (3x3, padding 1) + bias + ReLU + AvgPool(5, 4, 1).

Each program computes ``BLOCK`` pooled pixels of one image for all 64 channels. For each of the 25
pixels of the pooling window it gathers the 27 input values around it and multiplies them by the
(27, 64) weight matrix (``tl.dot``), adds the bias, applies the ReLU and accumulates; pixels of the
window outside the image are the pool's zero padding. The full-resolution 64-channel tensor is never
written: the stem is recomputed for the pixel shared by neighbouring windows (25/16 of the stem's
arithmetic) to read only the 3-channel input. float32 inputs multiply in IEEE float32 (no TF32);
float16 and bfloat16 inputs in their own precision with a float32 accumulator, like cuDNN under autocast
(the interpreter multiplies bfloat16 matrices wrongly, so there the rounded operands are multiplied in
float32, which gives the same exact products).

``TRITON_INTERPRET=1`` runs the kernel on CPU tensors (tests/test_inference.py).
"""
from __future__ import annotations

import importlib.util
import os

import torch

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BLOCK = 64          # pooled pixels per program
TAPS = 27           # 3 input channels x 3x3 kernel, padded to 32 for tl.dot
MAX_GRID_Y = 65535  # CUDA's limit on the second grid dimension (the batch)


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def unavailable_reason(x: torch.Tensor) -> str | None:
    """Why the kernel cannot take ``x`` (one phrase), or None when it can."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if not (x.is_cuda or interpreted()):
        return f"the Triton kernel runs on CUDA tensors, not on {x.device.type}"
    if x.dtype not in KERNEL_DTYPES:
        return f"the Triton kernel takes float32, float16 or bfloat16 images, not {x.dtype}"
    return None


def stem_pool_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``avg_pool2d(relu(conv2d(x, W, b, padding=1)), 5, 4, 1)`` for ``W, b`` already divided by 25.

    Returns a channels-last (B,64,Ho,Wo) tensor in the autocast dtype where autocast is on, else ``x``'s.
    """
    import triton

    kernel = build_kernel()
    b, _, h, w = x.shape
    ho, wo = (h - 3) // 4 + 1, (w - 3) // 4 + 1
    channels = weight.shape[0]
    device = x.device.type
    out_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    out = torch.empty((b, ho, wo, channels), dtype=out_dtype, device=x.device).permute(0, 3, 1, 2)
    if out.numel() == 0:
        return out
    operand = torch.float32 if x.dtype == torch.float32 else x.dtype
    taps = weight.to(operand).reshape(channels, TAPS).t().contiguous()  # (27, C): row = channel*9 + ky*3 + kx
    bias = bias.float().contiguous()
    precision = "ieee" if x.dtype == torch.float32 or interpreted() else "tf32"  # ignored for 16-bit operands
    for start in range(0, b, MAX_GRID_Y):
        xs, outs = x[start:start + MAX_GRID_Y], out[start:start + MAX_GRID_Y]
        grid = (triton.cdiv(ho * wo, BLOCK), xs.shape[0])
        kernel[grid](xs, taps, bias, outs, h, w, ho, wo, *xs.stride(), *outs.stride(),
                     CHANNELS=channels, BLOCK=BLOCK, PRECISION=precision,
                     UPCAST=interpreted() and x.dtype == torch.bfloat16)
    return out


_kernel = None


def build_kernel():
    """The jitted kernel, defined on first use (importing Triton is slow and not needed on the CPU)."""
    global _kernel
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    @triton.jit
    def stem_pool_kernel(x_ptr, w_ptr, b_ptr, out_ptr, H, W, HO, WO,
                         sxb, sxc, sxh, sxw, sob, soc, soh, sow,
                         CHANNELS: tl.constexpr, BLOCK: tl.constexpr, PRECISION: tl.constexpr,
                         UPCAST: tl.constexpr):
        pix = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        n = tl.program_id(1)
        inside = pix < HO * WO
        i = pix // WO
        j = pix % WO
        k = tl.arange(0, 32)
        tap = k < 27
        ch = k // 9
        ky = (k % 9) // 3 - 1
        kx = k % 3 - 1
        co = tl.arange(0, CHANNELS)
        weights = tl.load(w_ptr + k[:, None] * CHANNELS + co[None, :], mask=tap[:, None], other=0.0)
        if UPCAST:  # exact products of the rounded operands, as the tensor cores compute them
            weights = weights.to(tl.float32)
        bias = tl.load(b_ptr + co)
        image = x_ptr + n.to(tl.int64) * sxb
        acc = tl.zeros((BLOCK, CHANNELS), dtype=tl.float32)
        for dy in tl.static_range(5):
            for dx in tl.static_range(5):
                r = 4 * i - 1 + dy
                c = 4 * j - 1 + dx
                valid = inside & (r >= 0) & (r < H) & (c >= 0) & (c < W)
                xr = r[:, None] + ky[None, :]
                xc = c[:, None] + kx[None, :]
                m = valid[:, None] & tap[None, :] & (xr >= 0) & (xr < H) & (xc >= 0) & (xc < W)
                patch = tl.load(image + ch[None, :] * sxc + xr * sxh + xc * sxw, mask=m, other=0.0)
                if UPCAST:
                    patch = patch.to(tl.float32)
                conv = tl.dot(patch, weights, input_precision=PRECISION) + bias[None, :]
                acc += tl.where(valid[:, None], tl.maximum(conv, 0.0), 0.0)
        dst = out_ptr + n.to(tl.int64) * sob + co[None, :] * soc + i[:, None] * soh + j[:, None] * sow
        tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=inside[:, None])

    _kernel = stem_pool_kernel
    return _kernel
