"""The workload of a case: a torchvision model in the case's precision and memory format, synthetic
inputs rotated among several buffers, and the model's FLOP and parameter counts.

Nothing is downloaded: models are randomly initialised with a fixed seed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from rbench.spec import Case

RESNET_FAMILY = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
                 "wide_resnet101_2", "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d")
SEED = 0
NUM_CLASSES = 1000
# Bytes of input buffers to rotate through so that no batch is served from a warm 50 MB L2 cache.
ROTATION_BYTES = 256 * 2**20
MAX_BUFFERS = 16

DTYPES = {
    "fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
    "amp_fp16": torch.float32, "amp_bf16": torch.float32,
}
AUTOCAST = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}


@lru_cache(maxsize=1)
def names() -> tuple[str, ...]:
    """Every torchvision classification model, ResNet family first."""
    others = [m for m in torchvision.models.list_models(module=torchvision.models) if m not in RESNET_FAMILY]
    return RESNET_FAMILY + tuple(sorted(others))


def _construct(name: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # googlenet/inception init-weights notices
        return torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES)


@dataclass
class Workload:
    """What a backend gets: the model ready for the case, its inputs and labels, and its cost."""

    model: torch.nn.Module
    inputs: list[torch.Tensor]
    labels: list[torch.Tensor]
    flops_per_image: int
    params: int
    autocast_dtype: torch.dtype | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)


def count_flops(model: torch.nn.Module, image_size: int) -> int:
    """Forward FLOPs of one image (2 × multiply-adds of convolutions, matmuls and attention).

    Counted on a copy on the meta device, so no memory or time is spent on real data. At the
    model's native resolution this equals torchvision's `_ops` metadata (GMACs) × 2.
    """
    import copy

    meta_model = copy.deepcopy(model).to("meta").eval().float()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.empty(1, 3, image_size, image_size, device="meta"))
    return int(counter.get_total_flops())


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def set_precision_flags(precision: str) -> None:
    """TF32 on only for `tf32`: fp32 means IEEE fp32, so a number labelled fp32 is never tf32."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def input_buffers(case: Case, device: torch.device, dtype: torch.dtype, rotate: int = 0,
                  generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Seeded synthetic images; enough distinct buffers to exceed a large L2 cache, at least two."""
    shape = (case.batch_size, 3, case.image_size, case.image_size)
    per_buffer = torch.Size(shape).numel() * torch.finfo(dtype).bits // 8
    count = rotate or max(2, min(MAX_BUFFERS, -(-ROTATION_BYTES // per_buffer)))
    if device.type == "cpu":
        count = min(count, 2)  # a CPU's caches are far smaller than one batch; save host memory
    memory_format = torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format
    g = generator or torch.Generator().manual_seed(SEED + 1)
    return [torch.randn(shape, generator=g).to(device=device, dtype=dtype, memory_format=memory_format)
            for _ in range(count)]


def build(case: Case, device: torch.device, rotate: int = 0) -> Workload:
    """The case's model (random init, seeded) in its precision and memory format, with its inputs."""
    torch.manual_seed(SEED)
    model = _construct(case.model)
    flops = count_flops(model, case.image_size)
    params = count_params(model)
    set_precision_flags(case.precision)
    dtype = DTYPES[case.precision]
    memory_format = torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format
    model = model.to(device=device, dtype=dtype, memory_format=memory_format)
    model.train(case.mode == "training")
    g = torch.Generator().manual_seed(SEED + 1)
    inputs = input_buffers(case, device, dtype, rotate, g)
    labels = [torch.randint(0, NUM_CLASSES, (case.batch_size,), generator=g).to(device) for _ in inputs]
    return Workload(model=model, inputs=inputs, labels=labels, flops_per_image=flops, params=params,
                    autocast_dtype=AUTOCAST.get(case.precision))


def reference_model(case: Case, device: torch.device) -> torch.nn.Module:
    """The same seeded model in eager fp32 (IEEE): the truth the correctness gate compares against."""
    torch.manual_seed(SEED)
    memory_format = torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format
    model = _construct(case.model).to(device=device, memory_format=memory_format)
    return model.train(case.mode == "training")


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, autocast: Callable[[], Any],
               scaler: torch.amp.GradScaler | None = None) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """Forward + cross-entropy + backward + optimizer step, the ResNet paper's training iteration."""

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss

    return step


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 and weight decay 1e-4, as in the ResNet paper."""
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
