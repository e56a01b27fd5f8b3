"""Runs the cases of a suite: one worker process for isolation, time-outs, OOM, the correctness gate.

Cases run in a long-lived worker process (`rbench.run.worker`) so that a crash, a hang or a poisoned CUDA
context costs one case, not the suite: the worker is killed and restarted and the case is recorded
`timeout` or `error`. Each record is appended to the run file the moment it exists.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rbench import results
from rbench.names import one_line
from rbench.spec import Case, Policy

# Whole-network relative error allowed by the correctness gate, per precision. Error accumulates over
# ~50 layers: eager PyTorch itself lands near 1e-6 (fp32), 1e-3 (fp16) and 8e-3 (bf16) against fp64
# on ResNet-50, so these are about 5x the per-kernel tolerances to leave room for a different but
# correct summation order.
GATE_TOLERANCE = {"fp32": 5e-5, "tf32": 2.5e-3, "fp16": 1e-2, "amp_fp16": 1e-2, "bf16": 5e-2, "amp_bf16": 5e-2}
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


def gate(module: Any, workload: Any, case: Case, device: Any) -> float:
    """The backend's output against the eager fp32 (IEEE) model on the case's first input buffer."""
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
    return relative_error(got, expected)


def execute(case: Case, policy: Policy, device: Any, monitor: Any) -> dict[str, Any]:
    """Measure one case in this process; every outcome becomes a record, nothing escapes."""
    import torch

    from rbench.run import backends, measure, models

    state: dict[str, Any] = {}
    try:
        reason = device.unsupported_precision(case.precision)
        backend = backends.get(case)
        reason = reason or backend.unsupported(case, device)
        if reason:
            return results.new_record(case, "unsupported", reason)
        device.reset_peak_memory()
        workload = state["workload"] = models.build(case, device.torch_device, policy.rotate_buffers)
        info = state["info"] = {"flops_per_image": workload.flops_per_image, "params": workload.params}
        module = state["module"] = backend.prepare(workload.model, case, device)
        if backend.name != "eager" and case.mode == "inference":
            info["gate_tolerance"] = GATE_TOLERANCE[case.precision]
            info["gate_error"] = gate(module, workload, case, device)
            if not info["gate_error"] <= info["gate_tolerance"]:
                return results.new_record(
                    case, "incorrect", f"output differs from eager fp32 by {info['gate_error']:.3g} "
                    f"(relative norm; tolerance {info['gate_tolerance']:g})", **info)
        step = backends.make_step(module, workload, case, device)
        timing = measure.run(step, device, policy, window=monitor)
        images = timing.iters * case.batch_size
        tele = monitor.result(images)
        peak = device.peak_memory()
        throughput = images / timing.window_s
        return results.new_record(
            case, "ok", "", **info,
            throughput_ips=throughput, latency_ms=measure.summarize(timing.samples_ms),
            samples_ms=timing.samples_ms, iters=timing.iters, window_s=timing.window_s,
            warmup_iters=timing.warmup_iters, warmup_s=timing.warmup_s,
            tflops=throughput * workload.flops_per_image * (3 if case.mode == "training" else 1) / 1e12,
            peak_memory_bytes=peak.get("allocated", peak.get("host_rss")), peak_memory=peak, **tele)
    except measure.OverBudget as e:
        return results.new_record(case, "over_budget", str(e), **_info(state))
    except BaseException as e:  # noqa: BLE001 - a failed case must never stop the suite
        if isinstance(e, KeyboardInterrupt):
            raise
        if is_oom(e):
            return results.new_record(case, "oom", one_line(e), **_info(state))
        traceback.print_exc(file=sys.stderr)
        return results.new_record(case, "error", one_line(e), **_info(state))
    finally:
        state.clear()
        gc.collect()
        try:
            device.release_memory()
            torch._dynamo.reset()
        except Exception:  # noqa: BLE001 - cleaning up after a broken context must not raise
            pass


def _info(state: dict[str, Any]) -> dict[str, Any]:
    """What a failed case had measured before it failed (FLOPs, parameters, the gate's figure)."""
    return dict(state.get("info", {}))


class InProcess:
    """Runs cases in this process: no isolation from crashes or hangs (for tests and debugging)."""

    def __init__(self, device_kind: str):
        from rbench.hw import detect

        self.device = detect.detect(device_kind)
        self.monitor = detect.monitor_for(self.device)

    def run(self, case: Case, policy: Policy) -> dict[str, Any]:
        return execute(case, policy, self.device, self.monitor)

    def close(self) -> None:
        self.monitor.close()


class Worker:
    """Runs cases in a child process (`python -m rbench.run.worker`), restarted after a crash or time-out.

    The worker's own output (warnings, compiler logs, tracebacks) goes to `log_path`, so the live
    display stays readable and a crash's last words are kept.
    """

    def __init__(self, device_kind: str, log_path: Path):
        self.device_kind = device_kind
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()

    def _start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rbench.run.worker", "--device", self.device_kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        log.close()
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        ready = self._reply(READY_TIMEOUT_S)
        if not ready or "ready" not in ready:
            self._kill()
            raise RuntimeError(f"worker process did not start: {self._last_log_line()}")

    @staticmethod
    def _read(stream: Any, lines: queue.Queue) -> None:
        for line in iter(stream.readline, b""):
            lines.put(line)
        lines.put(None)

    def _reply(self, timeout: float) -> dict[str, Any] | None:
        """The worker's next message; None if it died; raises TimeoutError after `timeout` seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        return None if line is None else json.loads(line)

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None

    def _last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        return lines[-1].strip()[:300] if lines else "no output"

    def run(self, case: Case, policy: Policy) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        request = json.dumps({"case": case.to_dict(), "policy": asdict(policy)}) + "\n"
        self.proc.stdin.write(request.encode())
        self.proc.stdin.flush()
        try:
            reply = self._reply(policy.timeout_s)
        except TimeoutError:
            self._kill()
            return results.new_record(case, "timeout", f"case exceeded timeout_s={policy.timeout_s:g} s "
                                      "(build, compile, gate, warm-up and timing together); worker killed")
        if reply is None:
            code = self.proc.wait()
            self.proc = None
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            return results.new_record(case, "error", f"worker process died ({how}): {self._last_log_line()}")
        if reply["record"]["status"] == "error":
            self._kill()  # an error may leave the device context unusable: start the next case afresh
        return reply["record"]

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()


def run_cases(cases: Iterable[Case], policy: Policy, executor: Any, writer: results.RunWriter,
              selected: Callable[[Case], bool] = lambda c: True,
              on_start: Callable[[int, Case], None] = lambda i, c: None,
              on_done: Callable[[int, dict[str, Any]], None] = lambda i, r: None) -> list[dict[str, Any]]:
    """Run each case and append its record as soon as it exists; a failed case never stops the suite."""
    done = []
    for i, case in enumerate(cases):
        on_start(i, case)
        if selected(case):
            record = executor.run(case, policy)
        else:
            record = results.new_record(case, "skipped", "not selected by --filter")
        writer.append(record)
        done.append(record)
        on_done(i, record)
    return done
