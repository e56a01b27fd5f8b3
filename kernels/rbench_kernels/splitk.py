"""Split-K's second pass: sum a launch's fp32 partials in a fixed order, then the fused epilogue.

A launch too small to fill the GPU (`_launch.py`) splits its reduction S ways: program (tile, s)
stores its fp32 partial sum to `part[s]`, a (S, N·P·Q, K) buffer, instead of running the epilogue.
This kernel adds the S partials of each output element in split order and applies BatchNorm,
residual and ReLU, writing y once.  Chosen over fp32 atomics into a zeroed buffer: the sum is
bitwise reproducible from run to run (the correctness gate compares runs), nothing has to be zeroed
first, and the epilogue (ReLU, the cast to fp16) needs the complete sum anyway, so atomics would
need this second pass too.  Its cost is small where it is used: the partials of a launch that has
fewer than one wave of 128x128 tiles are at most a few MB.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._gemm import bn_act_store, output_pixels


@triton.jit
def splitk_reduce_kernel(
    # fp32 partial sums (splits, N·P·Q, K), dense
    part_ptr, splits,
    # epilogue (_gemm.Epilogue.args; its part_ptr slot is not read here)
    scale_ptr, shift_ptr, res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, unused_ptr,
    # sizes
    N, K, P, Q,
    # meta-parameters
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    M = N * P * Q
    offs_m, m_ok, n, p, q = output_pixels(tl.program_id(0), N, P, Q, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K
    mask = m_ok[:, None] & n_ok[None, :]
    ptrs = part_ptr + offs_m[:, None] * K + offs_n[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, splits):
        acc += tl.load(ptrs, mask=mask, other=0.0)
        ptrs += M * K
    bn_act_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, M, K, scale_ptr, shift_ptr,
                 res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, unused_ptr,
                 HAS_RESIDUAL, RELU, False)


# (BLOCK_M, BLOCK_N, num_warps): one config everywhere.  The pass is a streaming read of S partials
# per output; 32x128 tiles give 16-byte accesses along K and few registers.
CONFIG = (32, 128, 4)


def reduce_grid(rows: int, cols: int) -> tuple[int, int]:
    return triton.cdiv(rows, CONFIG[0]), triton.cdiv(cols, CONFIG[1])
