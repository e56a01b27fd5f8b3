"""rbench's own post-training quantization: per-channel weight scales, per-tensor activation scales by calibration.

The scheme (README "Low precision: int8 and fp8"):

- weights: symmetric, one scale per output channel, s_w[k] = max|W[k]| / QMAX (QMAX 127 for int8,
  448 for fp8 e4m3, 240 for the fnuz e4m3 that AMD's MI300 computes in: `fp8_dtype`); int8 rounds
  half to even and clamps to [-127, 127], fp8 rounds to nearest e4m3;
- activations: symmetric, one scale per tensor, s = amax / QMAX, where amax is the largest |value|
  the tensor takes in eager fp32 over CALIBRATION's seeded synthetic batches (the `max` rule: no
  clipping; random-weight networks have no long-tailed outliers that a percentile would cut);
- the calibration batches are standard normal, as the benchmark's inputs, but from their own seed, so
  the correctness gate never runs on the data the scales came from.

Which tensors are calibrated is the caller's choice (`rbench.run.triton_quant` names them); this
module only observes modules' outputs and turns ranges into scales.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

# int8 and fp8 (e4m3, the OCP `fn` variant torch calls float8_e4m3fn; `fp8_dtype` picks fnuz where that is the one)
QUANT_DTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
QMAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0, torch.float8_e4m3fnuz: 240.0}
# GPUs whose fp8 tensor cores take e4m3 in the fnuz encoding (bias 8, max 240, no -0): AMD's MI300 family
FNUZ_TARGETS = ("gfx940", "gfx941", "gfx942")


def quant_dtype(precision: str, gpu_target: str | None = None) -> torch.dtype:
    """The operand dtype of `precision` (int8, fp8) on a GPU of `gpu_target` (`sm_90`, `gfx942`, None on a CPU).

    fp8 is e4m3 everywhere, in the encoding the GPU's tensor cores take: float8_e4m3fnuz on MI300
    (its MFMAs have no OCP e4m3; Triton would emulate it with fp16 MFMAs), float8_e4m3fn elsewhere."""
    if precision == "fp8" and gpu_target in FNUZ_TARGETS:
        return torch.float8_e4m3fnuz
    return QUANT_DTYPES[precision]


@dataclass(frozen=True)
class Calibration:
    """The calibration data: `batches` seeded standard-normal batches of `batch_size` images."""

    batches: int = 4
    batch_size: int = 4
    seed: int = 20240


CALIBRATION = Calibration()


def weight_scales(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """s_w[k] = max|W[k]| / QMAX in fp32, one per output channel (an all-zero channel gets scale 1)."""
    amax = weight.detach().float().reshape(weight.shape[0], -1).abs().amax(dim=1)
    return torch.where(amax > 0, amax / QMAX[dtype], torch.ones_like(amax))


def quantize_tensor(t: torch.Tensor, inv_scale: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor:
    """t / scale in `dtype`: int8 half to even clamped to [-127, 127], fp8 clamped to +-QMAX then nearest e4m3.

    `inv_scale` (1 / scale, fp32, broadcastable) multiplies, as the kernels' epilogue does."""
    y = (t.float() * inv_scale).clamp(-QMAX[dtype], QMAX[dtype])
    return torch.round(y).to(dtype) if dtype == torch.int8 else y.to(dtype)


def quantize_weight(weight: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(W quantized per output channel, s_w): W ~ q * s_w[k]."""
    s_w = weight_scales(weight, dtype)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return quantize_tensor(weight, (1.0 / s_w).view(shape), dtype), s_w


def activation_scale(amax: float, dtype: torch.dtype) -> float:
    """s = amax / QMAX for a tensor whose calibrated range is amax (1.0 for a tensor that is always 0)."""
    return amax / QMAX[dtype] if amax > 0 else 1.0


def calibration_batches(image_size: int, device: torch.device, cal: Calibration = CALIBRATION) -> list[torch.Tensor]:
    """The seeded synthetic batches, fp32 NCHW on `device`."""
    g = torch.Generator().manual_seed(cal.seed)
    return [torch.randn(cal.batch_size, 3, image_size, image_size, generator=g).to(device) for _ in range(cal.batches)]


def observe_ranges(model: torch.nn.Module, observed: dict[str, tuple[torch.nn.Module, bool]], image_size: int,
                   cal: Calibration = CALIBRATION) -> dict[str, float]:
    """amax of each observed module's output over the calibration batches, in eager fp32 (IEEE).

    `observed` maps a tensor's name to (module, relu): the module's output, through a ReLU first when
    relu is True (a BatchNorm whose ReLU the kernel fuses).  `model` is not changed: a float copy runs."""
    device = next(model.parameters()).device
    ref = copy.deepcopy(model).float().eval()
    modules = dict(ref.named_modules())
    names = {id(m): n for n, m in model.named_modules()}
    amax = dict.fromkeys(observed, 0.0)

    def hook(name: str, relu: bool) -> Callable:
        def record(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            v = torch.relu(out) if relu else out
            amax[name] = max(amax[name], float(v.detach().abs().amax()))
        return record

    handles = [modules[names[id(m)]].register_forward_hook(hook(name, relu)) for name, (m, relu) in observed.items()]
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.inference_mode():
            for x in calibration_batches(image_size, device, cal):
                ref(x.contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_float32_matmul_precision(saved)
        for h in handles:
            h.remove()
    return amax


def top1_agreement(got: torch.Tensor, expected: torch.Tensor) -> float:
    """The share of images whose arg-max class is the same in both logits (N, classes)."""
    return float((got.float().argmax(dim=1) == expected.float().argmax(dim=1)).float().mean())
