"""Every launch path once, through the public functions, against the reference: the quick tier.

The paths: the 1x1 GEMM fed by TMA descriptors (persistent) and by pointers (stride 2), the 3x3
implicit GEMM by shifted tap descriptors and by gathers, the stem's flattened taps (3 channels and
padded to 4), grouped gathers, split-K launches on each kernel, and add_act.  Each case also checks
that it took the path it is meant to (a spy on the path's launcher).  Marked `quick`:
`RBENCH_KERNEL_TESTS=quick python -m pytest tests/kernels -q` runs only these (with one config per
kernel on a GPU), the first stage of a GPU session.
"""

from __future__ import annotations

import math

import pytest
import torch
from kernel_cases import DEVICE, TORCH_DTYPE, assert_close, needs_device, poisoned

import rbench_kernels as rk
from rbench_kernels import _launch, conv, conv1x1, conv1x1_tma, conv_tma, reference

pytestmark = [needs_device, pytest.mark.interpreter, pytest.mark.quick]

RTOL = {"fp32": 1e-5, "tf32": 2e-3, "fp16": 2e-3, "bf16": 1e-2}


def _inputs(n, c, h, w, k, r, groups=1, residual=True, dtype="fp16", seed=0):
    g = torch.Generator().manual_seed(seed)
    dt = TORCH_DTYPE[dtype]
    x = torch.randn(n, c, h, w, generator=g)
    wt = torch.randn(k, c // groups, r, r, generator=g) / math.sqrt(c // groups * r * r)
    scale, shift = torch.rand(k, generator=g) + 0.5, torch.randn(k, generator=g) * 0.5
    cl = torch.channels_last

    def dev(t):
        return t.to(device=DEVICE, dtype=dt).contiguous(memory_format=cl)

    return dict(x=dev(x), weight=dev(wt), scale=scale.to(DEVICE), shift=shift.to(DEVICE)), \
        (lambda p, q: dev(torch.randn(n, k, p, q, generator=g)) if residual else None)


class Spy:
    """Counts calls of a module function (the path's launcher) and of split-K's second pass."""

    def __init__(self, monkeypatch, module, name):
        self.calls = 0
        real = getattr(module, name)

        def wrapped(*a, **kw):
            self.calls += 1
            return real(*a, **kw)

        monkeypatch.setattr(module, name, wrapped)


def _run_conv(monkeypatch, spy_on, *, n, c, h, w, k, r, stride=1, padding=0, dilation=1, groups=1, dtype="fp16",
              residual=True, relu=True):
    inp, make_res = _inputs(n, c, h, w, k, r, groups, residual, dtype)
    ho = (h + 2 * padding - dilation * (r - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (r - 1) - 1) // stride + 1
    res = make_res(ho, wo)
    spy = Spy(monkeypatch, *spy_on)
    out = poisoned((n, k, ho, wo), TORCH_DTYPE[dtype])
    kw = dict(residual=res, relu=relu, allow_tf32=dtype == "tf32", out=out)
    if r == 1 and padding == 0 and groups == 1 and dilation == 1:
        y = rk.conv1x1_bn_act(**inp, stride=stride, **kw)
    else:
        y = rk.conv_bn_act(**inp, stride=stride, padding=padding, dilation=dilation, groups=groups, **kw)
    assert y is out
    ref = reference.conv_bn_act(inp["x"].double(), inp["weight"].double(), inp["scale"], inp["shift"],
                                stride=stride, padding=padding, dilation=dilation, groups=groups,
                                residual=None if res is None else res.double(), relu=relu)
    assert_close(y, ref, RTOL[dtype], f"{spy_on[1]} {dtype}")
    return spy.calls


TMA_1X1 = [
    # (n, c, h, w, k): tiles straddle the persistent grid; K and C multiples of 8 but not of a block
    pytest.param(2, 72, 9, 7, 136, "fp16", id="fp16-odd-blocks"),
    pytest.param(1, 64, 1, 1, 40, "bf16", id="bf16-1x1-image"),
    pytest.param(3, 48, 6, 5, 264, "tf32", id="tf32-many-tiles"),
]


@pytest.mark.parametrize("n, c, h, w, k, dtype", TMA_1X1)
def test_conv1x1_tma_path(monkeypatch, n, c, h, w, k, dtype) -> None:
    assert _run_conv(monkeypatch, (conv1x1_tma, "launch"), n=n, c=c, h=h, w=w, k=k, r=1, dtype=dtype) == 1


def test_conv1x1_pointer_path_for_stride_2(monkeypatch) -> None:
    calls = _run_conv(monkeypatch, (conv1x1_tma, "launch"), n=2, c=40, h=9, w=7, k=48, r=1, stride=2)
    assert calls == 0


def _transposed_weight(inp):
    """The (K, C) weight stored transposed: stride (1, K), a view TMA cannot read."""
    w = inp["weight"].reshape(inp["weight"].shape[:2])
    return w.t().contiguous().t()


def _misaligned_x(inp):
    """x shifted by one element in its storage: a base address that is not 16-byte aligned."""
    x = inp["x"]
    buf = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)
    view = buf[1:].view(x.shape[0], x.shape[2], x.shape[3], x.shape[1]).permute(0, 3, 1, 2)
    return view.copy_(x)


FALLBACKS = [
    # (case, dtype, C, K, change of the inputs, words of the reason)
    ("C=36", "fp16", 36, 48, None, "x, weight break TMA's 16-byte rules"),
    ("K=44", "bf16", 32, 44, None, "y break TMA's 16-byte rules"),
    ("transposed-weight", "fp16", 32, 48, ("weight", _transposed_weight), "weight break"),
    ("misaligned-x", "fp16", 32, 48, ("x", _misaligned_x), "x break"),
    ("ieee-fp32", "fp32", 32, 48, None, "IEEE fp32"),
]


@pytest.mark.parametrize("case, dtype, c, k, change, reason", FALLBACKS, ids=[f[0] for f in FALLBACKS])
def test_conv1x1_falls_back_to_pointers(monkeypatch, case, dtype, c, k, change, reason) -> None:
    """Operands that break TMA's rules take the pointer kernel, by the explicit check, with its reason."""
    inp, make_res = _inputs(2, c, 5, 3, k, 1, dtype=dtype)
    if change:
        inp[change[0]] = change[1](inp)
    x2 = inp["x"].contiguous(memory_format=torch.channels_last) if case != "misaligned-x" else inp["x"]
    w2 = inp["weight"].reshape(k, c)
    ep = rk.conv.epilogue_operands(x2, w2, inp["scale"], inp["shift"], None, None, (2, k, 5, 3))
    route, why = conv1x1.path(x2, w2, 1, ep, "ieee")
    assert route == "pointer" and reason in why, why
    spy = Spy(monkeypatch, conv1x1_tma, "launch")
    out = poisoned((2, k, 5, 3), TORCH_DTYPE[dtype])
    rk.conv1x1_bn_act(**inp, out=out)
    ref = reference.conv1x1_bn_act(inp["x"].double(), inp["weight"].double(), inp["scale"], inp["shift"])
    assert_close(out, ref, RTOL[dtype], case)
    assert spy.calls == 0


def test_no_tma_target_takes_the_pointer_paths(monkeypatch) -> None:
    """On a target without TMA (sm_80, gfx942) neither descriptor kernel is picked."""
    from rbench_kernels._device import Target

    sm80 = Target("sm80", "sm80", 4, False)
    monkeypatch.setattr(conv1x1, "target", lambda d: sm80)
    monkeypatch.setattr(conv, "target", lambda d: sm80)
    assert _run_conv(monkeypatch, (conv1x1_tma, "launch"), n=2, c=64, h=4, w=4, k=64, r=1) == 0
    assert _run_conv(monkeypatch, (conv_tma, "launch"), n=2, c=64, h=8, w=8, k=64, r=3, padding=1) == 0


TAPS = [
    # (n, c, h, w, k, padding, dilation): 8x8 fits 64-pixel boxes, 7x7 wastes 23 % of them
    pytest.param(2, 64, 8, 8, 136, 1, 1, "fp16", id="fp16-8x8"),
    pytest.param(1, 40, 7, 7, 24, 1, 1, "bf16", id="bf16-7x7-odd-channels"),
    pytest.param(2, 32, 8, 8, 48, 2, 2, "tf32", id="tf32-dilation2"),
]


@pytest.mark.parametrize("n, c, h, w, k, padding, dilation, dtype", TAPS)
def test_conv_tap_descriptor_path(monkeypatch, n, c, h, w, k, padding, dilation, dtype) -> None:
    calls = _run_conv(monkeypatch, (conv_tma, "launch"), n=n, c=c, h=h, w=w, k=k, r=3, padding=padding,
                      dilation=dilation, dtype=dtype)
    assert calls == 1


@pytest.mark.parametrize("what, kw", [
    ("stride2", dict(n=2, c=32, h=9, w=7, k=40, r=3, stride=2, padding=1)),
    ("stem3", dict(n=1, c=3, h=11, w=9, k=64, r=7, stride=2, padding=3)),
    ("grouped", dict(n=1, c=64, h=5, w=5, k=64, r=3, padding=1, groups=8)),
    ("odd_channels", dict(n=1, c=37, h=8, w=8, k=45, r=3, padding=1)),
])
def test_conv_gather_paths(monkeypatch, what, kw) -> None:
    assert _run_conv(monkeypatch, (conv_tma, "launch"), **kw) == 0


def test_stem_padded_to_four_channels() -> None:
    """pad_channels + conv_bn_act equals the 3-channel stem (TAP_C = 4: vector taps)."""
    inp, _ = _inputs(1, 3, 11, 9, 64, 7, dtype="fp16", residual=False)
    want = rk.conv_bn_act(**inp, stride=2, padding=3)
    x4, w4 = rk.pad_channels(inp["x"]), rk.pad_channels(inp["weight"])
    assert x4.shape[1] == w4.shape[1] == 4 and torch.equal(x4[:, :3], inp["x"]) and not x4[:, 3].any()
    got = rk.conv_bn_act(x4, w4, inp["scale"], inp["shift"], stride=2, padding=3)
    assert_close(got, want, 2e-3, "stem padded to 4 channels")
    with pytest.raises(ValueError, match="channels must be an int >= t's 3 channels"):
        rk.pad_channels(inp["x"], 2)


@pytest.mark.parametrize("spy_on, kw", [
    ((conv1x1_tma, "launch"), dict(n=1, c=192, h=3, w=3, k=64, r=1)),
    ((conv1x1, "_launch"), dict(n=1, c=200, h=5, w=5, k=24, r=1, stride=2)),
    ((conv_tma, "launch"), dict(n=1, c=64, h=8, w=8, k=64, r=3, padding=1)),
    ((conv, "_launch"), dict(n=1, c=48, h=5, w=5, k=40, r=3, stride=2, padding=1)),
], ids=["tma-1x1", "pointer-1x1", "taps-3x3", "gather-3x3"])
def test_split_k_on_every_kernel(monkeypatch, spy_on, kw) -> None:
    """Launches smaller than a wave split their reduction; the second pass runs once and matches."""
    passes = Spy(monkeypatch, _launch.GemmLauncher, "_reduce")
    assert _run_conv(monkeypatch, spy_on, **kw) == 1
    assert passes.calls == 1


def test_add_act() -> None:
    x = torch.randn(2, 3, 5, 7, device=DEVICE, dtype=torch.bfloat16)
    r = torch.randn(2, 3, 5, 7, device=DEVICE, dtype=torch.bfloat16)
    assert_close(rk.add_act(x, r), reference.add_act(x, r), 1e-2, "add_act")
