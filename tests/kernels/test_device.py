"""Device handling with fake devices: XPU and unknown AMD GPUs say they are unsupported, ROCm's real
architecture is read, launches make the device current through the right API, the TMA allocator."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

import rbench_kernels as rk
from rbench_kernels import _device, _launch, conv1x1


@pytest.fixture
def compiled(monkeypatch):
    """As if the kernels were compiled for a GPU (not interpreting), with a fresh target cache."""
    monkeypatch.setattr(_device, "interpreting", lambda: False)
    _device._target_cached.cache_clear()
    yield
    _device._target_cached.cache_clear()


def _props(**kw):
    return SimpleNamespace(name="fake GPU", multi_processor_count=132, **kw)


@pytest.mark.parametrize("arch, family", [("gfx942:sramecc+:xnack-", "gfx942"), ("gfx940", "gfx942"),
                                          ("gfx90a:sramecc+:xnack-", None), ("gfx1100", None)])
def test_rocm_target_is_read_from_gcn_arch_name(monkeypatch, compiled, arch, family) -> None:
    monkeypatch.setattr(torch.version, "hip", "6.3.0", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: _props(gcnArchName=arch))
    tgt = _device.target(torch.device("cuda", 0))
    assert (tgt.arch, tgt.family, tgt.tma) == (arch.split(":")[0], family, False)
    if family is None:
        assert arch.split(":")[0] in tgt.reason and "gfx942" in tgt.reason
        with pytest.raises(rk.UnsupportedTarget, match=arch.split(":")[0]):
            _device.gpu_family(torch.device("cuda", 0))
        assert rk.unsupported_reason("cuda:0") == tgt.reason
    else:
        assert _device.gpu_family(torch.device("cuda", 0)) == family and rk.unsupported_reason("cuda:0") is None


@pytest.mark.parametrize("cap, family, tma", [((9, 0), "sm90", True), ((8, 0), "sm80", False),
                                              ((8, 6), "sm80", False), ((10, 0), "sm90", True)])
def test_cuda_family_and_tma(monkeypatch, compiled, cap, family, tma) -> None:
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: _props())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: cap)
    tgt = _device.target(torch.device("cuda", 1))
    assert (tgt.arch, tgt.family, tgt.tma, tgt.sms) == (f"sm{cap[0]}{cap[1]}", family, tma, 132)


def test_xpu_is_unsupported_not_a_crash(compiled) -> None:
    """Before: torch.cuda.device(xpu tensor's device) raised 'Expected a cuda device'."""
    reason = rk.unsupported_reason(torch.device("xpu", 0))
    assert reason and "XPU" in reason and "no rbench_kernels configs" in reason
    with pytest.raises(rk.UnsupportedTarget, match="XPU.*configs are shipped for CUDA"):
        _device.gpu_family(torch.device("xpu", 0))


def test_a_launch_on_an_unsupported_device_raises_its_reason(monkeypatch, compiled) -> None:
    """The launcher asks for the family before anything touches a vendor API."""
    xpu = _device.Target("xpu", None, 1, False, "Intel XPU (xpu:0) has no rbench_kernels configs")
    monkeypatch.setattr(_launch, "target", lambda d: xpu)
    monkeypatch.setattr(conv1x1, "target", lambda d: xpu)
    monkeypatch.setattr(_launch, "interpreting", lambda: False)
    x, w = torch.randn(1, 8, 2, 2), torch.randn(8, 8)
    with pytest.raises(rk.UnsupportedTarget, match="Intel XPU"):
        rk.conv1x1_bn_act(x, w, torch.ones(8), torch.zeros(8))


class _Recorder:
    def __init__(self):
        self.entered = []

    def context(self, tag):
        @contextlib.contextmanager
        def cm(arg):
            self.entered.append((tag, arg))
            yield
        return cm


def test_device_context_uses_torch_accelerator_for_its_own_device_type(monkeypatch) -> None:
    rec = _Recorder()
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("xpu"), raising=False)
    monkeypatch.setattr(torch.accelerator, "device_index", rec.context("accelerator"), raising=False)
    with _device.device_context(torch.device("xpu", 1)):
        pass
    assert rec.entered == [("accelerator", 1)]


def test_device_context_falls_back_to_the_device_types_module(monkeypatch) -> None:
    rec = _Recorder()
    monkeypatch.setattr(torch, "accelerator", SimpleNamespace(current_accelerator=lambda: None))
    monkeypatch.setattr(torch.xpu, "device", rec.context("xpu"), raising=False)
    with _device.device_context(torch.device("xpu", 2)):
        pass
    assert rec.entered == [("xpu", torch.device("xpu", 2))]
    with _device.device_context(torch.device("cpu")):  # nothing to make current
        pass
    assert len(rec.entered) == 1


def test_ensure_allocator_keeps_one_the_caller_set(monkeypatch) -> None:
    import triton
    from triton.runtime import _allocation

    token = _allocation._allocator.set(_allocation.NullAllocator())
    try:
        _device.ensure_allocator(torch.device("cpu"))
        ours = _allocation._allocator.get()
        assert not isinstance(ours, _allocation.NullAllocator)
        assert ours(64, 16, None).numel() == 64
        mine = lambda size, align, stream: torch.empty(size, dtype=torch.int8)  # noqa: E731
        triton.set_allocator(mine)
        _device.ensure_allocator(torch.device("cpu"))
        assert _allocation._allocator.get() is mine
    finally:
        _allocation._allocator.reset(token)
