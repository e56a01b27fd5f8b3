"""Max-batch search: the largest batch a case runs without running out of memory, by doubling then bisection.

`search` runs in the parent (`rbench run`, `rbench maxbatch`): each probe is a case of its own at one
batch size (`scenario: max_batch`), run by the executor (the worker process: an OOM that leaves a
device context unusable costs one worker) and recorded the moment it ends. The answer is a record of
its own: `scenario: max_batch`, `batch_size: null`, `max_batch` (the largest batch that ran) and
`first_oom_batch`. A probe that neither runs nor runs out of memory (an error, a time-out, a wrong
result, over budget) ends the search with that status: never a silent fallback.

`probe` runs in the worker, inside `rbench.run.runner.execute`: a warm-up and a timed step, each under
the suite's `memory_limit_mb` if it sets one (`memory_cap`: RLIMIT_AS on a CPU, the allocator's
per-process fraction on CUDA/ROCm), so that a CPU can show the search working. With a limit, one step
runs before them outside it: kernel selection and JIT code are not what the limit is about.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rbench import results, scenario_spec
from rbench.scenario_spec import MAX_BATCH
from rbench.spec import Case, Policy

# A probe shows that a batch runs: one warm-up step (allocations, compilation) and one timed step.
PROBE_POLICY = {"warmup_iters": 1, "warmup_s": 0.0, "min_iters": 1, "min_s": 0.0}
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD = 128 * 1024


def probe_policy(policy: Policy) -> Policy:
    """The suite's policy cut down to a probe; its time-out still bounds each probe."""
    return dataclasses.replace(policy, **PROBE_POLICY, max_s=policy.timeout_s)


def search(case: Case, policy: Policy, executor: Any, writer: results.RunWriter) -> dict[str, Any]:
    """Probe batch sizes `start` (1), 2x, 4x, ... until one runs out of memory, then bisect; every probe is
    written to `writer` as it ends; returns the answer's record (which the caller writes)."""
    s = scenario_spec.settings(MAX_BATCH, case.scenario_settings)
    policy = probe_policy(policy)
    probes: list[dict[str, Any]] = []
    fits = oom = None
    stopped: dict[str, Any] | None = None

    def run(batch: int) -> str:
        record = executor.run(dataclasses.replace(case, batch_size=batch), policy)
        record["max_batch_probe"] = True
        writer.append(record)
        probes.append({"batch_size": batch, "status": record["status"], "reason": record["reason"],
                       "peak_memory_bytes": record.get("peak_memory_bytes")})
        return record["status"]

    def step(batch: int) -> bool:
        """Probe `batch`; False once the search cannot go on."""
        nonlocal fits, oom, stopped
        status = run(batch)
        if status == "ok":
            fits = batch
        elif status == "oom":
            oom = batch
        else:
            stopped = probes[-1]
        return stopped is None

    batch = min(s.start, s.largest)
    while step(batch) and oom is None and batch < s.largest:
        batch = min(batch * 2, s.largest)
    # Bisection between the largest batch that ran (0 if `start` did not fit) and the smallest that did not.
    while stopped is None and oom is not None and oom - (fits or 0) > max(1, int((fits or 0) * s.tolerance)):
        step(((fits or 0) + oom) // 2)
    return answer(case, s, fits, oom, stopped, probes)


def answer(case: Case, s: scenario_spec.Settings, fits: int | None, oom: int | None,
           stopped: dict[str, Any] | None, probes: list[dict[str, Any]]) -> dict[str, Any]:
    """The search's record: `ok` with `max_batch`, or the status of the probe that stopped it, with why."""
    fields = {"max_batch": fits, "first_oom_batch": oom, "probes": probes, "metric": "max_batch",
              "metric_value": fits, "metric_unit": "images", "better": "higher",
              "scenario_settings": dataclasses.asdict(s), "bounded": fits == s.largest}
    if stopped is not None:
        known = f"; largest batch that ran: {fits}" if fits else ""
        return results.new_record(case, stopped["status"], f"probe at batch {stopped['batch_size']} ended "
                                  f"{stopped['status']}: {stopped['reason']}{known}", **fields)
    if fits is None:
        return results.new_record(case, "oom", f"batch {oom} already runs out of memory: {probes[-1]['reason']}", **fields)
    note = f"every batch up to largest={s.largest} ran (raise scenario_settings.max_batch.largest)" if fits == s.largest else ""
    return results.new_record(case, "ok", note, **fields)


def unsupported(case: Case, device: Any) -> str | None:
    """Why a probe cannot run here: a memory limit this device has no way to enforce."""
    s = scenario_spec.settings(MAX_BATCH, case.scenario_settings)
    kind = device.torch_device.type
    if s.memory_limit_mb is None:
        return None
    if kind not in ("cpu", "cuda"):
        return f"memory_limit_mb is enforced on cpu (RLIMIT_AS) and cuda/rocm (allocator fraction), not on {device.kind}"
    if kind == "cpu" and not Path("/proc/self/status").is_file():
        return "memory_limit_mb on a CPU needs Linux (RLIMIT_AS measured against /proc/self/status)"
    return None


def host_allocator_returns_memory() -> None:
    """Make glibc's malloc give freed buffers back to the system at once (a fixed mmap threshold, the free heap
    trimmed), so that RLIMIT_AS limits what a step allocates rather than what earlier cases left behind;
    and start torch's intra-op thread pool, since no thread can start under the cap."""
    import ctypes

    import torch

    torch.zeros(1 << 17).add_(1)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.malloc_trim(0)


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmSize line")


@contextlib.contextmanager
def memory_cap(device: Any, limit_mb: float | None) -> Iterator[None]:
    """Let the code inside allocate at most `limit_mb` more than the process holds now; beyond it, allocations
    fail as they do when memory runs out (torch raises its out-of-memory error).

    CPU: RLIMIT_AS set to the current address space plus the limit, with glibc's mmap threshold fixed so
    that freed buffers leave the address space at once (a probe's cap does not depend on the probes
    before it). CUDA/ROCm: the caching allocator's per-process memory fraction (reserved now plus the limit).
    """
    if limit_mb is None:
        yield
        return
    limit = int(limit_mb * 2**20)
    if device.torch_device.type == "cuda":
        import torch

        index = device.torch_device.index or 0
        torch.cuda.empty_cache()  # what the allocator caches from earlier steps is not the case's to keep
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved(index) + limit) / total), index)
        try:
            yield
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, index)
        return
    import resource

    host_allocator_returns_memory()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space() + limit
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def probe(case: Case, policy: Policy, device: Any, monitor: Any, module: Any, workload: Any,
          info: dict[str, Any]) -> dict[str, Any]:
    """One probe in the worker: the case's step under the memory cap; an OOM raises (the runner records it)."""
    from rbench.run import backends, measure

    s = scenario_spec.settings(MAX_BATCH, case.scenario_settings)
    step = backends.make_step(module, workload, case, device)

    def capped(i: int) -> Any:  # the cap covers the steps alone, not the timing loop or the telemetry thread
        with memory_cap(device, s.memory_limit_mb):
            return step(i)

    if s.memory_limit_mb is not None:
        if device.torch_device.type == "cpu":
            host_allocator_returns_memory()  # before this probe's first step allocates anything
        step(0)  # kernel selection and JIT (oneDNN primitives, cuDNN plans) happen here, outside the cap
        device.synchronize()
    timing = measure.run(capped, device, policy, window=monitor)
    images = timing.iters * case.batch_size
    peak = device.peak_memory()
    return results.new_record(
        case, "ok", "", **info, throughput_ips=images / timing.window_s, latency_ms=measure.summarize(timing.samples_ms),
        samples_ms=timing.samples_ms, iters=timing.iters, memory_limit_mb=s.memory_limit_mb,
        peak_memory_bytes=peak.get("allocated", peak.get("host_rss")), peak_memory=peak, **monitor.result(images))
