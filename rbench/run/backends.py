"""Backends turn a built model into what the timing loop calls: eager, torch.compile, triton.

A registry maps each backend name of `rbench.spec.BACKENDS` to a class that says whether it can run
a case on a device (else the one-line reason) and prepares the model. The step built around it
(inference forward, or the full training iteration) is the same for every backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from rbench.run import models
from rbench.spec import BACKENDS, Case

Forward = Callable[[torch.Tensor], torch.Tensor]


class Backend:
    """Eager PyTorch: the model as built."""

    name = "eager"

    def unsupported(self, case: Case, device: Any) -> str | None:
        from rbench.run import triton_quant

        return triton_quant.torch_unsupported(case)

    def prepare(self, model: torch.nn.Module, case: Case, device: Any) -> torch.nn.Module:
        return model

    def graph(self, forward: Forward, example: torch.Tensor, case: Case, device: Any,
              info: dict[str, Any]) -> Forward:
        """The inference forward the closed loop times; rbench captures no graph for this backend."""
        return forward


class CompileBackend(Backend):
    """torch.compile with the case's mode (`compile:max-autotune` etc.; plain `compile` is the default mode)."""

    name = "compile"

    def unsupported(self, case: Case, device: Any) -> str | None:
        reason = super().unsupported(case, device)  # no int8 / fp8 convolution in PyTorch
        if reason:
            return reason
        if device.kind == "mps" and case.mode == "training":
            return "torch.compile training on MPS is not supported by PyTorch's inductor"
        return None

    def prepare(self, model: torch.nn.Module, case: Case, device: Any) -> torch.nn.Module:
        mode = None if case.compile_mode == "default" else case.compile_mode
        return torch.compile(model, mode=mode)


class TritonBackend(Backend):
    """The whole network on rbench_kernels: BatchNorm folded, conv+BN(+add)(+ReLU) fused per layer."""

    name = "triton"

    def unsupported(self, case: Case, device: Any) -> str | None:
        from rbench.run import triton_backend, triton_quant, triton_zoo

        if case.mode != "inference":
            return "inference only: the triton backend has no backward kernels"
        quantized = case.precision in triton_quant.PRECISIONS
        if not quantized and case.precision not in triton_backend.PRECISIONS:
            return f"precision {case.precision} not supported by rbench_kernels (supported: {', '.join(triton_backend.PRECISIONS)})"
        if device.kind in ("cpu", "mps") and os.environ.get("TRITON_INTERPRET") != "1":
            return (f"Triton kernels need a CUDA/ROCm/XPU GPU; on {device.kind} they run only under "
                    "TRITON_INTERPRET=1 (a correctness tool, far too slow to benchmark)")
        if device.kind not in ("cpu", "mps"):
            reason = triton_backend.unsupported_target(device)  # the GPU's own target, not assumed
            if reason:
                return reason
        return triton_quant.unsupported(case, device) if quantized else triton_zoo.unsupported_model(case.model)

    def prepare(self, model: torch.nn.Module, case: Case, device: Any) -> torch.nn.Module:
        from rbench.run import quantize, triton_quant, triton_zoo

        if case.precision in triton_quant.PRECISIONS:  # calibrated and quantized by rbench (int8, fp8)
            dtype = quantize.quant_dtype(case.precision, device.gpu_target())  # fp8: fnuz on MI300
            return triton_quant.convert(model, case.precision, case.image_size, dtype)
        return triton_zoo.convert(model, allow_tf32=case.precision == "tf32")

    def graph(self, forward: Forward, example: torch.Tensor, case: Case, device: Any,
              info: dict[str, Any]) -> Forward:
        """The whole forward in one CUDA graph (`rbench.run.cuda_graph`), unless `triton:no-graph` or none can be
        captured here; `info` gets `cuda_graph`, `cuda_graph_reason` and any warning."""
        from rbench.run import cuda_graph

        if case.backend_mode == "no-graph":
            info.update(cuda_graph=False, cuda_graph_reason="triton:no-graph launches every kernel from Python")
            return forward
        timed, fields = cuda_graph.graphed_forward(forward, example, device)
        info.setdefault("warnings", []).extend(fields.pop("warnings", []))
        info.update(fields)
        return timed


REGISTRY: dict[str, Backend] = {b.name: b for b in (Backend(), CompileBackend(), TritonBackend())}
assert tuple(REGISTRY) == BACKENDS, "spec.BACKENDS and the backend registry must list the same names"


def get(case: Case) -> Backend:
    try:
        return REGISTRY[case.backend_name]
    except KeyError:
        raise ValueError(f"unknown backend {case.backend!r}; known: {', '.join(REGISTRY)}") from None


def make_step(module: torch.nn.Module, workload: models.Workload, case: Case, device: Any,
              info: dict[str, Any] | None = None) -> Callable[[int], Any]:
    """`step(i)`: one iteration on input buffer i (mod the number of buffers).

    With `info` (the closed loop's record fields), an inference forward goes through the backend's
    `graph`: the triton backend's is a CUDA-graph replay where one can be captured, and `step.forward`
    is what is timed (its capture's peak memory, if any, is merged into the record's)."""
    inputs, labels = workload.inputs, workload.labels
    autocast = lambda: workload.autocast(device.torch_type)  # noqa: E731
    if case.mode == "training":
        scaler = torch.amp.GradScaler(device.torch_type) if case.precision == "amp_fp16" else None
        train = models.train_step(module, models.sgd(module), autocast, scaler)
        return lambda i: train(inputs[i % len(inputs)], labels[i % len(labels)])

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast():
            return module(x)

    if info is not None:
        forward = get(case).graph(forward, inputs[0], case, device, info)

    def infer(i: int) -> torch.Tensor:
        return forward(inputs[i % len(inputs)])

    infer.forward = forward  # type: ignore[attr-defined]
    return infer
