"""Measures one case and runs a suite's cases: the correctness gate, OOM and failure statuses, the records.

`execute` turns one case into a record whatever happens (nothing escapes); `run_cases` runs a list of
cases through an executor (`rbench.run.isolation`: in a worker process, or in this one) and appends
each record to the run file the moment it exists.
"""

from __future__ import annotations

import gc
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from rbench import results
from rbench.names import one_line
from rbench.run import scenarios_plan
from rbench.spec import Case, Policy

# Whole-network relative error allowed by the correctness gate, per precision. Error accumulates over
# ~50 layers: eager PyTorch itself lands near 1e-6 (fp32), 1e-3 (fp16) and 8e-3 (bf16) against fp64
# on ResNet-50, so these are about 5x the per-kernel tolerances to leave room for a different but
# correct summation order.
GATE_TOLERANCE = {"fp32": 5e-5, "tf32": 2.5e-3, "fp16": 1e-2, "amp_fp16": 1e-2, "bf16": 5e-2, "amp_bf16": 5e-2,
                  # rbench's own quantization (rbench.run.quantize), measured on seeded random-weight
                  # ResNet-18/50: int8 2-4.6 %, fp8 (3 mantissa bits) 9-12 %; about 2x that (README)
                  "int8": 0.1, "fp8": 0.25}
READY_TIMEOUT_S = 300.0


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text)


def relative_error(got: Any, expected: Any) -> float:
    """||got - expected|| / ||expected|| in float64; inf when got has NaN/inf or the shapes differ."""
    import torch

    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    if got.shape != expected.shape or not torch.isfinite(got).all():
        return float("inf")
    return float((got - expected).norm() / expected.norm().clamp_min(1e-30))


def gate(module: Any, workload: Any, case: Case, device: Any, info: dict[str, Any] | None = None) -> float:
    """The backend's output against the eager fp32 (IEEE) model on the case's first input buffer.

    With `info`, also stores there `top1_agreement`: the share of the batch's images whose top-1 class
    is eager fp32's."""
    import torch

    from rbench.run import models

    reference = models.reference_model(case, device.torch_device)
    x = workload.inputs[0]
    models.set_precision_flags("fp32")
    try:
        with torch.inference_mode():
            expected = reference(x.float())
    finally:
        models.set_precision_flags(case.precision)
    del reference
    with torch.inference_mode(), workload.autocast(device.torch_type):
        got = module(x)
    if info is not None:
        from rbench.run.quantize import top1_agreement

        info["top1_agreement"] = top1_agreement(got, expected)
    return relative_error(got, expected)


def execute(case: Case, policy: Policy, device: Any, monitor: Any) -> dict[str, Any]:
    """Measure one case in this process; every outcome becomes a record, nothing escapes.

    The measuring happens in `_measure`, so that when it returns (or raises) nothing of the case is
    left referenced here and the clean-up really frees the workload's memory.
    """
    from rbench.run import measure

    info: dict[str, Any] = {}  # what is known before the timing: FLOPs, parameters, the gate's figure
    try:
        return _measure(case, policy, device, monitor, info)
    except measure.OverBudget as e:
        return results.new_record(case, "over_budget", str(e), **info)
    except BaseException as e:  # noqa: BLE001 - a failed case must never stop the suite
        if isinstance(e, KeyboardInterrupt):
            raise
        if is_oom(e):
            return results.new_record(case, "oom", one_line(e), **info)
        traceback.print_exc(file=sys.stderr)
        return results.new_record(case, "error", one_line(e), **info)
    finally:
        clean_up(device)


def _measure(case: Case, policy: Policy, device: Any, monitor: Any, info: dict[str, Any]) -> dict[str, Any]:
    from rbench.run import backends, cuda_graph, measure, models, scenarios, triton_quant

    reason = device.unsupported_precision(case.precision)
    backend = backends.get(case)
    reason = reason or backend.unsupported(case, device) or scenarios.unsupported(case, device)
    if reason:
        return results.new_record(case, "unsupported", reason)
    monitor.case_start()  # who else is on the device before we build, compile and autotune
    workload = models.build(case, device.torch_device, policy.rotate_buffers)
    info.update(flops_per_image=workload.flops_per_image, params=workload.params)
    module = backend.prepare(workload.model, case, device)
    if case.precision in triton_quant.PRECISIONS:
        info["quant_dtype"] = str(module.dtype).removeprefix("torch.")  # fp8: float8_e4m3fn, or fnuz on MI300
    if backend.name != "eager" and case.mode == "inference":
        info["gate_tolerance"] = GATE_TOLERANCE[case.precision]
        info["gate_error"] = gate(module, workload, case, device, info)
        if not info["gate_error"] <= info["gate_tolerance"]:
            return results.new_record(
                case, "incorrect", f"output differs from eager fp32 by {info['gate_error']:.3g} "
                f"(relative norm; tolerance {info['gate_tolerance']:g})", **info)
        # The gate's fp32 reference and Triton's autotuning buffers are gone: give their cached blocks
        # back, so that neither the peak nor the reserved figure carries them.
        gc.collect()
        device.release_memory()
    if case.scenario:  # an MLPerf scenario through LoadGen, or a max-batch probe
        if backend.name == "triton":
            info.update(cuda_graph=False, cuda_graph_reason="scenarios and max-batch probes launch per query")
        return scenarios.measure(case, policy, device, monitor, module, workload, info)
    step = backends.make_step(module, workload, case, device, info)
    timing = measure.run(step, device, policy, window=TimedWindow(device, monitor))
    images = timing.iters * case.batch_size
    tele = monitor.result(images)
    tele["warnings"] = info.pop("warnings", []) + tele.get("warnings", [])
    peak = cuda_graph.merge_peak(device.peak_memory(), getattr(step, "forward", None))
    throughput = images / timing.window_s
    return results.new_record(
        case, "ok", "", **info,
        throughput_ips=throughput, latency_ms=measure.summarize(timing.samples_ms),
        samples_ms=timing.samples_ms, iters=timing.iters, window_s=timing.window_s,
        warmup_iters=timing.warmup_iters, warmup_s=timing.warmup_s, host_ms_per_iter=timing.host_ms_per_iter,
        tflops=throughput * workload.flops_per_image * (3 if case.mode == "training" else 1) / 1e12,
        peak_memory_bytes=peak.get("allocated", peak.get("host_rss")), peak_memory=peak, **tele)


class TimedWindow:
    """The edges of the timed window: the peak-memory counters restart, then the telemetry monitor.

    Resetting here, after warm-up, makes `peak_memory` the timed loop's own: the model, its inputs and
    the loop's activations (and, in training, gradients and optimizer state), not the correctness
    gate's fp32 reference, compilation or autotuning that ran before.
    """

    def __init__(self, device: Any, monitor: Any):
        self.device, self.monitor = device, monitor

    def start(self) -> None:
        self.device.reset_peak_memory()
        self.monitor.start()

    def stop(self) -> None:
        self.monitor.stop()


def clean_up(device: Any) -> None:
    """After a case, with nothing of it referenced any more: collect it, drop compiled graphs, then
    give the allocator's cache back, so the next case's `reserved` starts from nothing.

    `_dynamo.reset()` comes before `empty_cache()`: compiled code and CUDA-graph pools hold device
    memory that only becomes free once they are dropped.
    """
    import torch

    gc.collect()
    try:
        torch._dynamo.reset()
        gc.collect()
        device.release_memory()
    except Exception:  # noqa: BLE001 - cleaning up after a broken context must not raise
        pass


def run_cases(cases: Iterable[Case], policy: Policy, executor: Any, writer: results.RunWriter,
              selected: Callable[[Case], bool] = lambda c: True,
              on_start: Callable[[int, Case], None] = lambda i, c: None,
              on_done: Callable[[int, dict[str, Any]], None] = lambda i, r: None) -> list[dict[str, Any]]:
    """Run each case and append its record as soon as it exists; a failed case never stops the suite."""
    done = []
    for i, case in enumerate(cases):
        on_start(i, case)
        if selected(case):
            record = scenarios_plan.run(case, policy, executor, writer)
        else:
            record = results.new_record(case, "skipped", "not selected by --filter")
        writer.append(record)
        done.append(record)
        on_done(i, record)
    return done
