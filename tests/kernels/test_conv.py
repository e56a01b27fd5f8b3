"""conv_bn_act against rbench_kernels.reference: every ResNet-18/50 conv shape plus awkward ones.

Runs the Triton kernel under TRITON_INTERPRET=1 on the CPU, or compiled on a GPU when one is present
(then bf16 is native and tf32 real); the reference is computed in float64 from the same inputs.
"""

import pytest
import torch
from kernel_cases import DEVICE, DTYPES, EPILOGUES, SHAPES, assert_close, conv_inputs, epilogue_case, needs_device
from kernel_cases import reference_inputs as doubled

import rbench_kernels as rk
from rbench_kernels import reference

pytestmark = [needs_device, pytest.mark.interpreter]


def _truth(inp: dict, shape, relu: bool) -> torch.Tensor:
    return reference.conv_bn_act(**doubled(inp), stride=shape.stride, padding=shape.padding, dilation=shape.dilation,
                                 groups=shape.groups, relu=relu)


@pytest.mark.parametrize("dtype, rtol", DTYPES)
@pytest.mark.parametrize("index", range(len(SHAPES)), ids=[s.name for s in SHAPES])
def test_conv_bn_act(index: int, dtype: str, rtol: float) -> None:
    case = epilogue_case(SHAPES[index], dtype, index, seed=index)
    shape = case.shape
    y = rk.conv_bn_act(
        **case.inputs, stride=shape.stride, padding=shape.padding, dilation=shape.dilation, groups=shape.groups,
        relu=case.relu, allow_tf32=dtype == "tf32", out=case.out,
    )
    assert y is case.out
    assert_close(y, _truth(case.inputs, shape, case.relu), rtol, case.what)


@pytest.mark.parametrize("residual, relu, channels_last", EPILOGUES)
@pytest.mark.parametrize("name", ["r18_l2_3x3s2", "stem_odd_size", "resnext_g32_cg4"])
def test_conv_bn_act_every_epilogue(name: str, residual: bool, relu: bool, channels_last: bool) -> None:
    """Residual on/off x ReLU on/off x NCHW/channels_last input through the public function."""
    shape = next(s for s in SHAPES if s.name == name)
    inp = conv_inputs(shape, "fp16", residual, channels_last, seed=7)
    y = rk.conv_bn_act(
        **inp, stride=shape.stride, padding=shape.padding, dilation=shape.dilation, groups=shape.groups, relu=relu
    )
    assert y.dtype == torch.float16 and y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, _truth(inp, shape, relu), 2e-3, f"{shape} residual={residual} relu={relu} cl={channels_last}")
    if relu:
        assert (y >= 0).all()


def test_conv_bn_act_strided_views() -> None:
    """Non-contiguous views (channel slice, spatial crop, transposed weight storage) give the same result."""
    g = torch.Generator().manual_seed(3)
    big = torch.randn(2, 40, 9, 9, generator=g).to(DEVICE)
    x = big[:, 4:36, 1:8, 1:8]  # (2, 32, 7, 7), strided in every dimension
    w = torch.randn(3, 3, 32, 24, generator=g).permute(3, 2, 0, 1).to(DEVICE) / 17  # (24, 32, 3, 3) view
    res = torch.randn(2, 24, 7, 7, generator=g).to(DEVICE).transpose(2, 3)  # non-dense residual view
    scale, shift = torch.rand(24, generator=g).to(DEVICE) + 0.5, torch.randn(24, generator=g).to(DEVICE)
    assert not x.is_contiguous() and not w.is_contiguous() and not res.is_contiguous()
    y = rk.conv_bn_act(x, w, scale, shift, padding=1, residual=res)
    ref = reference.conv_bn_act(x.double(), w.double(), scale, shift, padding=1, residual=res.double())
    assert_close(y, ref, 1e-5, "strided views")


def test_conv_bn_act_matches_batchnorm_module() -> None:
    """fold_bn + conv_bn_act reproduce torch's Conv2d -> BatchNorm2d (eval) -> ReLU."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 32, 3, padding=1, bias=True)
    bn = torch.nn.BatchNorm2d(32).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        want = torch.relu(bn(conv(x)))
    scale, shift = rk.fold_bn(bn, conv.bias)
    y = rk.conv_bn_act(x.to(DEVICE), conv.weight.detach().to(DEVICE), scale.to(DEVICE), shift.to(DEVICE), padding=1)
    assert_close(y, want, 1e-5, "conv+bn+relu module")


def test_conv_bn_act_empty_batch() -> None:
    x = torch.empty(0, 8, 5, 5, device=DEVICE)
    w = torch.randn(16, 8, 3, 3, device=DEVICE)
    y = rk.conv_bn_act(x, w, torch.ones(16, device=DEVICE), torch.zeros(16, device=DEVICE), padding=1)
    assert y.shape == (0, 16, 5, 5)
