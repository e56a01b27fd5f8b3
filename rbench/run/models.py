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

from rbench.run import zoo
from rbench.spec import DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZES, Case

RESNET_FAMILY = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
                 "wide_resnet101_2", "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d")
SEED = 0
NUM_CLASSES = 1000
# Distinct input memory rotated through on a GPU, so that no batch is served from a warm cache (an
# H100's L2 is 50 MB, an MI300X's Infinity Cache 256 MB): one buffer, a batch at each of its offsets.
ROTATION_BYTES = 256 * 2**20
# On a CPU the rotation is bounded by host memory instead (at least two batches).
HOST_ROTATION_BYTES = 32 * 2**20
# Every batch starts this aligned in the buffer: inductor and Triton specialise on 16-byte alignment
# (a misaligned input is copied), and 256 is cudaMalloc's own.
ALIGN_BYTES = 256

DTYPES = {
    "fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
    "amp_fp16": torch.float32, "amp_bf16": torch.float32,
    # quantized by the backend (rbench.run.triton_quant) from an fp16 model: stem, classifier, inputs fp16
    "int8": torch.float16, "fp8": torch.float16,
}
AUTOCAST = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}
# Suites expand a model that they give no image size at its own (rbench.spec.DEFAULT_IMAGE_SIZES).
DEFAULT_IMAGE_SIZES.update({name: entry.image_size for name, entry in zoo.REGISTRY.items()})


@lru_cache(maxsize=1)
def names() -> tuple[str, ...]:
    """Every model: torchvision's ResNet family first, then the papers' networks (`rbench.run.zoo`), then
    the rest of torchvision's classification models."""
    others = [m for m in torchvision.models.list_models(module=torchvision.models) if m not in RESNET_FAMILY]
    return RESNET_FAMILY + tuple(zoo.REGISTRY) + tuple(sorted(others))


def default_image_size(name: str) -> int:
    """The size a suite's case of `name` runs at unless the suite sets one: 32 for CIFAR networks, else 224."""
    return DEFAULT_IMAGE_SIZES.get(name, DEFAULT_IMAGE_SIZE)


def num_classes(name: str) -> int:
    return zoo.REGISTRY[name].num_classes if name in zoo.REGISTRY else NUM_CLASSES


def _construct(name: str) -> torch.nn.Module:
    if name in zoo.REGISTRY:
        return zoo.build(name)
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


def rotation_count(batch_bytes: int, device_type: str, rotate: int = 0) -> int:
    """How many distinct batches to rotate through: `rotate` if set, else >= ROTATION_BYTES of them on a
    GPU (HOST_ROTATION_BYTES on a CPU), and at least two."""
    if rotate:
        return rotate
    budget = HOST_ROTATION_BYTES if device_type == "cpu" else ROTATION_BYTES
    return max(2, -(-budget // max(batch_bytes, 1)))


def input_buffers(case: Case, device: torch.device, dtype: torch.dtype, rotate: int = 0,
                  generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Seeded synthetic images: batches at distinct, aligned offsets of one buffer (`rotation_count`)."""
    n, c, h, w = case.batch_size, 3, case.image_size, case.image_size
    itemsize = torch.finfo(dtype).bits // 8
    step = -(-n * c * h * w * itemsize // ALIGN_BYTES) * ALIGN_BYTES // itemsize  # elements between batches
    count = rotation_count(step * itemsize, device.type, rotate)
    g = generator or torch.Generator().manual_seed(SEED + 1)
    if device.type == "cpu":
        flat = torch.randn(count * step, generator=g).to(dtype)
    else:  # generated where it lives: hundreds of MiB through the host would cost seconds per case
        seed = int(torch.randint(2**62, (1,), generator=g))
        on_device = torch.Generator(device=device).manual_seed(seed)
        flat = torch.randn(count * step, generator=on_device, device=device, dtype=dtype)
    batches = []
    for i in range(count):
        chunk = flat[i * step:i * step + n * c * h * w]
        batches.append(chunk.view(n, h, w, c).permute(0, 3, 1, 2) if case.memory_format == "channels_last"
                       else chunk.view(n, c, h, w))
    return batches


def build(case: Case, device: torch.device, rotate: int = 0) -> Workload:
    """The case's model (random init, seeded) in its precision and memory format, with its inputs."""
    torch.manual_seed(SEED)
    model = calibrate_batchnorm(_construct(case.model), case.model, case.image_size)
    if case.stochastic_depth is not None and case.mode == "training":
        model = zoo.stochastic_depth(model, case.stochastic_depth, SEED)
    flops = count_flops(model, case.image_size)
    params = count_params(model)
    set_precision_flags(case.precision)
    dtype = DTYPES[case.precision]
    memory_format = torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format
    model = model.to(device=device, dtype=dtype, memory_format=memory_format)
    model.train(case.mode == "training")
    g = torch.Generator().manual_seed(SEED + 1)
    inputs = input_buffers(case, device, dtype, rotate, g)
    labels = [torch.randint(0, num_classes(case.model), (case.batch_size,), generator=g).to(device) for _ in inputs]
    return Workload(model=model, inputs=inputs, labels=labels, flops_per_image=flops, params=params,
                    autocast_dtype=AUTOCAST.get(case.precision))


def reference_model(case: Case, device: torch.device) -> torch.nn.Module:
    """The same seeded model in eager fp32 (IEEE): the truth the correctness gate compares against."""
    torch.manual_seed(SEED)
    memory_format = torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format
    model = calibrate_batchnorm(_construct(case.model), case.model, case.image_size)
    model = model.to(device=device, memory_format=memory_format)
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


# Realistic activation statistics without downloaded weights. A random-weight network's BatchNorms are
# fresh (running mean 0, variance 1): in eval mode each is the identity, so every residual block adds an
# unnormalised branch to its input and activations grow block by block, past fp16's 65504 in the deeper
# networks (at 64 px the last stage's largest activation is 6.5e4 in resnet101 and 4.0e7 in resnet152).
# Calibration gives each BatchNorm the scale of its input on seeded synthetic images instead. One figure
# per layer (running_var = the input's mean square over all channels, running_mean = 0), not per
# channel: per-channel statistics, as a train-mode pass would gather them, blow a random network's
# near-dead channels up by orders of magnitude and its fp16 rounding error with them (measured at 32 px:
# fp16 vs fp32 0.08 for resnet50 and 0.4 for resnet152, against about 1e-3 with one figure per layer).
CALIBRATION_IMAGES = 4
_CALIBRATED: dict[tuple[str, int], list[float | None]] = {}  # (model, image size) -> each BatchNorm's scale


def _batchnorms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def _ieee_fp32() -> Any:
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _measure_scales(model: torch.nn.Module, norms: list[Any], image_size: int) -> list[float | None]:
    """One eval-mode pass in IEEE fp32 on seeded images; each BatchNorm is calibrated as it is reached,
    so the ones after it see calibrated inputs. A BatchNorm the pass does not reach keeps its statistics."""
    scales: list[float | None] = [None] * len(norms)
    index = {id(bn): i for i, bn in enumerate(norms)}

    def calibrate(bn: Any, args: tuple[torch.Tensor, ...]) -> None:
        i = index[id(bn)]
        if scales[i] is None:
            scales[i] = float(args[0].detach().float().pow(2).mean())
            bn.running_mean.zero_()
            bn.running_var.fill_(scales[i])

    hooks = [bn.register_forward_pre_hook(calibrate) for bn in norms]
    was_training = model.training
    x = torch.randn(CALIBRATION_IMAGES, 3, image_size, image_size, generator=torch.Generator().manual_seed(SEED + 2))
    try:
        with torch.no_grad(), _ieee_fp32():
            model.eval()(x.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return scales


def calibrate_batchnorm(model: torch.nn.Module, name: str, image_size: int) -> torch.nn.Module:
    """Give every BatchNorm of the freshly seeded model `name` realistic running statistics, in place.

    The scales are measured once per model and image size in this process (in fp32, where the model
    is, before it moves or changes precision), so a case's model and the gate's reference model get the
    same ones. Models without BatchNorm are returned unchanged.
    """
    norms = _batchnorms(model)
    if not norms:
        return model
    key = (name, image_size)
    if key not in _CALIBRATED:
        _CALIBRATED[key] = _measure_scales(model, norms, image_size)
        while len(_CALIBRATED) > 32:
            _CALIBRATED.pop(next(iter(_CALIBRATED)))
    with torch.no_grad():
        for bn, scale in zip(norms, _CALIBRATED[key]):
            if scale is not None:
                bn.running_mean.zero_()
                bn.running_var.fill_(scale)
    return model

