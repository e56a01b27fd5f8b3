"""Compiled kernels on a real GPU (autotuned configs, native bf16, real tf32) at full ResNet-50 sizes.

Skipped without CUDA.  Their CPU twins are test_conv.py, test_conv1x1.py and test_add_act.py, which
run the same shapes at reduced spatial size under TRITON_INTERPRET=1 (and, on a GPU machine where
the interpreter is off, compiled on the GPU as well).
"""

import pytest
import torch
from kernel_cases import DTYPES, ON_GPU, RESNET_SHAPES, TORCH_DTYPE, ConvShape, assert_close, conv_inputs, poisoned

import rbench_kernels as rk
from rbench_kernels import reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU; CPU twins: test_conv.py, "
                                                  "test_conv1x1.py, test_add_act.py under TRITON_INTERPRET=1")]

# the reduced test sizes back at 224x224 scale
FULL_SIZE = {13: 224, 7: 56, 5: 28, 3: 14, 2: 7}
FULL_SHAPES = [ConvShape(s.name, 8, s.c, FULL_SIZE[s.h], FULL_SIZE[s.w], s.k, s.r, s.s, s.stride, s.padding)
               for s in RESNET_SHAPES]


@pytest.mark.parametrize("dtype, rtol", DTYPES)
@pytest.mark.parametrize("shape", FULL_SHAPES, ids=[s.name for s in FULL_SHAPES])
def test_resnet_layers_full_size(shape: ConvShape, dtype: str, rtol: float) -> None:
    inp = conv_inputs(shape, dtype, residual=shape.r == 1, channels_last=True, seed=1)
    p, q = shape.out_hw()
    out = poisoned((shape.n, shape.k, p, q), TORCH_DTYPE[dtype])
    kw = dict(residual=inp["residual"], relu=True, allow_tf32=dtype == "tf32", out=out)
    if shape.is_1x1:
        rk.conv1x1_bn_act(inp["x"], inp["weight"], inp["scale"], inp["shift"], stride=shape.stride, **kw)
    else:
        rk.conv_bn_act(inp["x"], inp["weight"], inp["scale"], inp["shift"], stride=shape.stride,
                       padding=shape.padding, **kw)
    ref = reference.conv_bn_act(
        inp["x"].double(), inp["weight"].double(), inp["scale"], inp["shift"], stride=shape.stride,
        padding=shape.padding, residual=None if inp["residual"] is None else inp["residual"].double(),
    )
    assert_close(out, ref, rtol, f"{shape} {dtype} on {torch.cuda.get_device_name()}")


def test_batch_256_layer1_expand() -> None:
    """The largest activation of ResNet-50 at batch 256 (205M elements): 32-bit offsets stay in range.

    No CPU twin: index overflow needs real sizes (the launchers reject 2**31 elements or more)."""
    shape = ConvShape("r50_l1_expand_b256", 256, 64, 56, 56, 256, 1, 1)
    inp = conv_inputs(shape, "fp16", residual=True, channels_last=True, seed=2)
    y = rk.conv1x1_bn_act(inp["x"], inp["weight"], inp["scale"], inp["shift"], residual=inp["residual"])
    z = rk.conv_bn_act(inp["x"], inp["weight"], inp["scale"], inp["shift"], residual=inp["residual"])
    ref = reference.conv_bn_act(inp["x"], inp["weight"], inp["scale"], inp["shift"], residual=inp["residual"])
    assert_close(y, ref, 2e-3, "conv1x1 batch 256")
    assert_close(z, ref, 2e-3, "conv batch 256")
    big = torch.randn(256, 256, 56, 56, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    assert_close(rk.add_act(big, y), reference.add_act(big, y), 2e-3, "add_act batch 256")
