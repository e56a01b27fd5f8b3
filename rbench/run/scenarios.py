"""MLPerf scenarios through the real MLCommons LoadGen: LoadGen drives the traffic and judges, rbench is the SUT.

LoadGen decides when queries arrive and computes each scenario's metric, validity and early-stopping
estimates; `rbench.run.scenarios_logs` reads them from its logs. rbench owns the system under test:
model, backend, precision and device are built by `rbench.run.runner.execute` (which also runs the
correctness gate and turns any failure into an `error`/`oom` record) before it hands over to
`measure` here. The query sample library is synthetic images resident on the device; the SUT runs
queued samples in batches of at most the case's batch size, each padded up to a power of two (or the
batch size) so that every shape is compiled in the warm-up; the server SUT waits up to
`batch_timeout_ms` for a batch to fill. Inference runs on one device thread (warm-up included).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbench import results, scenario_spec
from rbench.run import maxbatch, scenarios_logs, scenarios_search
from rbench.scenario_spec import MAX_BATCH, SCENARIOS, Settings
from rbench.spec import Case, Policy

MISSING = "MLPerf LoadGen (mlcommons-loadgen) is not installed: pip install 'rbench[mlperf]'"
QSL_SIZE = 1024  # MLPerf's performance_sample_count for ResNet-50: distinct images resident on the device


@dataclass(frozen=True)
class Scenario:
    """How a scenario is run by LoadGen and reported: MLPerf's metric is the detail-log entry `metric_key`."""

    loadgen: str  # the mlperf_loadgen.TestScenario member
    metric: str
    unit: str
    better: str  # "higher" or "lower": what `rbench compare` calls faster
    metric_key: str
    scale: float  # record value = log value * scale (ns -> ms for latencies)
    throughput_key: str | None  # the entry giving samples/s, where LoadGen logs one


REGISTRY: dict[str, Scenario] = {
    "offline": Scenario("Offline", "samples_per_second", "samples/s", "higher", "result_samples_per_second", 1.0,
                        "result_samples_per_second"),
    "single_stream": Scenario("SingleStream", "p90_latency_ms", "ms", "lower", "early_stopping_latency_ss", 1e-6,
                              "result_qps_without_loadgen_overhead"),
    "multi_stream": Scenario("MultiStream", "p99_latency_ms", "ms", "lower", "early_stopping_latency_ms", 1e-6, None),
    "server": Scenario("Server", "qps", "queries/s", "higher", "result_completed_samples_per_sec", 1.0,
                       "result_completed_samples_per_sec"),
}
assert tuple(REGISTRY) == SCENARIOS, "scenario_spec.SCENARIOS and the LoadGen registry must list the same names"


def loadgen() -> Any | None:
    """The `mlperf_loadgen` module, or None when the package is not installed."""
    try:
        import mlperf_loadgen
    except ImportError:
        return None
    return mlperf_loadgen


def unsupported(case: Case, device: Any) -> str | None:
    """Why this scenario case cannot run here (None for closed-loop cases and runnable scenarios)."""
    if not case.scenario:
        return None
    if case.scenario == MAX_BATCH:
        return maxbatch.unsupported(case, device)
    if case.scenario not in REGISTRY:
        return f"unknown scenario {case.scenario!r}; known: {', '.join(REGISTRY)}, {MAX_BATCH}"
    if case.mode != "inference":
        return "MLPerf scenarios are inference only"
    return MISSING if loadgen() is None else None


def buckets(max_batch: int) -> list[int]:
    """The batch shapes the SUT runs: powers of two below `max_batch`, and `max_batch` itself."""
    return sorted({2**k for k in range(max_batch.bit_length()) if 2**k < max_batch} | {max_batch})


@dataclass
class Estimate:
    """Warm-up seconds per batch shape: LoadGen's expected latency / QPS and the server search's start."""

    seconds: dict[int, float]

    def batch_s(self, n: int) -> float:
        return self.seconds[min(b for b in self.seconds if b >= n)]

    def query_s(self, samples: int) -> float:
        top = max(self.seconds)
        full, rest = divmod(samples, top)
        return full * self.seconds[top] + (self.batch_s(rest) if rest else 0.0)

    @property
    def capacity_qps(self) -> float:
        top = max(self.seconds)
        return top / self.seconds[top]


class SampleLibrary:
    """LoadGen's query sample library: QSL_SIZE seeded synthetic images, loaded on the device before the run."""

    def __init__(self, case: Case, device: Any, dtype: Any):
        import torch

        from rbench.run import models

        self.channels_last = case.memory_format == "channels_last"
        size = case.image_size
        shape = (QSL_SIZE, size, size, 3) if self.channels_last else (QSL_SIZE, 3, size, size)
        g = torch.Generator().manual_seed(models.SEED + 2)
        self.data = torch.randn(shape, generator=g).to(device=device.torch_device, dtype=dtype)

    def gather(self, indices: list[int]) -> Any:
        """The images at `indices` as one (N, 3, H, W) batch in the case's memory format."""
        import torch

        x = self.data.index_select(0, torch.tensor(indices, device=self.data.device))
        return x.permute(0, 3, 1, 2) if self.channels_last else x


class SUT:
    """The system under test's queue: LoadGen's thread `issue`s samples, the device thread `loop`s over batches.

    A batch is taken as soon as one sample waits; it grows to `max_batch` with what is queued, waiting up
    to `timeout_s` after its first sample arrived for more. A failed batch is kept as `failure`; from
    then on every sample is answered without inference (at the pace of `pace_s` per batch, so LoadGen's
    run keeps its normal length and volume) until LoadGen ends the run, and the caller raises it.
    """

    def __init__(self, infer: Callable[[list[int]], Any], complete: Callable[[list[int]], None], max_batch: int,
                 timeout_s: float = 0.0, pace_s: float = 0.0):
        self.infer, self.complete = infer, complete
        self.max_batch, self.timeout_s, self.pace_s = max_batch, timeout_s, pace_s
        self.pending: deque = deque()
        self.cond = threading.Condition()
        self.closed = False
        self.failure: BaseException | None = None
        self.batches = self.samples = 0

    def issue(self, query_samples: Any) -> None:
        now = time.perf_counter()
        with self.cond:
            self.pending.extend((q.id, q.index, now) for q in query_samples)
            self.cond.notify()

    def flush(self) -> None:
        """LoadGen's flush_queries: nothing is held back beyond `timeout_s`, so there is nothing to flush."""

    def _take(self) -> list[tuple[int, int, float]] | None:
        with self.cond:
            while not self.pending and not self.closed:
                self.cond.wait()
            if not self.pending:
                return None
            deadline = self.pending[0][2] + self.timeout_s
            while len(self.pending) < self.max_batch and not self.closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self.cond.wait(left)
            return [self.pending.popleft() for _ in range(min(self.max_batch, len(self.pending)))]

    def loop(self) -> None:
        while (batch := self._take()) is not None:
            if self.failure is None:
                try:
                    self.infer([index for _, index, _ in batch])
                except BaseException as e:  # noqa: BLE001 - kept and raised once LoadGen has ended its run
                    self.failure = e
            else:
                time.sleep(self.pace_s)
            self.batches += 1
            self.samples += len(batch)
            self.complete([qid for qid, _, _ in batch])

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def test_settings(lg: Any, name: str, s: Settings, est: Estimate, target_qps: float | None = None) -> Any:
    """LoadGen's TestSettings for one run: PerformanceOnly, the scenario's settings, the warm-up's estimates.

    Every scenario's fields are set (LoadGen reads only its own scenario's); the percentiles are MLPerf's.
    """
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, REGISTRY[name].loadgen)
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(round(s.min_duration_s * 1000))
    ts.min_query_count = s.min_query_count
    ts.performance_sample_count_override = QSL_SIZE
    ts.single_stream_expected_latency_ns = max(1, int(est.query_s(1) * 1e9))
    ts.single_stream_target_latency_percentile = 0.9
    ts.multi_stream_samples_per_query = s.samples_per_query
    ts.multi_stream_expected_latency_ns = max(1, int(est.query_s(s.samples_per_query) * 1e9))
    ts.multi_stream_target_latency_percentile = 0.99
    ts.offline_expected_qps = float(s.target_qps or est.capacity_qps)
    ts.server_target_qps = float(target_qps or s.target_qps or est.capacity_qps)
    ts.server_target_latency_ns = int(s.latency_bound_ms * 1e6)
    ts.server_target_latency_percentile = 0.99
    return ts


def _log_settings(lg: Any, directory: Path) -> Any:
    ls = lg.LogSettings()
    ls.log_output.outdir = str(directory)
    ls.log_output.copy_summary_to_stdout = False
    ls.log_mode = lg.LoggingMode.AsyncPoll
    ls.enable_trace = False
    return ls


@dataclass
class Bench:
    """What one scenario case's LoadGen runs share: LoadGen, the device thread and the SUT's inference."""

    lg: Any
    name: str
    settings: Settings
    pool: ThreadPoolExecutor
    infer: Callable[[list[int]], Any]
    max_batch: int
    monitor: Any
    estimate: Estimate | None = None

    def run(self, directory: Path, target_qps: float | None = None) -> dict[str, Any]:
        """One LoadGen run whose logs go to `directory`; LoadGen's figures for the record (and `telemetry`)."""
        lg, s, est = self.lg, self.settings, self.estimate
        directory.mkdir(parents=True, exist_ok=True)
        complete = lambda ids: lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])  # noqa: E731
        timeout = s.batch_timeout_ms / 1e3 if self.name == "server" else 0.0
        sut = SUT(self.infer, complete, self.max_batch, timeout, pace_s=est.batch_s(self.max_batch))
        job = self.pool.submit(sut.loop)
        sut_handle = lg.ConstructSUT(sut.issue, sut.flush)
        qsl_handle = lg.ConstructQSL(QSL_SIZE, QSL_SIZE, lambda indices: None, lambda indices: None)
        start = time.perf_counter()
        try:
            self.monitor.start()
            try:
                lg.StartTestWithLogSettings(sut_handle, qsl_handle, test_settings(lg, self.name, s, est, target_qps),
                                            _log_settings(lg, directory))
            finally:
                self.monitor.stop()
        finally:
            sut.close()
            job.result()
            lg.DestroyQSL(qsl_handle)
            lg.DestroySUT(sut_handle)
        if sut.failure is not None:
            raise sut.failure
        sc = REGISTRY[self.name]
        entries, errors = scenarios_logs.read_detail(directory / scenarios_logs.DETAIL)
        out = scenarios_logs.result_fields(entries, sc.metric_key, sc.scale, sc.throughput_key)
        out.update(loadgen_logs=scenarios_logs.paths(directory), loadgen_errors=errors,
                   target_qps=(target_qps or s.target_qps) if self.name in ("server", "offline") else None,
                   sut={"batches": sut.batches, "samples": sut.samples, "mean_batch": sut.samples / max(sut.batches, 1),
                        "max_batch": self.max_batch, "wall_s": time.perf_counter() - start},
                   telemetry=self.monitor.result(sut.samples))
        return out


def warm_up(infer: Callable[[list[int]], Any], shapes: list[int], policy: Policy) -> Estimate:
    """Run every batch shape (compiling each) and time it; the largest until the policy's warm-up is done."""
    seconds: dict[int, float] = {}
    for b in shapes:
        times: list[float] = []
        start = time.perf_counter()
        top = b == shapes[-1]
        while len(times) < (max(3, policy.warmup_iters) if top else 3) or (top and time.perf_counter() - start < policy.warmup_s):
            t = time.perf_counter()
            infer(list(range(b)))
            times.append(time.perf_counter() - t)
        seconds[b] = statistics.median(times[-3:])
    return Estimate(seconds)


def _inference(module: Any, workload: Any, device: Any, qsl: SampleLibrary, shapes: list[int]) -> Callable[[list[int]], Any]:
    """`infer(indices)`: one batch, padded up to the next of `shapes`, through the model; returns the top-1
    classes on the host (the copy waits for the device, so the batch is done when `infer` returns)."""
    import torch

    def infer(indices: list[int]) -> Any:
        n = len(indices)
        x = qsl.gather(indices + [indices[-1]] * (min(s for s in shapes if s >= n) - n))
        if device.torch_device.type == "cuda" and torch.cuda.current_device() != device.torch_device.index:
            torch.cuda.set_device(device.torch_device)
        with torch.inference_mode(), workload.autocast(device.torch_type):
            return module(x)[:n].argmax(1).cpu()

    return infer


def _search(bench: Bench, directory: Path, deadline: float) -> dict[str, Any]:
    """The server's highest VALID target QPS: every probe a LoadGen run in its own log directory, all kept.

    A probe that would not end before `deadline` (its minimum duration, or its minimum query count at the
    lower of its rate and the warm-up's capacity, with a margin) is not started: the search ends there.
    """
    runs: list[dict[str, Any]] = []
    s = bench.settings

    def affordable(rate: float) -> bool:
        expected = max(s.min_duration_s, s.min_query_count / min(rate, bench.estimate.capacity_qps)) * 1.25 + 5
        return time.perf_counter() + expected < deadline

    def probe(rate: float) -> bool:
        runs.append(bench.run(directory / f"probe{len(runs) + 1:02d}-{rate:g}qps", target_qps=rate))
        return runs[-1]["valid"]

    found = scenarios_search.highest_passing(probe, bench.estimate.capacity_qps, s.search_tolerance, s.max_probes,
                                             affordable)
    if not runs:
        raise TimeoutError(f"no time for a single server probe within timeout_s ({found.stopped})")
    passing = [r for r in runs if r["valid"] and r["target_qps"] == found.passing]
    best = dict(passing[0] if passing else min(runs, key=lambda r: r["target_qps"]))
    if not passing:
        best.update(metric_value=None, reason=f"no target QPS gave a VALID run (lowest tried {best['target_qps']:g})")
    best["search"] = found.to_dict()
    best["probes"] = [{"target_qps": r["target_qps"], "valid": r["valid"], "qps": r["throughput_ips"],
                       "p99_ms": r["latency_ms"]["p99"], "early_stopping_met": r["early_stopping"]["met"],
                       "invalid_reason": r["loadgen"].get("invalid_reason"), "log_dir": r["loadgen_logs"]["dir"]}
                      for r in runs]
    return best


def measure(case: Case, policy: Policy, device: Any, monitor: Any, module: Any, workload: Any,
            info: dict[str, Any]) -> dict[str, Any]:
    """A scenario case's record, after `runner.execute` built (and gated) the model. Failures raise.

    LoadGen's SUT and QSL are destroyed whatever happens; its logs stay in the case's log directory.
    """
    if case.scenario == MAX_BATCH:
        return maxbatch.probe(case, policy, device, monitor, module, workload, info)
    lg, name, entered = loadgen(), case.scenario, time.perf_counter()
    s = scenario_spec.settings(name, case.scenario_settings)
    given = dict(case.scenario_settings or {})
    directory = Path(given.get("log_dir") or tempfile.mkdtemp(prefix="rbench-loadgen-"))
    max_batch = min(case.batch_size, s.samples_per_query) if name == "multi_stream" else case.batch_size
    shapes = buckets(max_batch)
    infer = _inference(module, workload, device, SampleLibrary(case, device, workload.inputs[0].dtype), shapes)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rbench-sut") as pool:
        bench = Bench(lg, name, s, pool, infer, max_batch, monitor)
        bench.estimate = pool.submit(warm_up, infer, shapes, policy).result()
        searching = name == "server" and not s.target_qps
        # The case's time-out also covers what ran before (build, gate): keep a tenth of it in reserve.
        deadline = entered + 0.9 * policy.timeout_s
        fields = _search(bench, directory, deadline) if searching else bench.run(directory)
    sc = REGISTRY[name]
    telemetry = fields.pop("telemetry")
    reason = fields.pop("reason", "")
    peak = device.peak_memory()
    return results.new_record(
        case, "ok", reason, **info, **fields, **telemetry, scenario_settings=dataclasses.asdict(s),
        metric=sc.metric, metric_unit=sc.unit, better=sc.better, mlperf_length=scenario_spec.mlperf_length(name, s),
        warm_up_ms={str(b): t * 1e3 for b, t in bench.estimate.seconds.items()},
        peak_memory_bytes=peak.get("allocated", peak.get("host_rss")), peak_memory=peak)
