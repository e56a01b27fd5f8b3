"""The public functions and their reference twins: the same signatures, and the same `out=` contract."""

import inspect

import pytest
import torch
from kernel_cases import DEVICE, needs_device

import rbench_kernels as rk
from rbench_kernels import reference

pytestmark = needs_device

PUBLIC = ["conv_bn_act", "conv1x1_bn_act", "add_act", "fold_bn"]


@pytest.mark.parametrize("name", PUBLIC)
def test_reference_has_the_kernels_signature(name: str) -> None:
    assert inspect.signature(getattr(reference, name)) == inspect.signature(getattr(rk, name))


def _call(module, name: str, out):
    """Each function with out= on small inputs whose result is (2, 16, 5, 5) float32."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 5, 5, generator=g).to(DEVICE)
    ones, zeros = torch.ones(16, device=DEVICE), torch.zeros(16, device=DEVICE)
    if name == "conv_bn_act":
        w = torch.randn(16, 16, 3, 3, generator=g).to(DEVICE)
        return module.conv_bn_act(x, w, ones, zeros, padding=1, out=out)
    if name == "conv1x1_bn_act":
        w = torch.randn(16, 16, generator=g).to(DEVICE)
        return module.conv1x1_bn_act(x, w, ones, zeros, out=out)
    return module.add_act(x, torch.randn(2, 16, 5, 5, generator=g).to(DEVICE), out=out)


def _nhwc(*shape, **kw) -> torch.Tensor:
    return torch.empty(*shape, **kw).contiguous(memory_format=torch.channels_last)


BAD_OUT = [
    ("shape", lambda: _nhwc(2, 16, 4, 5), r"out must be torch.float32 of shape \(2, 16, 5, 5\).*got .*\(2, 16, 4, 5\)"),
    ("dtype", lambda: _nhwc(2, 16, 5, 5, dtype=torch.float16), r"out must be torch.float32 .*got torch.float16"),
    ("device", lambda: _nhwc(2, 16, 5, 5, device="meta"), r"out must be .* on \S+, got .* on meta"),
    ("layout", lambda: torch.empty(2, 16, 5, 5), r"out must be channels_last and dense, got strides \(400, 25, 5, 1\)"),
    ("view", lambda: _nhwc(2, 32, 5, 5)[:, ::2], r"out must be channels_last and dense"),
    ("type", lambda: [0.0] * 800, r"out must be a torch.Tensor or None, got list"),
]


@pytest.mark.parametrize("module", [rk, reference], ids=["kernels", "reference"])
@pytest.mark.parametrize("name", ["conv_bn_act", "conv1x1_bn_act", "add_act"])
@pytest.mark.parametrize("what, make, match", BAD_OUT, ids=[c[0] for c in BAD_OUT])
def test_out_is_checked(what: str, make, match: str, name: str, module) -> None:
    with pytest.raises(ValueError, match=match):
        _call(module, name, make().to(DEVICE) if what not in ("device", "type") else make())


@pytest.mark.parametrize("name", ["conv_bn_act", "conv1x1_bn_act", "add_act"])
def test_reference_writes_into_out(name: str) -> None:
    out = torch.full((2, 16, 5, 5), float("nan"), device=DEVICE).contiguous(memory_format=torch.channels_last)
    assert _call(reference, name, out) is out
    assert torch.equal(out, _call(reference, name, None))


@pytest.mark.interpreter
def test_add_act_out_follows_the_memory_format() -> None:
    """Results that are not 4-D are row-major, so is their out."""
    x = torch.randn(3, 5, device=DEVICE)
    for fn in (rk.add_act, reference.add_act):
        out = torch.empty(3, 5, device=DEVICE)
        assert fn(x, x, out=out) is out
        with pytest.raises(ValueError, match=r"out must be contiguous \(row-major\) and dense"):
            fn(x, x, out=torch.empty(5, 3, device=DEVICE).t())
