"""Residual add (+ReLU) for when it is not fused into a conv epilogue: one pass, at memory bandwidth.

Both operands are brought to the same dense memory order (channels_last for 4-D tensors), so the
kernel is a flat elementwise loop over memory: two loads and one store per element.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._common import (
    FAMILIES,
    channels_last,
    check_devices,
    check_same_dtype,
    check_tensor,
    interpreting,
    output,
)
from ._device import device_context, gpu_family


@triton.jit
def add_act_kernel(
    # operands and output, dense and in the same memory order
    x_ptr, r_ptr, y_ptr,
    # number of elements
    numel,
    # meta-parameters
    RELU: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask)
    r = tl.load(r_ptr + offs, mask=mask)
    y = x.to(tl.float32) + r.to(tl.float32)
    if RELU:
        y = tl.maximum(y, 0.0)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


# (BLOCK, num_warps) per GPU family: large blocks of 16-byte vector accesses keep enough bytes in
# flight to saturate HBM.
CONFIGS: dict[str, list[tuple[int, int]]] = {
    "sm90": [(4096, 8), (8192, 8), (2048, 4)],
    "sm80": [(4096, 8), (8192, 8), (2048, 4)],
    "gfx942": [(4096, 8), (8192, 8), (2048, 4)],
}
assert set(CONFIGS) == set(FAMILIES)

INTERPRETER_CONFIG = {"BLOCK": 1024}


@functools.cache
def _tuned(family: str):
    configs = [triton.Config({"BLOCK": b}, num_warps=w, num_stages=1) for b, w in CONFIGS[family]]
    return triton.autotune(configs=configs, key=["numel", "RELU"])(add_act_kernel)


def add_act(
    x: torch.Tensor, residual: torch.Tensor, *, relu: bool = True, out: torch.Tensor | None = None
) -> torch.Tensor:
    """y = act(x + residual) for tensors of one shape and dtype; the sum is formed in fp32.

    Returns x's dtype; 4-D results are channels_last (NCHW operands are converted once per call),
    others contiguous.  `out`, when given, is a preallocated tensor of x's shape, dtype and device in
    that memory format, written and returned.  Forward only.
    """
    check_tensor(x, "x")
    check_tensor(residual, "residual")
    check_same_dtype(x, residual, "residual")
    if x.shape != residual.shape:
        raise ValueError(f"residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    check_devices({"x": x, "residual": residual})

    # 4-D tensors are computed and returned channels_last (NCHW operands are converted once);
    # anything else in row-major order.
    if x.dim() == 4:
        x, residual = channels_last(x), channels_last(residual)
        fmt = torch.channels_last
    else:
        x, residual = x.contiguous(), residual.contiguous()
        fmt = torch.contiguous_format
    out = output(tuple(x.shape), x, out, fmt)
    numel = x.numel()
    if numel == 0:
        return out

    def grid(cfg):
        return (triton.cdiv(numel, cfg["BLOCK"]),)

    if interpreting():
        add_act_kernel[grid(INTERPRETER_CONFIG)](x, residual, out, numel, RELU=bool(relu), **INTERPRETER_CONFIG)
    else:
        tuned = _tuned(gpu_family(x.device))  # UnsupportedTarget where no configs are shipped
        with device_context(x.device):
            tuned[grid](x, residual, out, numel, RELU=bool(relu))
    return out
