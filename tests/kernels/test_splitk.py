"""Small launches: split-K (balanced splits, odd counts, masks, every dtype), at least one wave of
programs for every layer of ResNet-18/50 at batch 1 on H100, A100 and MI300X, and M buckets."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_cases import DEVICE, TORCH_DTYPE, assert_close, needs_device, poisoned

import rbench_kernels as rk
from rbench_kernels import _device, _launch, conv, conv1x1, conv1x1_tma, conv_tma, reference, roofline
from rbench_kernels._gemm import ConfigKind
from rbench_kernels._launch import Problem, Tiling

# multiprocessors of the GPU each family's configs were tuned for
SMS = {"sm90": 132, "sm80": 108, "gfx942": 304}


def _launcher(layer: roofline.ConvLayer, family: str):
    """The launcher and config kind that conv_bn_act / conv1x1_bn_act pick for a dense fp16 layer."""
    if layer.r == 1 and layer.padding == 0:
        return (conv1x1_tma._launch if family == "sm90" and layer.stride == 1 else conv1x1._launch), ConfigKind.HALF
    if layer.c < 16:
        return conv._launch, ConfigKind.GATHER
    tap = family == "sm90" and layer.stride == 1 and conv_tma.box_efficiency(layer.p, layer.q, 64) >= 0.7
    return (conv_tma._launch if tap else conv._launch), ConfigKind.HALF


@pytest.mark.parametrize("family", SMS)
@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_every_layer_at_batch_1_fills_a_wave(model: str, family: str) -> None:
    """Whatever config the autotuner picks, tiles x splits >= the SM count."""
    sms = SMS[family]
    short = []
    for layer in roofline.resnet_layers(model, 1):
        launcher, kind = _launcher(layer, family)
        pr = Problem(layer.n, layer.p, layer.q, layer.k, layer.c // layer.groups, layer.r * layer.s, layer.c < 16)
        for cfg, (tiles, splits) in launcher.candidates(pr, family, kind, sms):
            if tiles * splits < sms:
                short.append((layer.name, cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"], tiles, splits))
    assert not short, f"{model} at batch 1 on {family}: launches below one wave of {sms}: {short}"


def test_batch_256_does_not_split_and_takes_the_large_configs() -> None:
    layer = roofline.resnet_layers("resnet50", 256)[1]  # layer1.0.conv1
    pr = Problem(layer.n, layer.p, layer.q, layer.k, layer.c)
    cands = conv1x1_tma._launch.candidates(pr, "sm90", ConfigKind.HALF, 132)
    assert all(splits == 1 for _, (_, splits) in cands)
    half = {cfg[:3] for cfg in conv1x1_tma.CONFIGS["sm90"][ConfigKind.HALF]}
    # HALF configs, not SMALL ones; with K = 64 only the 64-wide one
    assert [(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"]) for c, _ in cands] == [(128, 64, 64)] and (128, 64, 64) in half


@pytest.mark.parametrize("tiles, steps, sms, want", [
    (8, 72, 132, 17),   # layer4 3x3 at batch 1 in 64x64 tiles: 8 x 17 = 136 programs
    (98, 2, 132, 2),    # the wave needs 2, the reduction allows 2
    (49, 2, 132, 2),    # the reduction allows only 2: the prune drops such a config if another fills a wave
    (1, 1000, 132, 64),  # capped at MAX_SPLIT
])
def test_split_count(tiles: int, steps: int, sms: int, want: int) -> None:
    class Fixed(Tiling):
        def tiles(self, pr, cfg):
            return tiles

    pr = Problem(1, 1, 1, 1, steps * 64)  # a 1x1: steps channel blocks of 64
    assert Fixed().splits(pr, {"BLOCK_K": 64}, sms) == want


def test_m_buckets_tune_batch_1_and_256_apart(monkeypatch) -> None:
    """One autotuner per (family, kind, next power of two of N·P·Q, SMs); the key never holds N."""
    made = []
    monkeypatch.setattr(_launch.triton, "autotune", lambda **kw: (made.append(kw["key"]), lambda fn: fn)[1])
    launcher = _launch.GemmLauncher(conv1x1.conv1x1_bn_act_kernel, conv1x1.CONFIGS, conv1x1.AUTOTUNE_KEY,
                                    problem=lambda a: Problem(a["N"], a["P"], a["Q"], a["K"], a["C"]))
    for bucket in (triton_next_pow2(1 * 56 * 56), triton_next_pow2(256 * 56 * 56), triton_next_pow2(200 * 56 * 56)):
        launcher.tuned("sm90", ConfigKind.HALF, bucket, 132)
    assert len(made) == 2 and "N" not in made[0]  # batch 200 shares batch 256's bucket (2**20)


def triton_next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _inputs(n, c, h, w, k, r, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    dt = TORCH_DTYPE[dtype]
    cl = torch.channels_last
    x = torch.randn(n, c, h, w, generator=g).to(DEVICE, dt).contiguous(memory_format=cl)
    wt = (torch.randn(k, c, r, r, generator=g) / math.sqrt(c * r * r)).to(DEVICE, dt).contiguous(memory_format=cl)
    return x, wt, (torch.rand(k, generator=g) + 0.5).to(DEVICE), torch.randn(k, generator=g).to(DEVICE)


@needs_device
@pytest.mark.interpreter
@pytest.mark.parametrize("sms", [3, 5, 7])
@pytest.mark.parametrize("dtype, rtol", [("fp32", 1e-5), ("fp16", 2e-3), ("bf16", 1e-2)])
@pytest.mark.parametrize("kind", ["3x3", "1x1"])
def test_odd_splits_are_exact(monkeypatch, sms: int, dtype: str, rtol: float, kind: str) -> None:
    """3, 5 or 7 splits of 9 (3x3: taps x one channel block) or 8 (1x1, C=450) steps, of uneven length;
    masked rows and columns (M = 50, K = 40 in 64x128 tiles); residual; NaN-poisoned output; the
    gather and pointer kernels (stride 2)."""
    monkeypatch.setattr(_device, "INTERPRETER_SMS", sms)
    seen = []
    real = _launch.GemmLauncher._reduce
    monkeypatch.setattr(_launch.GemmLauncher, "_reduce", lambda self, part, s, *a: (seen.append(s), real(self, part, s, *a)))
    r, c, stride = (3, 24, 2) if kind == "3x3" else (1, 450, 2)
    x, w, scale, shift = _inputs(2, c, 9, 9, 40, r, dtype, seed=sms)
    res = torch.randn(2, 40, 5, 5).to(DEVICE, TORCH_DTYPE[dtype]).contiguous(memory_format=torch.channels_last)
    out = poisoned((2, 40, 5, 5), TORCH_DTYPE[dtype])
    if kind == "3x3":
        rk.conv_bn_act(x, w, scale, shift, stride=stride, padding=1, residual=res, out=out)
    else:
        rk.conv1x1_bn_act(x, w, scale, shift, stride=stride, residual=res, out=out)
    assert seen == [sms], "the launch must split as many ways as there are (stand-in) SMs"
    ref = reference.conv_bn_act(x.double(), w.double(), scale, shift, stride=stride, padding=r // 2,
                                residual=res.double())
    assert_close(out, ref, rtol, f"{kind} {dtype} in {sms} splits")
