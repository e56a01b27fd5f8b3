"""The runner's failure paths: OOM, errors, over-budget, time-outs and crashes are recorded and the suite goes on."""

import json
import os
import textwrap
import weakref

import pytest
import torch

from rbench import results
from rbench.hw import host
from rbench.run import backends, isolation, models, runner
from rbench.spec import Case, Policy

FAST = Policy(warmup_iters=1, warmup_s=0.0, min_iters=3, min_s=0.0, max_s=20.0, timeout_s=120)


def case(batch=1, size=32, model="resnet18", precision="fp32", backend="eager", mode="inference"):
    return Case(model, batch, size, precision, backend, mode, "channels_last", "cpu")


def test_ok_record_has_every_documented_field():
    record = isolation.InProcess("cpu").run(case(batch=2), FAST)
    assert record["status"] == "ok", record["reason"]
    for key in ("status", "reason", "model", "batch_size", "image_size", "precision", "backend", "mode",
                "memory_format", "device", "throughput_ips", "latency_ms", "samples_ms", "flops_per_image",
                "params", "tflops", "peak_memory_bytes", "power", "gate_error", "host_ms_per_iter", "cuda_graph"):
        assert key in record
    assert record["throughput_ips"] > 0 and len(record["samples_ms"]) == record["iters"] >= 3
    assert set(record["latency_ms"]) == {"p50", "p90", "p95", "p99", "min", "max", "mean", "stdev"}
    assert record["latency_ms"]["min"] <= record["latency_ms"]["p50"] <= record["latency_ms"]["max"]
    assert record["params"] == 11_689_512
    assert record["peak_memory_bytes"] > 0
    # A CPU's power: RAPL where this host lets us read it (root on bare metal), else the reason why not.
    assert record["power"].get("energy_j", 0) > 0 or (record["power"]["unavailable"] is True and record["power"]["reason"])


def test_simulated_oom_is_recorded_and_the_next_case_runs(monkeypatch):
    """Raise the allocator's error where torch raises it (a convolution's output allocation) for large batches."""
    original = torch.nn.Conv2d._conv_forward

    def conv_forward(self, x, weight, bias):
        if x.shape[0] >= 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total)")
        return original(self, x, weight, bias)

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", conv_forward)
    executor = isolation.InProcess("cpu")
    released = []
    monkeypatch.setattr(executor.device, "release_memory", lambda: released.append(True))
    records = [executor.run(c, FAST) for c in (case(batch=4), case(batch=1))]
    assert [r["status"] for r in records] == ["oom", "ok"]
    assert records[0]["reason"].startswith("OutOfMemoryError: CUDA out of memory")
    assert records[0]["flops_per_image"] > 0  # what was known before the failure is kept
    assert released, "memory must be released after a case"


def test_exception_is_recorded_as_error_with_one_line(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("kernel exploded\nwith a second line")

    monkeypatch.setattr(torch.nn.Linear, "forward", boom)
    record = isolation.InProcess("cpu").run(case(), FAST)
    assert record["status"] == "error"
    assert record["reason"] == "RuntimeError: kernel exploded"


def test_case_that_cannot_fit_is_over_budget_not_shrunk():
    record = isolation.InProcess("cpu").run(case(batch=2, size=64), Policy(warmup_iters=1, warmup_s=0, min_iters=100000,
                                                                        min_s=0, max_s=1.0))
    assert record["status"] == "over_budget"
    assert "min_iters=100000" in record["reason"] and "max_s=1 s" in record["reason"]
    assert record["samples_ms"] == []


def test_unsupported_precision_is_recorded_with_reason():
    record = isolation.InProcess("cpu").run(case(precision="tf32"), FAST)
    assert record["status"] == "unsupported"
    assert "tf32" in record["reason"]


def test_gate_turns_a_wrong_backend_output_into_incorrect(monkeypatch):
    """A non-eager backend's output is gated; a wrong output becomes `incorrect` and is not timed."""
    from rbench.run import backends

    class Wrong(backends.Backend):
        name = "compile"

        def prepare(self, model, case, device):
            return lambda x: model(x) * 1.01

    monkeypatch.setitem(backends.REGISTRY, "compile", Wrong())
    record = isolation.InProcess("cpu").run(case(backend="compile"), FAST)
    assert record["status"] == "incorrect"
    assert record["gate_error"] == pytest.approx(0.01, rel=1e-3)
    assert record["gate_tolerance"] == runner.GATE_TOLERANCE["fp32"]
    assert record["samples_ms"] == [] and record["throughput_ips"] is None


def test_worker_time_out_kills_the_case_and_the_next_one_runs(tmp_path):
    worker = isolation.Worker("cpu", tmp_path / "w.log")
    try:
        slow = worker.run(case(batch=8, size=224, model="resnet50"),
                          Policy(warmup_iters=1, warmup_s=0, min_iters=1000, min_s=60, max_s=1000, timeout_s=3))
        fast = worker.run(case(), FAST)
    finally:
        worker.close()
    assert slow["status"] == "timeout" and "timeout_s=3" in slow["reason"]
    assert fast["status"] == "ok"


def test_worker_crash_is_recorded_and_the_worker_restarts(tmp_path, monkeypatch):
    """A sitecustomize on the worker's path makes batch size 3 crash the process with SIGSEGV."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""
        import os, signal
        import rbench.run.runner as r
        _execute = r.execute
        def execute(case, *args):
            if case.batch_size == 3:
                os.kill(os.getpid(), signal.SIGSEGV)
            return _execute(case, *args)
        r.execute = execute
    """))
    monkeypatch.setenv("PYTHONPATH", f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    worker = isolation.Worker("cpu", tmp_path / "w.log")
    try:
        crashed = worker.run(case(batch=3), FAST)
        after = worker.run(case(batch=1), FAST)
    finally:
        worker.close()
    assert crashed["status"] == "error"
    assert "worker process died (signal SIGSEGV)" in crashed["reason"]
    assert after["status"] == "ok"


def test_run_cases_appends_each_record_and_marks_skipped(tmp_path):
    writer = results.RunWriter.create(tmp_path / "r.jsonl", {"name": "t"}, {"device": {"name": "cpu"}})
    cases = [case(batch=1), case(batch=2)]
    runner.run_cases(cases, FAST, isolation.InProcess("cpu"), writer, selected=lambda c: c.batch_size == 1)
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [line["type"] for line in lines] == ["run", "record", "record"]
    assert [line["status"] for line in lines[1:]] == ["ok", "skipped"]


class Ledger(host.CpuDevice):
    """A CPU device with a pretend device allocator: what is allocated, its peak since the last reset, and a
    log of the calls that matter to a case's memory."""

    def __init__(self):
        super().__init__()
        self.allocated = self.peak = 0
        self.log = []

    def allocate(self, n):
        self.allocated += n
        self.peak = max(self.peak, self.allocated)
        self.allocated -= n

    def reset_peak_memory(self):
        self.log.append("reset_peak")
        self.peak = self.allocated

    def peak_memory(self):
        return {"allocated": self.peak, "reserved": self.peak, "source": "ledger"}

    def release_memory(self):
        self.log.append("release")


class Correct(backends.Backend):
    """A gated backend (it takes compile's place) whose output is eager's."""

    name = "compile"


def ledger_executor(monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "compile", Correct())
    executor = isolation.InProcess("cpu")
    executor.device = Ledger()
    return executor, executor.device


def test_peak_memory_is_the_timed_loops_not_the_gates_or_the_autotuners(monkeypatch):
    """The gate's fp32 reference (1 GiB here) and an autotuning buffer in the first warm-up iteration
    (256 MiB) are not in the record's peak; the loop's 10 MiB per iteration is (issue 18, item 2)."""
    executor, ledger = ledger_executor(monkeypatch)
    gate = runner.gate

    def gate_with_reference(module, workload, case, device, info=None):
        ledger.allocate(2 ** 30)
        return gate(module, workload, case, device, info)

    make_step = backends.make_step

    def step_that_autotunes(*args):
        step, calls = make_step(*args), []

        def tuned(i):
            ledger.allocate(256 * 2 ** 20 if not calls else 10 * 2 ** 20)
            calls.append(i)
            return step(i)

        return tuned

    monkeypatch.setattr(runner, "gate", gate_with_reference)
    monkeypatch.setattr(backends, "make_step", step_that_autotunes)
    record = executor.run(case(backend="compile"), FAST)
    assert record["status"] == "ok", record["reason"]
    assert record["gate_error"] is not None
    assert record["peak_memory"]["allocated"] == record["peak_memory_bytes"] == 10 * 2 ** 20


def test_a_case_cleans_up_after_itself_in_order(monkeypatch):
    """Case start (other processes noted), build, gate, its memory given back, the window's peak reset; after
    the case the workload is dropped, then compiled graphs, then the allocator's cache (issue 18, items 3, 10)."""
    executor, ledger = ledger_executor(monkeypatch)
    alive = {}
    build, gate = models.build, runner.gate

    def logged_build(*args):
        ledger.log.append("build")
        workload = build(*args)
        alive["model"], alive["input"] = weakref.ref(workload.model), weakref.ref(workload.inputs[0])
        return workload

    def logged_gate(*args):
        ledger.log.append("gate")
        return gate(*args)

    def release():
        ledger.log.append("release")
        alive["at release"] = [ref() is not None for ref in (alive["model"], alive["input"])]

    monkeypatch.setattr(models, "build", logged_build)
    monkeypatch.setattr(runner, "gate", logged_gate)
    monkeypatch.setattr(ledger, "release_memory", release)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: ledger.log.append("dynamo_reset"))
    monitor = executor.monitor
    monkeypatch.setattr(monitor, "case_start", lambda: ledger.log.append("case_start"))
    monkeypatch.setattr(monitor, "start", lambda: ledger.log.append("window_start"))
    record = executor.run(case(backend="compile"), FAST)
    assert record["status"] == "ok", record["reason"]
    assert ledger.log == ["case_start", "build", "gate", "release", "reset_peak", "window_start",
                          "dynamo_reset", "release"]
    assert alive["at release"] == [False, False], "the workload must be gone before the cache is emptied"
