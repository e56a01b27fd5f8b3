"""The int8 / fp8 kernels (rbench_kernels.qconv): int8 equal to exact integer arithmetic, fp8 to its fp32 emulation."""

import pytest
import torch
from kernel_cases import DEVICE, needs_device

import rbench_kernels as rk
from rbench_kernels import qconv, reference

pytestmark = [needs_device, pytest.mark.interpreter]

INT8, FP8, FNUZ = torch.int8, torch.float8_e4m3fn, torch.float8_e4m3fnuz  # fnuz: MI300's fp8 encoding
DTYPES = pytest.mark.parametrize("dtype", [INT8, FP8, FNUZ], ids=["int8", "fp8", "fp8-fnuz"])
# (n, c, h, w, k, r, stride, padding, dilation): channels and outputs straddle the 64x128x64 tiles
# of the interpreter, odd pixel counts leave partial row tiles, padding taps fall off every edge
SHAPES = {
    "3x3/1": (2, 20, 7, 9, 24, 3, 1, 1, 1),
    "3x3/2-odd": (1, 67, 9, 7, 130, 3, 2, 1, 1),
    "3x3-dil2": (1, 16, 8, 8, 16, 3, 1, 2, 2),
    "5x5/2-pad2": (2, 8, 11, 10, 20, 5, 2, 2, 1),
}


def operand(shape: tuple[int, ...], dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    if dtype == INT8:
        t = torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)
    else:
        t = (torch.randn(shape, generator=g) * 2).to(dtype)
    return t.to(DEVICE).contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.to(DEVICE)


def poisoned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An `out=` buffer full of a value the kernel never writes: NaN (fp32, fp8: 0x7F, fnuz: 0x80) or -128
    (int8 clamps to -127)."""
    t = torch.empty(shape, dtype=dtype, device=DEVICE, memory_format=torch.channels_last)
    if dtype in (FP8, FNUZ):
        return t.view(torch.uint8).fill_(0x7F if dtype == FP8 else 0x80).view(dtype)
    return t.fill_(-128) if dtype == INT8 else t.fill_(float("nan"))


def inputs(name: str, dtype: torch.dtype, residual: bool, seed: int = 0):
    n, c, h, w, k, r, st, pad, dil = SHAPES[name]
    g = torch.Generator().manual_seed(seed)
    p, q = (h + 2 * pad - dil * (r - 1) - 1) // st + 1, (w + 2 * pad - dil * (r - 1) - 1) // st + 1
    x, wt = operand((n, c, h, w), dtype, g), operand((k, c, r, r), dtype, g)
    # dequantization of the product scales (~1/(127² c r²) for int8) times a BatchNorm scale
    scale = ((torch.rand(k, generator=g) + 0.5) / (16 * c * r * r)).to(DEVICE)
    shift = (torch.randn(k, generator=g) * 0.3).to(DEVICE)
    res = operand((n, k, p, q), dtype, g) if residual else None
    geometry = dict(stride=st, padding=pad, dilation=dil)
    return x, wt, scale, shift, res, geometry, (n, k, p, q)


@DTYPES
@pytest.mark.parametrize("name, residual, relu, out_scale", [
    ("3x3/1", True, True, 0.02),
    ("3x3/2-odd", False, True, 0.01),
    ("3x3-dil2", True, False, None),
    ("5x5/2-pad2", False, False, 0.05),
])
def test_conv_q_equals_reference(name: str, residual: bool, relu: bool, out_scale: float | None,
                                 dtype: torch.dtype) -> None:
    x, wt, scale, shift, res, geometry, shape = inputs(name, dtype, residual)
    kw = dict(**geometry, residual=res, residual_scale=0.03 if residual else None, relu=relu, out_scale=out_scale)
    out = poisoned(shape, dtype if out_scale is not None else torch.float32)
    y = rk.conv_bn_act(x, wt, scale, shift, **kw, out=out)
    expected = reference.conv_bn_act(x, wt, scale, shift, **kw)
    assert y is out and y.dtype == expected.dtype and y.is_contiguous(memory_format=torch.channels_last)
    got, want = y.float().cpu(), expected.float().cpu()
    assert torch.isfinite(got).all() and (y != -128).all()  # every element written
    if dtype == INT8:
        assert torch.equal(got, want)  # integer sums are exact; the fp32 epilogue is the same operations
    else:
        # the same exact products summed in another order: at most one e4m3 step apart, nearly all equal
        assert torch.allclose(got, want, rtol=2**-3, atol=2**-9)
        assert (got == want).float().mean() > 0.99
    if out_scale is not None:
        assert got.unique().numel() > 20  # the test's scales exercise the range, not a few values


@DTYPES
def test_conv1x1_q_stride2_residual(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    x, wt = operand((2, 72, 7, 5), dtype, g), operand((40, 72), dtype, g)
    res = operand((2, 40, 4, 3), dtype, g)
    scale, shift = torch.full((40,), 1e-4, device=DEVICE), torch.linspace(-1, 1, 40, device=DEVICE)
    kw = dict(stride=2, residual=res, residual_scale=0.01, out_scale=0.01)
    y = rk.conv1x1_bn_act(x, wt, scale, shift, **kw)
    expected = reference.conv1x1_bn_act(x, wt, scale, shift, **kw)
    assert y.shape == (2, 40, 4, 3) and y.dtype == dtype
    if dtype == INT8:
        assert torch.equal(y.cpu(), expected.cpu())
    else:
        assert torch.allclose(y.float().cpu(), expected.float().cpu(), rtol=2**-3, atol=2**-9)


@DTYPES
def test_epilogue_rounding_is_nearest_even_with_saturation(dtype: torch.dtype) -> None:
    """x = 0, so y = shift: the quantizing epilogue on chosen values (ties, subnormals, overflow, the
    values whose mantissa rounds into the exponent) against torch's own rounding."""
    special = [0.5, 1.5, 2.5, -0.5, -2.5, 126.5, 127.5, 500.0, -1000.0, 31.7, -127.4, 7.93, 0.0,
               2**-7, 3 * 2**-10, 2**-10, 2**-11, 15.5 * 2**-7, 464.0, 440.0,
               # fnuz: its largest 240 and the ties above it, its subnormals (multiples of 2**-10) and the tie
               # below its smallest one, which must round to +0 (fnuz has no -0: 0x80 is its NaN)
               240.0, 247.9, -250.0, 7.5 * 2**-10, 2**-12, -2**-12, -3 * 2**-11, 1.0625 * 2**-7]
    g = torch.Generator().manual_seed(5)
    values = torch.cat([torch.tensor(special), torch.randn(256 - len(special), generator=g) * 60,
                        torch.randn(256, generator=g) * 0.01]).to(DEVICE)
    k = values.numel()
    x = torch.zeros((1, 16, 1, 1), dtype=dtype, device=DEVICE)
    wt = torch.zeros((k, 16), dtype=dtype, device=DEVICE)
    y = rk.conv1x1_bn_act(x, wt, torch.ones(k, device=DEVICE), values, relu=False, out_scale=1.0)
    expected = values.clamp(-qconv.QMAX[dtype], qconv.QMAX[dtype])
    expected = torch.round(expected).to(dtype) if dtype == INT8 else expected.to(dtype)
    assert torch.equal(y.reshape(-1).float().cpu(), expected.float().cpu())


def test_int8_accumulator_is_exact_beyond_fp16_range() -> None:
    """All-127 operands over 256 channels x 9 taps: sums of 37 million, exact in int32 (fp32 output, scale 1)."""
    x = torch.full((1, 256, 3, 3), 127, dtype=INT8, device=DEVICE)
    wt = torch.full((16, 256, 3, 3), -127, dtype=INT8, device=DEVICE)
    one, zero = torch.ones(16, device=DEVICE), torch.zeros(16, device=DEVICE)
    y = rk.conv_bn_act(x, wt, one, zero, padding=1, relu=False)
    assert y.dtype == torch.float32
    assert y[0, 0, 1, 1].item() == -127 * 127 * 256 * 9  # the centre sees every tap
    assert y[0, 0, 0, 0].item() == -127 * 127 * 256 * 4  # a corner sees 4 taps


def test_quantized_arguments_are_checked() -> None:
    x = torch.zeros((1, 16, 4, 4), dtype=INT8, device=DEVICE)
    wt = torch.zeros((16, 16, 3, 3), dtype=INT8, device=DEVICE)
    one = torch.ones(16, device=DEVICE)
    with pytest.raises(ValueError, match="weight must be torch.int8"):
        rk.conv_bn_act(x, wt.to(FP8), one, one)
    with pytest.raises(ValueError, match="residual_scale"):
        rk.conv_bn_act(x, wt, one, one, padding=1, residual=torch.zeros((1, 16, 4, 4), dtype=INT8))
    with pytest.raises(ValueError, match="out_scale must be a positive"):
        rk.conv_bn_act(x, wt, one, one, out_scale=0.0)
    with pytest.raises(ValueError, match="groups=1 only"):
        rk.conv_bn_act(x, wt[:, :8], one, one, groups=2)
    with pytest.raises(ValueError, match="out_scale and residual_scale are for int8"):
        rk.conv_bn_act(x.half(), wt.half(), one, one, out_scale=1.0)
    with pytest.raises(ValueError, match="out must be a channels_last torch.int8"):
        rk.conv_bn_act(x, wt, one, one, out_scale=1.0, out=torch.empty((1, 16, 2, 2), dtype=torch.float32))
