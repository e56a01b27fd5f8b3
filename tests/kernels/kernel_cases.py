"""Shared test inputs for the kernel tests: the shape list, dtypes with their tolerances, comparison."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from rbench_kernels._common import interpreting
from rbench_kernels.roofline import ConvSizes

# Interpreter runs use CPU tensors; without the interpreter the kernels need a GPU.
DEVICE = "cpu" if interpreting() or not torch.cuda.is_available() else "cuda"
ON_GPU = DEVICE == "cuda"
needs_device = pytest.mark.skipif(
    DEVICE == "cpu" and not interpreting(), reason="no GPU and TRITON_INTERPRET is not 1 for the interpreter"
)

# Relative-norm tolerances per precision.  fp16/bf16 are dominated by the final rounding of the
# output (2^-11 and 2^-8 relative).  tf32: Triton feeds fp32 operands to the TF32 tensor-core MMA
# without rounding them (no cvt.rna.tf32 in the PTX), and the hardware drops their low 13 mantissa
# bits: every product is biased towards zero by ~2^-10 on average, so ~1e-3 relative is expected
# and 2e-3 is the bound (under the interpreter input_precision="tf32" is computed in IEEE fp32, so
# there the tf32 cases check the code path, and on a GPU the precision too).
# bf16 under the interpreter: Triton's interpreter computes bf16 tl.dot on raw bits (issue 11584),
# so the kernels upcast bf16 tiles to fp32 before tl.dot when interpreting (UPCAST); loads, stores
# and the epilogue stay bf16, and the interpreter's fp32->bf16 conversion truncates instead of
# rounding, which doubles the error (still ~3e-3).  Native bf16 tl.dot is covered by the same tests
# on a GPU (DEVICE == "cuda") and by test_gpu.py.
DTYPES = [
    pytest.param("fp32", 1e-5, id="fp32"),
    pytest.param("tf32", 2e-3, id="tf32"),
    pytest.param("fp16", 2e-3, id="fp16"),
    pytest.param("bf16", 1e-2, id="bf16"),
]
TORCH_DTYPE = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ConvShape(ConvSizes):
    """One convolution: roofline's sizes (batch, channels, input size, output channels, kernel), geometry."""

    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    dilation: int = 1
    groups: int = 1

    @property
    def is_1x1(self) -> bool:
        return self.r == self.s == 1 and self.padding == 0 and self.dilation == 1 and self.groups == 1 \
            and isinstance(self.stride, int)

    def out_hw(self) -> tuple[int, int]:
        sh, sw = (self.stride, self.stride) if isinstance(self.stride, int) else self.stride
        ph, pw = (self.padding, self.padding) if isinstance(self.padding, int) else self.padding
        p = (self.h + 2 * ph - self.dilation * (self.r - 1) - 1) // sh + 1
        q = (self.w + 2 * pw - self.dilation * (self.s - 1) - 1) // sw + 1
        return p, q

    def geometry(self) -> tuple:
        """What identifies a torchvision conv layer regardless of image size."""
        return (self.c, self.k, self.r, self.s, self.stride, self.padding, self.dilation, self.groups)


def _rn(name, c, k, r, stride, h, n=2):
    """A ResNet layer at reduced spatial size: 224 -> 13, 56 -> 7, 28 -> 5, 14 -> 3, 7 -> 2."""
    return ConvShape(name, n, c, h, h, k, r, r, stride, r // 2)


# Every distinct convolution of torchvision's ResNet-18 and ResNet-50 (test_shapes.py checks this
# against the models), at the reduced input size of the stage it runs in.
RESNET_SHAPES = [
    _rn("stem_7x7s2", 3, 64, 7, 2, 13),
    # ResNet-18 basic blocks
    _rn("r18_l1_3x3", 64, 64, 3, 1, 7),
    _rn("r18_l2_3x3s2", 64, 128, 3, 2, 7),
    _rn("r18_l2_3x3", 128, 128, 3, 1, 5),
    _rn("r18_l2_down", 64, 128, 1, 2, 7),
    _rn("r18_l3_3x3s2", 128, 256, 3, 2, 5),
    _rn("r18_l3_3x3", 256, 256, 3, 1, 3),
    _rn("r18_l3_down", 128, 256, 1, 2, 5),
    _rn("r18_l4_3x3s2", 256, 512, 3, 2, 3),
    _rn("r18_l4_3x3", 512, 512, 3, 1, 2),
    _rn("r18_l4_down", 256, 512, 1, 2, 3),
    # ResNet-50 bottlenecks (its 3x3s at stride 1 are ResNet-18's above)
    _rn("r50_l1_reduce", 64, 64, 1, 1, 7),
    _rn("r50_l1_expand", 64, 256, 1, 1, 7),  # also layer1's stride-1 downsample
    _rn("r50_l1_reduce256", 256, 64, 1, 1, 7),
    _rn("r50_l2_reduce", 256, 128, 1, 1, 7),
    _rn("r50_l2_3x3s2", 128, 128, 3, 2, 7),
    _rn("r50_l2_expand", 128, 512, 1, 1, 5),
    _rn("r50_l2_down", 256, 512, 1, 2, 7),
    _rn("r50_l2_reduce512", 512, 128, 1, 1, 5),
    _rn("r50_l3_reduce", 512, 256, 1, 1, 5),
    _rn("r50_l3_3x3s2", 256, 256, 3, 2, 5),
    _rn("r50_l3_expand", 256, 1024, 1, 1, 3),
    _rn("r50_l3_down", 512, 1024, 1, 2, 5),
    _rn("r50_l3_reduce1024", 1024, 256, 1, 1, 3),
    _rn("r50_l4_reduce", 1024, 512, 1, 1, 3, n=1),
    _rn("r50_l4_3x3s2", 512, 512, 3, 2, 3, n=1),
    _rn("r50_l4_expand", 512, 2048, 1, 1, 2, n=1),
    _rn("r50_l4_down", 1024, 2048, 1, 2, 3, n=1),
    _rn("r50_l4_reduce2048", 2048, 512, 1, 1, 2, n=1),
]

# Shapes that break naive index math or tile assumptions.
AWKWARD_SHAPES = [
    ConvShape("odd_channels_3x3", 2, 37, 6, 5, 45, 3, 3, 1, 1),
    ConvShape("stem_odd_size", 1, 3, 11, 9, 64, 7, 7, 2, 3),
    ConvShape("image_1x1_3x3", 2, 64, 1, 1, 96, 3, 3, 1, 1),
    ConvShape("image_1x1_1x1", 3, 96, 1, 1, 40, 1, 1),
    ConvShape("odd_size_stride2_3x3", 2, 24, 9, 7, 40, 3, 3, 2, 1),
    ConvShape("odd_size_stride2_1x1", 2, 37, 9, 7, 45, 1, 1, 2),
    ConvShape("dilation2", 2, 32, 7, 7, 48, 3, 3, 1, 2, 2),
    ConvShape("padding3_3x3", 1, 16, 4, 4, 16, 3, 3, 1, 3),
    ConvShape("kernel5x5_stride3", 1, 20, 10, 8, 36, 5, 5, 3, 2),
    ConvShape("rect_3x1_stride2x1", 2, 16, 7, 5, 24, 3, 1, (2, 1), (1, 0)),
    ConvShape("tiny_channels_1x1", 2, 8, 5, 5, 8, 1, 1),
    ConvShape("resnext_g32_cg4", 2, 128, 5, 5, 128, 3, 3, 1, 1, 1, 32),
    ConvShape("resnext_g32_cg8_s2", 1, 256, 5, 5, 256, 3, 3, 2, 1, 1, 32),
    ConvShape("resnext_g32_cg16", 1, 512, 3, 3, 512, 3, 3, 1, 1, 1, 32),
    ConvShape("resnext_g32_cg32_s2", 1, 1024, 3, 3, 1024, 3, 3, 2, 1, 1, 32),
    ConvShape("groups2_cg3", 2, 6, 5, 5, 8, 3, 3, 1, 1, 1, 2),
    ConvShape("groups3_tiles_straddle", 1, 48, 4, 4, 48, 3, 3, 1, 1, 1, 3),
]

SHAPES = RESNET_SHAPES + AWKWARD_SHAPES
SHAPES_1X1 = [s for s in SHAPES if s.is_1x1]

# (residual, relu, channels_last input) combinations; each shape x dtype case takes one in turn,
# so that every combination meets every kind of shape without a full cross product.
EPILOGUES = [(res, relu, cl) for res in (True, False) for relu in (True, False) for cl in (True, False)]


def epilogue_for(shape_index: int, dtype_name: str) -> tuple[bool, bool, bool]:
    return EPILOGUES[(3 * shape_index + list(TORCH_DTYPE).index(dtype_name)) % len(EPILOGUES)]


def conv_inputs(shape: ConvShape, dtype_name: str, residual: bool, channels_last: bool, seed: int = 0) -> dict:
    """Fresh random inputs for `shape`: unit-variance activations, fan-in scaled weights."""
    g = torch.Generator().manual_seed(seed)
    dt = TORCH_DTYPE[dtype_name]
    fan_in = shape.c // shape.groups * shape.r * shape.s
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, generator=g)
    w = torch.randn(shape.k, shape.c // shape.groups, shape.r, shape.s, generator=g) / math.sqrt(fan_in)
    scale = torch.rand(shape.k, generator=g) + 0.5
    shift = torch.randn(shape.k, generator=g) * 0.5
    p, q = shape.out_hw()
    res = torch.randn(shape.n, shape.k, p, q, generator=g) if residual else None
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def dev(t):
        return None if t is None else t.to(device=DEVICE, dtype=dt).contiguous(memory_format=fmt)

    return dict(x=dev(x), weight=dev(w), scale=scale.to(DEVICE), shift=shift.to(DEVICE), residual=dev(res))


def poisoned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A channels_last output buffer full of NaN: any element the kernel fails to write shows."""
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE).contiguous(memory_format=torch.channels_last)


def reference_inputs(inp: dict) -> dict:
    """`conv_inputs`' tensors for the float64 reference: x, weight and residual in float64 (scale and
    shift stay fp32, as the kernels take them)."""
    return {**inp, "x": inp["x"].double(), "weight": inp["weight"].double(),
            "residual": None if inp["residual"] is None else inp["residual"].double()}


@dataclass
class EpilogueCase:
    """One shape x dtype case of the conv tests: its epilogue (`epilogue_for`), fresh inputs and a
    NaN-filled `out=` buffer (`poisoned`)."""

    shape: ConvShape
    dtype: str
    residual: bool
    relu: bool
    channels_last: bool
    inputs: dict
    out: torch.Tensor

    @property
    def what(self) -> str:
        """The case in an assertion message."""
        return (f"{self.shape} {self.dtype} residual={self.residual} relu={self.relu} "
                f"channels_last_in={self.channels_last}")


def epilogue_case(shape: ConvShape, dtype_name: str, turn: int, seed: int) -> EpilogueCase:
    """The case of `shape` in `dtype_name` whose epilogue is the `turn`-th (`epilogue_for`)."""
    residual, relu, channels_last = epilogue_for(turn, dtype_name)
    inputs = conv_inputs(shape, dtype_name, residual, channels_last, seed=seed)
    p, q = shape.out_hw()
    return EpilogueCase(shape, dtype_name, residual, relu, channels_last, inputs,
                        poisoned((shape.n, shape.k, p, q), TORCH_DTYPE[dtype_name]))


def assert_close(y: torch.Tensor, ref: torch.Tensor, rtol: float, what: str) -> None:
    """||y - ref|| / ||ref|| <= rtol, with NaN/inf flagged and the worst element located on failure."""
    assert tuple(y.shape) == tuple(ref.shape), f"{what}: shape {tuple(y.shape)} != reference {tuple(ref.shape)}"
    yd, rd = y.detach().double().cpu(), ref.detach().double().cpu()
    bad = ~torch.isfinite(yd)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {yd.numel()} outputs are NaN/inf (first at index {idx}: "
            f"{yd[idx].item()}, reference {rd[idx].item():.6g}) -- unwritten or overflowed"
        )
    err = (yd - rd).norm().item() / max(rd.norm().item(), 1e-30)
    if err > rtol:
        diff = (yd - rd).abs()
        idx = tuple(int(i) for i in (diff == diff.max()).nonzero()[0])
        over = int((diff > rtol * rd.abs().max().clamp_min(1e-30)).sum())
        raise AssertionError(
            f"{what}: relative error {err:.3e} > {rtol:.1e}; worst at index {idx}: got {yd[idx].item():.6g}, "
            f"reference {rd[idx].item():.6g} (|diff| {diff.max().item():.3e}); {over} of {yd.numel()} elements "
            f"differ by more than rtol x max|ref|"
        )
