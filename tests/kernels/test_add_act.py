"""add_act against rbench_kernels.reference."""

import pytest
import torch
from kernel_cases import DEVICE, DTYPES, TORCH_DTYPE, assert_close, needs_device

import rbench_kernels as rk
from rbench_kernels import reference

pytestmark = [needs_device, pytest.mark.interpreter]

SHAPES = [(2, 64, 7, 7), (1, 37, 5, 3), (3, 1, 1, 1), (4099,), (2, 3, 1025)]


@pytest.mark.parametrize("dtype, rtol", [p for p in DTYPES if p.id != "tf32"])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_add_act(shape: tuple, relu: bool, dtype: str, rtol: float) -> None:
    g = torch.Generator().manual_seed(len(shape) + sum(shape))
    dt = TORCH_DTYPE[dtype]
    x = torch.randn(shape, generator=g).to(DEVICE, dt)
    r = torch.randn(shape, generator=g).to(DEVICE, dt)
    if x.dim() == 4 and relu:  # mixed layouts: NCHW x, channels_last residual
        r = r.contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    out = torch.full(shape, float("nan"), dtype=dt, device=DEVICE).contiguous(memory_format=fmt)
    y = rk.add_act(x, r, relu=relu, out=out)
    assert y is out
    assert_close(y, reference.add_act(x.double(), r.double(), relu=relu), rtol, f"add_act {shape} {dtype} relu={relu}")
    public = rk.add_act(x, r, relu=relu)
    assert public.is_contiguous(memory_format=fmt) and public.dtype == dt
    assert torch.equal(public, y)


def test_add_act_strided() -> None:
    base = torch.randn(2, 8, 6, 6, device=DEVICE)
    x, r = base[:, ::2], base[:, 1::2]
    assert_close(rk.add_act(x, r), reference.add_act(x.double(), r.double()), 1e-6, "strided add_act")
