"""Real CPU runs for the compare and report tests: measured once per session, shared by both files.

Several runs of one tiny suite (resnet18, 32 px, batch 1 and 2, eager fp32 inference) and one
deliberately slower run, timed by the real harness (`models.build`, `backends`, `measure.run`) and
written as ordinary run files with the real environment header.

The machine these tests run on is usually shared: on it the speed of one core changes by tens of
percent from one second to the next as other processes come and go (see docs/tracking.md). Two runs
made one after the other would then differ for real, and a correct rule says so. To test the rule
rather than the neighbours, the runs are measured in alternation: each case's model is built once,
and timed windows of one iteration go to run A, run B, ..., then B, A, ... (so that a trend favours
neither) until each run has its 40 samples. Machine states seen here switch within a second between
"this core to itself" and "shared with another process" (per-iteration times 7 ms and 15 ms); with
windows of several iterations, one run could catch more slow windows than the other by chance, which
is a real difference between the runs and was called `slower`. One-iteration windows give both runs
the same mixture. Each window is a complete `measure.run` (its own
warm-up and synchronisation); a run's record holds the samples of its windows.

The slow run measures every case at three times the image size (nine times the FLOPs, about twice
the time at these tiny sizes, where per-layer overhead dominates) and records it under
the original case key: the same case, made slower for real. torch uses one thread here because two
threads contending with other processes are an order of magnitude noisier.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

SUITE = dict(name="aa-tiny", models=("resnet18",), batch_sizes=(1, 2), precisions=("fp32",), backends=("eager",),
             modes=("inference",), image_size=32)
WINDOW = dict(warmup_iters=1, warmup_s=0.0, min_iters=1, min_s=0.0, max_s=10.0, timeout_s=120.0)
ROUNDS = 40
_cache: dict[str, dict[str, Path]] = {}


def _windows(case: Any, device: Any, names: list[str], rounds: int, per_window: int = 1) -> dict[str, dict[str, Any]]:
    """Build the case once, then time `rounds` windows of `per_window` iterations for each name in alternation."""
    import torch

    from rbench import spec
    from rbench.run import backends, measure, models

    policy = spec.Policy(**{**WINDOW, "min_iters": per_window})
    workload = models.build(case, device.torch_device, 0)
    module = backends.get(case).prepare(workload.model, case, device)
    step = backends.make_step(module, workload, case, device)
    measure.run(step, device, spec.Policy(warmup_iters=5, warmup_s=0.2, min_iters=1, min_s=0.0))
    out = {n: {"samples_ms": [], "window_s": 0.0, "flops_per_image": workload.flops_per_image,
               "params": workload.params} for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):  # A B, B A, ...: a trend favours neither
            timing = measure.run(step, device, policy)
            out[n]["samples_ms"] += timing.samples_ms
            out[n]["window_s"] += timing.window_s
    del module, workload, step
    torch._dynamo.reset()
    return out


def _record(case: Any, m: dict[str, Any]) -> dict[str, Any]:
    from rbench import results
    from rbench.run import measure

    images = len(m["samples_ms"]) * case.batch_size
    ips = images / m["window_s"]
    return results.new_record(
        case, "ok", "", flops_per_image=m["flops_per_image"], params=m["params"], throughput_ips=ips,
        latency_ms=measure.summarize(m["samples_ms"]), samples_ms=m["samples_ms"], iters=len(m["samples_ms"]),
        window_s=m["window_s"], tflops=ips * m["flops_per_image"] / 1e12,
        power={"unavailable": True, "reason": "no power telemetry source for cpu devices"})


def measure_runs(out_dir: Path, names: tuple[str, ...] = ("a", "a2"), slow: str | None = "slow",
                 rounds: int = ROUNDS) -> dict[str, Path]:
    """Write one run file per name, plus the slowed run, measured in alternation; return their paths."""
    import torch

    from rbench import results, spec
    from rbench.hw import detect

    key = f"{out_dir}|{names}|{slow}|{rounds}"
    if key in _cache:
        return _cache[key]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        suite = spec.Suite(**SUITE, policy=spec.Policy(**WINDOW), threshold=None)
        device = detect.detect("cpu")
        env = detect.environment(device)
        out_dir.mkdir(parents=True, exist_ok=True)
        all_names = list(names) + ([slow] if slow else [])
        writers = {n: results.RunWriter.create(out_dir / f"{n}.jsonl", suite.to_dict(), env, device_kind="cpu",
                                               note="measured in alternating windows by tests/realruns.py")
                   for n in all_names}
        for case in suite.cases("cpu"):
            measured = _windows(case, device, list(names), rounds)
            if slow:
                bigger = dataclasses.replace(case, image_size=case.image_size * 3)
                # Twice as slow needs no fine alternation: 8 windows of 5 iterations.
                measured[slow] = _windows(bigger, device, [slow], ROUNDS // 5, per_window=5)[slow]
            for n in all_names:
                writers[n].append(_record(case, measured[n]))
        for w in writers.values():
            w.mark("end", status="complete")
    finally:
        torch.set_num_threads(threads)
    _cache[key] = {n: w.path for n, w in writers.items()}
    return _cache[key]


def median_ms(path: Path, batch_size: int) -> float:
    from rbench import results

    (r,) = [r for r in results.read_run(path).latest_records() if r["batch_size"] == batch_size]
    return statistics.median(r["samples_ms"])


# Real `rbench run` processes, for the reliability tests (signals, killed parents, full disks).

TINY_SUITE = ("name: {name}\nmodels: [resnet18]\nbatch_sizes: {batches}\nimage_size: 32\nprecisions: [fp32]\n"
              "backends: [eager]\nmodes: [inference]\npolicy: {policy}\n")
QUICK_POLICY = "{warmup_iters: 1, warmup_s: 0, min_iters: 2, min_s: 0, max_s: 60}"


def write_suite(directory: Path, name: str = "tiny", batches: str = "[1]", policy: str = QUICK_POLICY) -> Path:
    """A resnet18 / 32 px / fp32 eager inference suite: a case takes about a second on a busy CPU."""
    path = directory / f"{name.strip('.') or 'suite'}.yaml"
    path.write_text(TINY_SUITE.format(name=name, batches=batches, policy=policy))
    return path


def start_rbench(*args: str, cwd: Path | None = None) -> Any:
    """`rbench ARGS` as its own process (a user's shell would run it so), output captured."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "rbench.cli", *args], cwd=cwd or Path(__file__).parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Any, timeout: float, what: str, poll_s: float = 0.05) -> Any:
    """Poll `condition()` until it is truthy (and return it); fail naming `what` after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def worker_of(pid: int) -> int | None:
    """The pid of the `rbench.run.worker` child of process `pid`, if it has one."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"rbench.run.worker" in cmdline:
            return int(stat.parent.name)
    return None


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting to be reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time that process `pid` has used."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
