"""conv1x1_bn_act (the bottleneck GEMM) against rbench_kernels.reference on every 1x1 shape in the list."""

import pytest
import torch
from kernel_cases import DEVICE, DTYPES, SHAPES, assert_close, conv_inputs, epilogue_case, needs_device
from kernel_cases import reference_inputs as doubled

import rbench_kernels as rk
from rbench_kernels import reference

pytestmark = [needs_device, pytest.mark.interpreter]

INDICES = [i for i, s in enumerate(SHAPES) if s.is_1x1]


@pytest.mark.parametrize("dtype, rtol", DTYPES)
@pytest.mark.parametrize("index", INDICES, ids=[SHAPES[i].name for i in INDICES])
def test_conv1x1_bn_act(index: int, dtype: str, rtol: float) -> None:
    # a different epilogue than test_conv picks for the same case
    case = epilogue_case(SHAPES[index], dtype, index + 1, seed=100 + index)
    shape, inp = case.shape, case.inputs
    if index % 2:  # both weight forms the contract allows
        inp["weight"] = inp["weight"].reshape(shape.k, shape.c)
    y = rk.conv1x1_bn_act(**inp, stride=shape.stride, relu=case.relu, allow_tf32=dtype == "tf32", out=case.out)
    assert y is case.out
    ref = reference.conv1x1_bn_act(**doubled(inp), stride=shape.stride, relu=case.relu)
    assert_close(y, ref, rtol, case.what)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv1x1_equals_conv_bn_act(stride: int) -> None:
    """The GEMM and the general implicit-GEMM kernel agree on a 1x1 layer (public functions)."""
    shape = next(s for s in SHAPES if s.name == "odd_size_stride2_1x1")
    inp = conv_inputs(shape, "fp32", residual=False, channels_last=False, seed=5)
    a = rk.conv1x1_bn_act(**inp, stride=stride)
    b = rk.conv_bn_act(**inp, stride=stride)
    assert a.is_contiguous(memory_format=torch.channels_last) and a.dtype == torch.float32
    assert_close(a, b, 1e-5, f"conv1x1 vs conv, stride {stride}")
    assert a.device.type == DEVICE
