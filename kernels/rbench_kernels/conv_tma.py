"""The stride-1 3x3 convolution on Hopper: an implicit GEMM whose taps are shifted 4-D TMA boxes.

Over NHWC input, the A operand of tap (r, s) for a tile of output pixels (n, p0.., q0..) is the
input box (n, p0 - pad + r·dil.., q0 - pad + s·dil.., c0..c0+BLOCK_K): one 4-D tensor-descriptor
load per tap and channel block instead of a per-element gather.  Boxes that hang over the image's
edge come back zero-filled from the copy engine, which is exactly the convolution's zero padding,
so the loop has no masks and no address math.  The price: a tile is a BOX_H x BOX_W rectangle of
output pixels, and where P or Q is not a multiple of it part of the MMA work is on pixels that do
not exist (`box_efficiency`; README: the 3x3 implicit GEMM has the numbers).  Output and residual
move through 4-D boxes too.

`conv.py` decides between this path and its gathers (`tma_unsupported`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import Target, ensure_allocator, tma_refusal
from ._gemm import ConfigKind, ConfigRows, Epilogue, bn_act, dot_acc, grouped_tile, split_range, store_partial
from ._launch import GemmLauncher, Problem, Tiling


@triton.jit
def conv_tma_kernel(
    # x: dense NHWC (N, H, W, C); weight: dense (K, R, S, C)
    x_ptr, w_ptr,
    # epilogue (_gemm.Epilogue.args): scale, shift fp32 (K,); residual and y dense NHWC (N, P, Q, K)
    # (the residual's strides are not read); fp32 split-K partials (splits, N·P·Q, K)
    scale_ptr, shift_ptr, res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, part_ptr,
    # sizes and geometry (stride > 1 only for 1x1 kernels without padding: see tma_unsupported)
    N, C, H, W, K, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreting bf16, tl.dot on fp32 tiles: bf16 math there is on raw bits (triton#11584)
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    BOX_W: tl.constexpr,  # output pixels per tile row; BLOCK_M // BOX_W rows (_TapTiling.extra)
):
    BOX_H: tl.constexpr = BLOCK_M // BOX_W
    # x as (N, H / stride, W / stride, C): the descriptor's strides step over pixels
    x_desc = tl.make_tensor_descriptor(
        x_ptr, shape=[N, tl.cdiv(H, stride_h), tl.cdiv(W, stride_w), C],
        strides=[H * W * C, stride_h * W * C, stride_w * C, 1], block_shape=[1, BOX_H, BOX_W, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(
        w_ptr, shape=[K, R * S, C], strides=[R * S * C, C, 1], block_shape=[BLOCK_N, 1, BLOCK_K])
    y_desc = tl.make_tensor_descriptor(
        y_ptr, shape=[N, P, Q, K], strides=[P * Q * K, Q * K, K, 1], block_shape=[1, BOX_H, BOX_W, BLOCK_N])
    r_desc = tl.make_tensor_descriptor(
        res_ptr, shape=[N, P, Q, K], strides=[P * Q * K, Q * K, K, 1], block_shape=[1, BOX_H, BOX_W, BLOCK_N])

    # tiles: BOX_H x BOX_W rectangles of one image's output pixels, in grouped order
    boxes_h = tl.cdiv(P, BOX_H)
    boxes = boxes_h * tl.cdiv(Q, BOX_W)
    pid_m, pid_n = grouped_tile(tl.program_id(0), N * boxes * BLOCK_M, K, BLOCK_M, BLOCK_N, GROUP_M)
    n = pid_m // boxes
    p0 = (pid_m % boxes) % boxes_h * BOX_H
    q0 = (pid_m % boxes) // boxes_h * BOX_W
    off_n = pid_n * BLOCK_N

    # One loop over (tap, channel block), this program's share of it; no masks: the copy engine
    # zero-fills what lies outside the image (the padding) and beyond C.
    num_cb = tl.cdiv(C, BLOCK_K)
    i_lo, i_hi = split_range(R * S * num_cb)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in range(i_lo, i_hi):
        rs = i // num_cb
        c0 = (i - rs * num_cb) * BLOCK_K
        r = rs // S
        s = rs - r * S
        a = x_desc.load([n, p0 + r * dil_h - pad_h, q0 + s * dil_w - pad_w, c0]).reshape(BLOCK_M, BLOCK_K)
        b = w_desc.load([off_n, rs, c0]).reshape(BLOCK_N, BLOCK_K)
        acc = dot_acc(a, b.T, acc, UPCAST, DOT_PRECISION)

    offs_n = off_n + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K
    if SPLIT_K:
        px = tl.arange(0, BLOCK_M)
        p = p0 + px // BOX_W
        q = q0 + px % BOX_W
        store_partial(acc, (n * P + p) * Q + q, offs_n, (p < P) & (q < Q), n_ok, N * P * Q, K, part_ptr)
    else:
        res = acc
        if HAS_RESIDUAL:
            res = r_desc.load([n, p0, q0, off_n]).reshape(BLOCK_M, BLOCK_N)
        y = bn_act(acc, offs_n, n_ok, scale_ptr, shift_ptr, res, HAS_RESIDUAL, RELU)
        y_desc.store([n, p0, q0, off_n], y.to(y_desc.dtype).reshape(1, BOX_H, BOX_W, BLOCK_N))


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), Hopper only.  Each has a 64-row sibling, the
# box that fits 7x7 and 14x14 images best.
CONFIGS: ConfigRows = {
    "sm90": {
        ConfigKind.HALF: [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4)],
        ConfigKind.SMALL: [(64, 64, 64, 4, 4), (64, 32, 64, 4, 4)],
        ConfigKind.FP32: [(128, 64, 32, 8, 3), (64, 64, 32, 4, 3)],
    },
}

AUTOTUNE_KEY = ["C", "H", "W", "K", "P", "Q", "pad_h", "pad_w", "dil_h", "dil_w", "R", "S",
                "HAS_RESIDUAL", "RELU", "DOT_PRECISION", "SPLIT_K"]

# a launch takes this path only if some box wastes less than this share of its MMA work
MIN_BOX_EFFICIENCY = 0.7


def box_width(p: int, q: int, block_m: int) -> int:
    """The BOX_W (a power of two) whose BLOCK_M-pixel boxes cover a P x Q image with the least waste."""
    widths = [1 << i for i in range(block_m.bit_length()) if (1 << i) <= block_m]
    return min(reversed(widths), key=lambda w: triton.cdiv(p, block_m // w) * (block_m // w) * triton.cdiv(q, w) * w)


def box_efficiency(p: int, q: int, block_m: int) -> float:
    """Useful share of the MMA work of BLOCK_M-pixel boxes over a P x Q image (1.0: no waste)."""
    w = box_width(p, q, block_m)
    h = block_m // w
    return p * q / (triton.cdiv(p, h) * h * triton.cdiv(q, w) * w)


class _TapTiling(Tiling):
    """Tiles are boxes of output pixels; BOX_W derives from the image size and BLOCK_M."""

    def row_tiles(self, pr: Problem, cfg: dict) -> int:
        w = cfg.get("BOX_W") or box_width(pr.p, pr.q, cfg["BLOCK_M"])
        h = cfg["BLOCK_M"] // w
        return pr.n * triton.cdiv(pr.p, h) * triton.cdiv(pr.q, w)

    def extra(self, pr: Problem, cfg: dict) -> dict:
        return {"BOX_W": box_width(pr.p, pr.q, cfg["BLOCK_M"])}

    def suits(self, pr: Problem, cfg: dict) -> bool:
        return box_efficiency(pr.p, pr.q, cfg["BLOCK_M"]) >= MIN_BOX_EFFICIENCY


_launch = GemmLauncher(
    conv_tma_kernel, CONFIGS, AUTOTUNE_KEY, families=("sm90",), tiling=_TapTiling(),
    problem=lambda a: Problem(a["N"], a["P"], a["Q"], a["K"], a["C"], a["R"] * a["S"]),
)


def _dense_aligned(t: torch.Tensor) -> bool:
    """TMA's rules for a channels_last tensor: dense, 16-byte aligned base and pixel pitch."""
    return (t.is_contiguous(memory_format=torch.channels_last) and t.data_ptr() % 16 == 0
            and (t.shape[1] * t.element_size()) % 16 == 0)


def tma_unsupported(x: torch.Tensor, weight: torch.Tensor, geometry: tuple[int, ...], groups: int,
                    ep: Epilogue, tgt: Target, precision: str) -> str:
    """Why this path cannot take the launch ('' when it can): the explicit check before any launch.

    x and weight are channels_last; geometry is (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w),
    precision the launch's DOT_PRECISION."""
    c, k = x.shape[1], weight.shape[0]
    p, q = ep.shape[2:]
    refusal = tma_refusal(tgt, x.dtype, precision)
    if refusal:
        return refusal
    if groups != 1:
        return "grouped convolution: the gathers mask other groups' channels"
    if c < 16:
        return f"{c} input channels: the flattened taps (the stem)"
    if geometry[:2] != (1, 1):
        return "stride > 1: a box cannot step over pixels (the gathers)"
    tensors = {"x": x, "weight": weight, "y": ep.y}
    if ep.residual is not None:
        tensors["residual"] = ep.residual
    bad = [name for name, t in tensors.items() if not _dense_aligned(t)]
    if bad:
        return f"{', '.join(bad)} break TMA's 16-byte rules (C={c}, K={k}, {x.dtype})"
    # 64 rows: the smallest BLOCK_M here and the interpreter's
    if box_efficiency(p, q, 64) < MIN_BOX_EFFICIENCY:
        return f"a {p}x{q} output wastes {1 - box_efficiency(p, q, 64):.0%} of 64-pixel boxes"
    return ""


def launch(x: torch.Tensor, weight: torch.Tensor, geometry: tuple[int, ...], ep: Epilogue, meta: dict,
           kind: ConfigKind) -> None:
    """Run the tap-descriptor path (after `tma_unsupported` said yes)."""
    n, c, h, w = x.shape
    k, _, r, s = weight.shape
    _, _, p, q = ep.shape
    device = x.device
    _launch((x, weight), (n, c, h, w, k, p, q, *geometry), ep, {**meta, "R": r, "S": s}, kind=kind,
            device=device, before=lambda: ensure_allocator(device))
