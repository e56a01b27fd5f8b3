"""Quantized convolution: int8 or fp8 (e4m3) operands, int32 / fp32 accumulation, a quantizing epilogue.

fp8 comes in two e4m3 encodings: OCP's `float8_e4m3fn` (max 448; NVIDIA's fp8 tensor cores) and the
`float8_e4m3fnuz` of AMD's MI300 (gfx942: exponent bias 8, max 240, no negative zero), whose MFMAs
take only fnuz: Triton lowers an e4m3fn dot there to fp16 MFMAs with software conversions (8 fp16
MFMAs and no fp8 one for a 64x64x64 tile), so gfx942 runs fnuz operands (`rbench kernels check`).

One implicit-GEMM kernel serves every quantized convolution (R x S taps, any stride, padding and
dilation, groups 1); a 1x1 convolution is the case R = S = 1, padding 0.  The epilogue computes in
fp32, in this order (`rbench_kernels.reference` does exactly the same operations):

    y = float(acc) * scale[k] + shift[k]        # scale folds dequantization: s_x * s_w[k] * bn_scale[k]
    y = y + float(residual) * residual_scale    # the residual in x's dtype with its own scale
    y = max(y, 0)                               # relu
    out = quantize(y * (1 / out_scale))         # int8: round half to even, clamp to [-127, 127];
                                                # fp8: clamp to +-448 (fnuz: 240), nearest even e4m3

so that activations stay one byte between layers; without `out_scale` the output is fp32 y.  The int8
accumulator is exact (an int32 sum of int8 products); the fp32 rounding of the epilogue is explicit and
identical in the reference, and GPU launches turn off FMA contraction, so int8 outputs equal the
reference bit for bit.  fp8 products are exact in fp32; only the summation order differs.
Quantized launches never split the reduction (split-K's second pass has no quantizing epilogue).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._common import (
    MAX_NUMEL,
    channels_last,
    check_affine,
    check_devices,
    interpreting,
    pair,
)
from ._device import device_context, target
from ._gemm import grouped_tile, output_pixels
from ._launch import make_configs, one_config, prune_gemm_configs

# operand dtypes of the quantized kernels, and the largest magnitude each quantizes to
QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn, torch.float8_e4m3fnuz)
QMAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0, torch.float8_e4m3fnuz: 240.0}
# round-to-nearest-even for |v| < 2**22 in fp32: (v + 1.5 * 2**23) - 1.5 * 2**23
_RNE_MAGIC = 12582912.0


@triton.jit
def round_e4m3(v, FNUZ: tl.constexpr):
    """fp32 v (|v| <= 448, fnuz: 240) rounded to the nearest e4m3 value, ties to even, still in fp32.

    Done on the bits so that the conversion to fp8 afterwards is exact: Triton's interpreter does not
    carry a mantissa that rounds up into the exponent (e.g. 31.7 -> 16 instead of 32)."""
    bits = v.to(tl.int32, bitcast=True)
    # normal numbers: keep 3 mantissa bits of fp32's 23, nearest even; a carry moves into the exponent
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576).to(tl.float32, bitcast=True)
    # subnormals (|v| below the smallest normal, 2**-6; fnuz 2**-7) are multiples of 2**-9 (fnuz 2**-10);
    # a rounded zero is +0, which fnuz needs (its 0x80 is NaN, not -0)
    steps: tl.constexpr = 1024.0 if FNUZ else 512.0  # subnormal steps per unit
    sub = ((v * steps + 12582912.0) - 12582912.0) * (1.0 / steps)
    return tl.where(tl.abs(v) < (0.0078125 if FNUZ else 0.015625), sub, normal)


@triton.jit
def quant_epilogue_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, K, scale_ptr, shift_ptr,
                         res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, res_scale, inv_out, y_ptr,
                         HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, QUANT_OUT: tl.constexpr,
                         IS_INT: tl.constexpr, FNUZ: tl.constexpr):
    """The module docstring's epilogue on an accumulator tile, and one store into the (N·P·Q, K) output."""
    out_mask = m_ok[:, None] & n_ok[None, :]
    scale = tl.load(scale_ptr + offs_n, mask=n_ok, other=0.0)
    shift = tl.load(shift_ptr + offs_n, mask=n_ok, other=0.0)
    y = acc.to(tl.float32) * scale[None, :]
    y = y + shift[None, :]
    if HAS_RESIDUAL:
        res_rows = n * stride_rn + p * stride_rp + q * stride_rq
        res = tl.load(res_ptr + res_rows[:, None] + offs_n[None, :] * stride_rk, mask=out_mask, other=0.0)
        y = y + res.to(tl.float32) * res_scale
    if RELU:
        y = tl.maximum(y, 0.0)
    if QUANT_OUT:
        v = y * inv_out
        if IS_INT:
            v = tl.minimum(tl.maximum(v, -127.0), 127.0)
            y = (v + 12582912.0) - 12582912.0
        else:
            top: tl.constexpr = 240.0 if FNUZ else 448.0  # the largest e4m3 (fnuz) value
            y = round_e4m3(tl.minimum(tl.maximum(v, -top), top), FNUZ)
    tl.store(y_ptr + offs_m[:, None] * K + offs_n[None, :], y.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def qconv_kernel(
    # input x: logical (N, C, H, W), NHWC in memory; weight (K, C, R, S), (K, R, S, C) in memory
    x_ptr, stride_xn, stride_xc, stride_xh, stride_xw,
    w_ptr, stride_wk, stride_wc, stride_wr, stride_ws,
    # epilogue: fp32 scale, shift (K,); residual (N, K, P, Q) in x's dtype; output y (N·P·Q, K) row-major
    scale_ptr, shift_ptr, res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr,
    res_scale, inv_out,  # fp32 scalars: the residual's scale, 1 / out_scale
    N, C, H, W, K, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    QUANT_OUT: tl.constexpr,  # write int8/fp8 (x's dtype) quantized by inv_out, else fp32
    IS_INT: tl.constexpr,  # int8 operands, int32 accumulator; else fp8, fp32 accumulator
    FNUZ: tl.constexpr,  # fp8 operands are float8_e4m3fnuz (MI300), else float8_e4m3fn
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), N * P * Q, K, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m, m_ok, n, p, q = output_pixels(pid_m, N, P, Q, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K
    top = p * stride_h - pad_h
    left = q * stride_w - pad_w
    pixel = x_ptr + n * stride_xn
    filt = w_ptr + offs_n * stride_wk
    chans = tl.arange(0, BLOCK_K)
    if IS_INT:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # one flat loop over (tap, channel block), which Triton pipelines; padding taps load zeros
    blocks = tl.cdiv(C, BLOCK_K)
    for step in range(0, R * S * blocks):
        tap = step // blocks
        c = (step - tap * blocks) * BLOCK_K + chans
        r = tap // S
        s = tap - r * S
        row = top + r * dil_h
        col = left + s * dil_w
        inside = m_ok & (row >= 0) & (row < H) & (col >= 0) & (col < W)
        c_ok = c < C
        src = (pixel + row * stride_xh + col * stride_xw)[:, None] + c[None, :] * stride_xc
        a = tl.load(src, mask=inside[:, None] & c_ok[None, :], other=0.0)
        wts = filt[None, :] + c[:, None] * stride_wc + (r * stride_wr + s * stride_ws)
        b = tl.load(wts, mask=c_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, out_dtype=acc.dtype)
    quant_epilogue_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, K, scale_ptr, shift_ptr,
                         res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, res_scale, inv_out, y_ptr,
                         HAS_RESIDUAL, RELU, QUANT_OUT, IS_INT, FNUZ)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per GPU family.  One-byte operands: twice the
# reduction depth of the fp16 tiles for the same shared memory per stage; int8/fp8 MMAs take K=32
# steps (IMMA m16n8k32, IGMMA/QGMMA k32), so BLOCK_K is at least 64.  `rbench kernels check`
# cross-compiles each for int8 and fp8 and fails on spills.
CONFIGS: dict[str, list[tuple[int, int, int, int, int]]] = {
    "sm90": [(128, 128, 128, 8, 3), (128, 64, 128, 4, 4), (64, 128, 128, 4, 4), (64, 64, 128, 4, 4)],
    "sm80": [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4)],
    "gfx942": [(128, 128, 128, 8, 2), (128, 64, 128, 4, 2), (64, 64, 128, 4, 2)],
}
AUTOTUNE_KEY = ["C", "H", "W", "K", "P", "Q", "stride_h", "stride_w", "pad_h", "pad_w", "dil_h", "dil_w",
                "R", "S", "HAS_RESIDUAL", "RELU", "QUANT_OUT", "IS_INT", "FNUZ"]
_tuned: dict[tuple[str, int], triton.runtime.Autotuner] = {}


def _autotuner(family: str, bucket: int) -> triton.runtime.Autotuner:
    """The autotuned kernel for a family and M bucket (next power of two of N·P·Q, as _launch.py)."""
    if (family, bucket) not in _tuned:
        def prune(configs, named_args, **kwargs):
            a = {**named_args, **kwargs}
            return prune_gemm_configs(configs, a["N"] * a["P"] * a["Q"], a["K"], a["R"] * a["S"] * a["C"])

        _tuned[(family, bucket)] = triton.autotune(configs=make_configs(CONFIGS[family]), key=AUTOTUNE_KEY,
                                                   prune_configs_by={"early_config_prune": prune})(qconv_kernel)
    return _tuned[(family, bucket)]


def interpreter_config(rows: int, k: int, channels: int) -> dict:
    """The interpreter's one config: tiles as large as the problem (16 to 64 rows, up to 256 columns and
    channels), since it pays per operation, not per element: few programs and few loop trips run fastest."""
    def fit(n: int, hi: int) -> int:
        return max(16, min(hi, triton.next_power_of_2(n)))

    return dict(BLOCK_M=fit(rows, 64), BLOCK_N=fit(k, 256), BLOCK_K=fit(channels, 256), GROUP_M=8)


def _launch(args: tuple, meta: dict, rows: int, k: int, reduction: int, device: torch.device) -> None:
    """One config under the interpreter (or RBENCH_KERNELS_ONE_CONFIG=1), else autotuned; no FMA contraction."""
    def grid(cfg: dict) -> tuple[int]:
        return (triton.cdiv(rows, cfg["BLOCK_M"]) * triton.cdiv(k, cfg["BLOCK_N"]),)

    if interpreting():
        cfg = interpreter_config(rows, k, reduction // (meta["R"] * meta["S"]))
        qconv_kernel[grid(cfg)](*args, **meta, **cfg)
        return
    family = target(device).require_family()  # UnsupportedTarget where no configs are shipped
    with device_context(device):
        if one_config():
            cfg = prune_gemm_configs(make_configs(CONFIGS[family]), rows, k, reduction)[0]
            qconv_kernel[grid(cfg.kwargs)](*args, **meta, **cfg.all_kwargs(), enable_fp_fusion=False)
        else:
            _autotuner(family, triton.next_power_of_2(rows))[grid](*args, **meta, enable_fp_fusion=False)


def quantized(x: object, out_scale: object, residual_scale: object) -> bool:
    """True when the public kernels must hand `x` to this file; the scales are refused for other dtypes."""
    if getattr(x, "dtype", None) in QUANT_DTYPES:
        return True
    if out_scale is not None or residual_scale is not None:
        raise ValueError("out_scale and residual_scale are for int8 / float8_e4m3fn / float8_e4m3fnuz operands only, "
                         f"got x of dtype {getattr(x, 'dtype', type(x).__name__)}")
    return False


def _check_quant(t: object, name: str, dtype: torch.dtype | None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 4:
        raise ValueError(f"{name} must be a 4-D torch.Tensor, got {getattr(t, 'shape', type(t).__name__)}")
    if t.dtype not in QUANT_DTYPES or (dtype is not None and t.dtype != dtype):
        want = dtype if dtype is not None else " or ".join(map(str, QUANT_DTYPES))
        raise ValueError(f"{name} must be {want} (the quantized operands share one dtype), got {t.dtype}")
    if t.numel() > MAX_NUMEL:
        raise ValueError(f"{name} has {t.numel()} elements; at most 2**31-1 are supported")
    return t


def scale_value(value: object, name: str) -> float:
    """A quantization scale: a positive finite number (a Python number or a one-element tensor)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def conv_bn_act_q(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
                  stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                  dilation: int | Sequence[int] = 1, groups: int = 1, residual: torch.Tensor | None = None,
                  residual_scale: float | None = None, relu: bool = True, out_scale: float | None = None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """`conv_bn_act` for int8 / fp8 x and weight (module docstring): returns (N, K, P, Q) channels_last,
    in x's dtype when `out_scale` is given, else fp32; `out` is a preallocated buffer of that."""
    _check_quant(x, "x", None)
    _check_quant(weight, "weight", x.dtype)
    if groups != 1:
        raise ValueError(f"quantized convolutions support groups=1 only, got groups={groups!r}")
    n, c, h, w = x.shape
    k, cw, r, s = weight.shape
    if cw != c:
        raise ValueError(f"weight must be (K, C={c}, R, S) for x {tuple(x.shape)}, got {tuple(weight.shape)}")
    (sh, sw), (ph, pw), (dh, dw) = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    if min(sh, sw) < 1 or min(ph, pw) < 0 or min(dh, dw) < 1:
        raise ValueError(f"need stride >= 1, padding >= 0, dilation >= 1; got {stride=}, {padding=}, {dilation=}")
    p, q = ((size + 2 * pad - dil * (taps - 1) - 1) // st + 1
            for size, pad, dil, taps, st in ((h, ph, dh, r, sh), (w, pw, dw, s, sw)))
    if p < 1 or q < 1:
        raise ValueError(f"output would be empty: x {tuple(x.shape)}, weight {tuple(weight.shape)} give P={p}, Q={q}")
    scale, shift = check_affine(scale, "scale", k), check_affine(shift, "shift", k)
    inv_out = 1.0 if out_scale is None else 1.0 / scale_value(out_scale, "out_scale")
    res_scale = 1.0
    if residual is not None:
        _check_quant(residual, "residual", x.dtype)
        if tuple(residual.shape) != (n, k, p, q):
            raise ValueError(f"residual must have the output's shape {(n, k, p, q)}, got {tuple(residual.shape)}")
        if residual_scale is None:
            raise ValueError("a quantized residual needs residual_scale (its dequantization scale)")
        res_scale = scale_value(residual_scale, "residual_scale")
    check_devices({"x": x, "weight": weight, "scale": scale, "shift": shift, "residual": residual})
    y = quant_output((n, k, p, q), x, out_scale is not None, out)
    x, weight = channels_last(x), channels_last(weight)
    res = channels_last(residual) if residual is not None else y  # never read without HAS_RESIDUAL
    args = (x, *x.stride(), weight, *weight.stride(), scale, shift, res, *res.stride(), y, res_scale, inv_out,
            n, c, h, w, k, p, q, sh, sw, ph, pw, dh, dw)
    meta = dict(R=r, S=s, HAS_RESIDUAL=residual is not None, RELU=bool(relu), QUANT_OUT=out_scale is not None,
                IS_INT=x.dtype == torch.int8, FNUZ=x.dtype == torch.float8_e4m3fnuz)
    if y.numel():
        _launch(args, meta, n * p * q, k, r * s * c, x.device)
    return y


def quant_output(shape: tuple[int, int, int, int], x: torch.Tensor, quantized: bool,
                 out: torch.Tensor | None) -> torch.Tensor:
    """The output buffer: x's dtype when the epilogue quantizes, else fp32; channels_last; `out` checked."""
    dtype = x.dtype if quantized else torch.float32
    if out is None:
        return torch.empty(shape, dtype=dtype, device=x.device, memory_format=torch.channels_last)
    if (not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != dtype
            or out.device != x.device or not out.is_contiguous(memory_format=torch.channels_last)):
        raise ValueError(f"out must be a channels_last {dtype} tensor of shape {shape} on {x.device}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} {tuple(getattr(out, 'shape', ()))}")
    return out


def conv1x1_bn_act_q(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
                     stride: int = 1, residual: torch.Tensor | None = None, residual_scale: float | None = None,
                     relu: bool = True, out_scale: float | None = None,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """`conv1x1_bn_act` for int8 / fp8: the same kernel with one tap, weight (K, C) or (K, C, 1, 1)."""
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4):
        raise ValueError(f"weight must be (K, C) or (K, C, 1, 1), got {getattr(weight, 'shape', weight)!r}")
    if weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1):
        raise ValueError(f"weight must be (K, C) or (K, C, 1, 1), got {tuple(weight.shape)}")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    w4 = weight.reshape(weight.shape[0], weight.shape[1], 1, 1)
    return conv_bn_act_q(x, w4, scale, shift, stride=stride, residual=residual, residual_scale=residual_scale,
                         relu=relu, out_scale=out_scale, out=out)
