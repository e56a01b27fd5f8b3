"""The program torchrun starts on every rank (`python -m rbench.run.distributed`): one case, measured on this rank.

Training wraps the model in DistributedDataParallel (NCCL on CUDA/ROCm, gloo on CPU), the same step as a
single process runs, so the global batch is the per-rank batch x the world size. Inference runs one
replica per rank with no communication. Every rank warms up until all ranks are done warming up, all
plan from the slowest rank's iteration time, and all time that same number of iterations between two
barriers; then rank 0 gathers every rank's figures (`all_gather_object`, so each node's local rank 0 can
also say which node holds rank 0).

The all-reduce share comes from DDP's communication hook, not the profiler: the hook is DDP's own
all-reduce with each bucket's launch and completion marked by device events (CUDA events on the
compute stream, which NCCL's stream waits on and the future's callback is synchronised with; the host
clock on CPU). It costs two events per bucket, so it stays on during the timed window and measures the
very iterations that are timed, where the profiler would slow them and need a run of its own.

What each rank did is left in `OUT/rank<R>.json` (`running` from the first line, then `done` or `failed`
with its status and one-line reason), so the launcher (`rbench.run.distributed_launch`) can name the
rank that ended a case, including one that died without a word. A rank that raises leaves its reason
and exits 1; torchrun then stops the other ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rbench import files
from rbench.names import one_line
from rbench.spec import Case, Policy

# torch.distributed's backend for each device kind; a kind without one cannot run multi-process cases.
PROCESS_GROUPS = {"cuda": "nccl", "rocm": "nccl", "xpu": "xccl", "cpu": "gloo"}
STATE = "rank{}.json"
RESULT = "result.json"
# Collectives wait this much longer than the case's timeout_s, so that the launcher's time-out (which
# names the case `timeout` and kills every process) always comes first.
COLLECTIVE_GRACE_S = 60.0


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Replace `path` atomically, so that a reader never sees half a file."""
    files.replace(path, json.dumps(obj, default=str))


def where_am_i() -> dict[str, Any]:
    """This rank's place in the job, from the variables torchrun sets."""
    env = os.environ
    return {"rank": int(env.get("RANK", 0)), "local_rank": int(env.get("LOCAL_RANK", 0)),
            "world_size": int(env.get("WORLD_SIZE", 1)), "local_world_size": int(env.get("LOCAL_WORLD_SIZE", 1)),
            "node": int(env.get("GROUP_RANK", 0)), "host": socket.gethostname(), "pid": os.getpid()}


def _die_with(rbench_pid: int) -> None:
    """End this rank when torchrun's agent dies (Linux: PR_SET_PDEATHSIG) or when `rbench run` does (polled).

    The agent puts each rank in a session of its own, so a signal to the agent's group does not reach
    the ranks; this keeps a killed run from leaving ranks holding a GPU.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            try:
                os.kill(rbench_pid, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGKILL)
            except PermissionError:
                pass
            time.sleep(1.0)

    if rbench_pid:
        threading.Thread(target=watch, daemon=True).start()


def rank_device(kind: str, local_rank: int) -> Any:
    """This rank's device: device `local_rank` of the kind (every rank shares the one CPU)."""
    import torch

    from rbench.hw import detect

    device = detect.detect(kind)
    if device.torch_type != "cpu":
        device = type(device)(local_rank)
        getattr(torch, device.torch_type).set_device(local_rank)
    return device


def rank_identity(device: Any) -> dict[str, Any]:
    """What the run header and each record say about a rank's device: host, device (with its UUID), driver."""
    from rbench.hw import detect

    env = detect.environment(device)
    return {"host": socket.gethostname(), "device": env["device"], "driver": env["driver"]}


class AllreduceTimer:
    """DDP's all-reduce as a communication hook, with each bucket's launch and completion marked by events."""

    def __init__(self, device: Any):
        self.device = device
        self.recording = False
        self.spans: list[tuple[Any, Any]] = []

    def hook(self, group, bucket):  # noqa: ANN001, ANN201 - DDP rejects a hook whose annotations are not its own types
        """DDP's default all-reduce of `bucket` over `group`, timed while `recording`."""
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        if not self.recording:
            return default_hooks.allreduce_hook(group, bucket)
        start, end = self.device.event(), self.device.event()
        start.record()
        future = default_hooks.allreduce_hook(group, bucket)
        self.spans.append((start, end))

        def done(fut: Any) -> Any:
            end.record()  # CUDA: on a stream synchronised with the all-reduce; CPU: when gloo completes it
            return fut.value()

        return future.then(done)

    def busy_ms(self, origin: Any) -> float:
        """Time with at least one all-reduce in flight (overlapping buckets counted once), in ms."""
        spans = sorted((origin.elapsed_time(s), origin.elapsed_time(e)) for s, e in self.spans)
        busy, reach = 0.0, float("-inf")
        for lo, hi in spans:
            if hi > reach:
                busy += hi - max(lo, reach)
                reach = hi
        return busy


class Window:
    """Around the timed window: a barrier first, so every rank starts together; telemetry, the peak-memory
    counters (restarted here, as `runner.TimedWindow` does: the gate's reference and autotuning are not in
    the peak) and the all-reduce timer see exactly the window."""

    def __init__(self, device: Any, monitor: Any, timer: AllreduceTimer | None):
        self.device, self.monitor, self.timer = device, monitor, timer
        self.begin = self.end = None

    def start(self) -> None:
        import torch.distributed as dist

        dist.barrier()
        self.device.reset_peak_memory()
        self.monitor.start()
        self.begin = self.device.event()
        self.begin.record()
        if self.timer:
            self.timer.recording = True

    def stop(self) -> None:
        if self.timer:
            self.timer.recording = False
        self.end = self.device.event()
        self.end.record()
        self.device.synchronize()
        self.monitor.stop()

    def allreduce(self) -> dict[str, Any]:
        """The share of this rank's window with an all-reduce in flight (0 by construction without DDP)."""
        if self.timer is None:
            return {"allreduce_share": 0.0, "allreduce_s": 0.0, "allreduce_buckets": 0}
        busy, total = self.timer.busy_ms(self.begin), self.begin.elapsed_time(self.end)
        return {"allreduce_share": min(1.0, busy / total) if total > 0 else None, "allreduce_s": busy / 1e3,
                "allreduce_buckets": len(self.timer.spans)}


def agreed_warmup(step: Any, device: Any, policy: Policy) -> tuple[int, float, float, float]:
    """Warm up until every rank has met the single-process warm-up rule (`measure.warmed_up`: compilation
    never counts toward the estimate); (iterations, seconds, slowest rank's s/iter, this rank's host ms/iter).

    The ranks vote after each iteration, so all of them run the same number of iterations (with DDP a
    rank that stopped early would leave the others waiting in an all-reduce).
    """
    import torch
    import torch.distributed as dist

    from rbench.run import measure

    start, times, host = time.perf_counter(), [], []
    while True:
        t = time.perf_counter()
        step(len(times))
        issued = time.perf_counter()
        device.synchronize()
        times.append(time.perf_counter() - t)
        host.append(issued - t)
        elapsed = time.perf_counter() - start
        wanted = not measure.warmed_up(times, elapsed, policy)
        vote = torch.tensor([float(wanted), measure.iteration_estimate(times)], dtype=torch.float64,
                            device=device.torch_device)
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)
        if not vote[0].item():
            return len(times), elapsed, float(vote[1].item()), measure.host_ms_estimate(host)


def timed(step: Any, device: Any, n: int, first: int, window: Window) -> tuple[list[float], float]:
    """Exactly `n` iterations, each between two device events, one synchronisation at the end (in
    `window.stop`); (per-iteration ms, seconds from the first start to the last end)."""
    marks = [(device.event(), device.event()) for _ in range(n)]
    window.start()
    for i, (before, after) in enumerate(marks):
        before.record()
        step(first + i)
        after.record()
    window.stop()
    return [b.elapsed_time(a) for b, a in marks], marks[0][0].elapsed_time(marks[-1][1]) / 1e3


def first_problem(mine: str | None) -> str | None:
    """Every rank's verdict (None: fine); the first rank's problem, so all ranks stop at the same point."""
    import torch.distributed as dist

    verdicts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(verdicts, mine)
    for rank, verdict in enumerate(verdicts):
        if verdict:
            return verdict if all(v == verdict for v in verdicts) else f"rank {rank}: {verdict}"
    return None


def measure_rank(case: Case, policy: Policy, device: Any, monitor: Any) -> dict[str, Any]:
    """This rank's part of the case: its status and figures (statuses other than errors agree on every rank)."""
    from torch.nn.parallel import DistributedDataParallel

    from rbench.run import backends, measure, models, runner

    backend = backends.get(case)
    reason = first_problem(device.unsupported_precision(case.precision) or backend.unsupported(case, device))
    if reason:
        return {"status": "unsupported", "reason": reason}
    monitor.case_start()  # who else is on this rank's device before we build, compile and autotune
    workload = models.build(case, device.torch_device, policy.rotate_buffers)
    info: dict[str, Any] = {"flops_per_image": workload.flops_per_image, "params": workload.params}
    model, timer = workload.model, None
    if case.mode == "training":
        model = DistributedDataParallel(model, device_ids=None if device.torch_type == "cpu" else [device.index])
        timer = AllreduceTimer(device)
        model.register_comm_hook(None, timer.hook)
    module = backend.prepare(model, case, device)
    if backend.name != "eager" and case.mode == "inference":
        info["gate_tolerance"] = runner.GATE_TOLERANCE[case.precision]
        info["gate_error"] = runner.gate(module, workload, case, device)
        reason = first_problem(None if info["gate_error"] <= info["gate_tolerance"] else
                               f"output differs from eager fp32 by {info['gate_error']:.3g} (relative norm; "
                               f"tolerance {info['gate_tolerance']:g})")
        if reason:
            return {"status": "incorrect", "reason": reason, **info}
    step = backends.make_step(module, workload, case, device)
    warm_iters, warm_s, iter_s, host_ms = agreed_warmup(step, device, policy)
    try:
        n = measure.plan_iterations(iter_s, policy)  # the same iter_s on every rank: the same verdict
    except measure.OverBudget as e:
        return {"status": "over_budget", "reason": str(e), **info}
    window = Window(device, monitor, timer)
    samples, window_s = timed(step, device, n, warm_iters, window)
    import torch.distributed as dist

    dist.barrier()  # the window's closing barrier: no rank gathers while another still measures
    images = n * case.batch_size
    peak = device.peak_memory()
    return {"status": "ok", "reason": "", **info, **window.allreduce(), **monitor.result(images),
            "throughput_ips": images / window_s, "latency_ms": measure.summarize(samples), "samples_ms": samples,
            "iters": n, "window_s": window_s, "warmup_iters": warm_iters, "warmup_s": warm_s, "host_ms_per_iter": host_ms,
            "peak_memory_bytes": peak.get("allocated", peak.get("host_rss")), "peak_memory": peak}


def _serve(args: argparse.Namespace, me: dict[str, Any]) -> dict[str, Any]:
    """Join the process group, do this rank's part, and gather every rank's to all (rank order)."""
    import datetime

    import torch.distributed as dist

    from rbench.hw import detect

    case, policy = Case(**json.loads(args.case)), Policy(**json.loads(args.policy))
    device = rank_device(args.device, me["local_rank"])
    timeout = datetime.timedelta(seconds=policy.timeout_s + COLLECTIVE_GRACE_S)
    dist.init_process_group(PROCESS_GROUPS[device.kind], timeout=timeout)
    mine = {**{k: me[k] for k in ("rank", "local_rank", "node", "host")}, **rank_identity(device)}
    if not args.env_only:
        monitor = detect.monitor_for(device)
        try:
            mine.update(measure_rank(case, policy, device, monitor))
        finally:
            monitor.close()
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    dist.destroy_process_group()
    return {"world_size": len(everyone), "nnodes": len({r["node"] for r in everyone}),
            "holds_rank0": me["rank"] == 0, "rank0_host": everyone[0]["host"], "ranks": everyone}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rbench.run.distributed",
                                     description="one rank of a multi-process case (started by torchrun)")
    parser.add_argument("--case", required=True, help="the case, as JSON (Case.to_dict())")
    parser.add_argument("--policy", required=True, help="the policy, as JSON")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="directory for rank<R>.json and result.json")
    parser.add_argument("--parent", type=int, default=0, help="pid of `rbench run`: the rank dies with it")
    parser.add_argument("--env-only", action="store_true", help="gather every rank's device identity only")
    args = parser.parse_args(argv)
    me, out = where_am_i(), Path(args.out)
    state = out / STATE.format(me["rank"])
    write_json(state, {**me, "state": "running", "time": time.time()})
    _die_with(args.parent)
    try:
        gathered = _serve(args, me)
        if me["local_rank"] == 0:
            write_json(out / RESULT, gathered)
        write_json(state, {**me, "state": "done", "time": time.time()})
        return 0
    except BaseException as e:  # noqa: BLE001 - whatever ends this rank is reported, then torchrun stops the rest
        import traceback

        from rbench.run import runner

        print(f"== rank {me['rank']} of {me['world_size']} ({me['host']}) failed:", file=sys.stderr)
        traceback.print_exc()
        status = "oom" if runner.is_oom(e) else "error"
        write_json(state, {**me, "state": "failed", "status": status, "reason": one_line(e), "time": time.time()})
        sys.stderr.flush()
        os._exit(1)  # not sys.exit: a process group half torn down may hang in its destructors


if __name__ == "__main__":
    sys.exit(main())
