"""Multi-process cases through torchrun (`python -m torch.distributed.run`), never a launcher of our own.

`Launch` holds torchrun's multi-node options as `rbench run` took them (`--nnodes`, `--node-rank`,
`--rdzv-endpoint`, `--rdzv-id`). `Torchrun` runs one case as `torchrun --nproc-per-node N ... -m
rbench.run.distributed`, kills torchrun and every rank past `timeout_s`, and makes the record from what
the ranks left. `Dispatch` is the executor `rbench run` uses: a case with `nproc_per_node > 1` goes to
torchrun, any other to the usual executor (`rbench.run.isolation`). `plan` caps `nproc_per_node` at the
devices present and gives the run header every rank's device.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rbench import results
from rbench.names import one_line, slug
from rbench.run import distributed_record, isolation
from rbench.run.distributed import PROCESS_GROUPS, RESULT, STATE
from rbench.spec import Case, Policy

PROBE_TIMEOUT_S = 300.0  # gathering every node's device identity at the start of a multi-node run
_ENDPOINT = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$")


class LaunchError(ValueError):
    """torchrun options that cannot work together; one line for the user (exit 2)."""


@dataclass(frozen=True)
class Launch:
    """torchrun's rendezvous options. One node by default (`--standalone`: a free local port per case)."""

    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None

    @classmethod
    def from_args(cls, args: Any) -> Launch:
        """From `rbench run`'s flags; a combination torchrun could not start raises LaunchError."""
        nnodes = getattr(args, "nnodes", None)
        launch = cls(1 if nnodes is None else nnodes, getattr(args, "node_rank", None),
                     getattr(args, "rdzv_endpoint", None), getattr(args, "rdzv_id", None))
        if launch.nnodes < 1:
            raise LaunchError(f"--nnodes {launch.nnodes}: give 1 or more nodes")
        if launch.nnodes > 1 and not launch.rdzv_endpoint:
            raise LaunchError(f"--nnodes {launch.nnodes}: the nodes meet at a c10d rendezvous; give "
                              "--rdzv-endpoint HOST:PORT (a host all nodes reach, e.g. the first node of the job)")
        if launch.node_rank is not None and not 0 <= launch.node_rank < launch.nnodes:
            raise LaunchError(f"--node-rank {launch.node_rank}: must be 0 to {launch.nnodes - 1} with --nnodes "
                              f"{launch.nnodes}")
        if launch.rdzv_endpoint and not _ENDPOINT.match(launch.rdzv_endpoint):
            raise LaunchError(f"--rdzv-endpoint {launch.rdzv_endpoint!r}: expected HOST:PORT, e.g. node001:29500")
        return launch

    def options(self, tag: str) -> list[str]:
        """torchrun's rendezvous options for one launch; `tag` makes each case's rendezvous id its own."""
        if self.nnodes == 1 and not self.rdzv_endpoint:
            return ["--standalone"]
        opts = ["--nnodes", str(self.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", str(self.rdzv_endpoint),
                "--rdzv-id", f"{self.rdzv_id or 'rbench'}-{tag}"]
        return opts + (["--node-rank", str(self.node_rank)] if self.node_rank is not None else [])


def unsupported(device_kind: str) -> str | None:
    if device_kind not in PROCESS_GROUPS:
        return (f"multi-process cases need a torch.distributed backend; {device_kind} has none "
                f"(supported: {', '.join(PROCESS_GROUPS)})")
    return None


def command(case: Case, policy: Policy, device_kind: str, out: Path, launch: Launch, tag: str,
            env_only: bool = False) -> list[str]:
    """The torchrun command line that runs `case` on `case.nproc_per_node` ranks of this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(case.nproc_per_node),
            *launch.options(tag), "--max-restarts", "0", "-m", "rbench.run.distributed",
            "--device", device_kind, "--out", str(out), "--parent", str(os.getpid()),
            "--case", json.dumps(case.to_dict()), "--policy", json.dumps(asdict(policy))] + (
                ["--env-only"] if env_only else [])


def rank_threads(device_kind: str, nproc: int, environ: dict[str, str]) -> dict[str, str]:
    """On a CPU the ranks split the cores (unless OMP_NUM_THREADS says otherwise); torchrun would give each one."""
    env = dict(environ)
    if device_kind == "cpu" and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, _usable_cores() // nproc))
    return env


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _children() -> dict[int, list[int]]:
    """{parent pid: child pids} from /proc (Linux); empty elsewhere, where the ranks' own pids are used."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _is_rank(pid: int) -> bool:
    """Whether `pid` still runs a rank (a dead rank's pid may have been reused); assumed so without /proc."""
    try:
        return b"rbench.run.distributed" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by its new parent, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_states(out: Path) -> dict[int, dict[str, Any]]:
    """Each rank's state file on this node (a rank that never got to write one is absent)."""
    states = {}
    for path in out.glob(STATE.format("*")):
        try:
            state = json.loads(path.read_text())
            states[int(state["rank"])] = state
        except (OSError, ValueError, KeyError):
            continue
    return states


@dataclass
class Torchrun:
    """Runs multi-process cases, one torchrun per case; its output and the ranks' go to `log_path`."""

    device_kind: str
    log_path: Path
    launch: Launch = field(default_factory=Launch)
    proc: subprocess.Popen | None = None
    out: Path | None = None
    interrupted: str = ""
    memory: Any = None  # isolation.MemoryWatch (tests stand in for the kernel's counters)
    oom_evidence: str = ""  # what the last launch's MemoryWatch saw: the OOM killer ran, or memory ran out

    def run(self, case: Case, policy: Policy) -> dict[str, Any]:
        if self.interrupted:
            raise KeyboardInterrupt(self.interrupted)
        reason = unsupported(self.device_kind)
        if reason:
            return results.new_record(case, "unsupported", reason)
        with tempfile.TemporaryDirectory(prefix="rbench-ranks-") as tmp:
            return self._launch(case, policy, Path(tmp))

    def gather(self, case: Case, timeout_s: float) -> dict[str, Any] | None:
        """Every rank's device identity (for a multi-node run's header), or None if the ranks did not report."""
        with tempfile.TemporaryDirectory(prefix="rbench-ranks-") as tmp:
            code, _ = self._start_and_wait(command(case, Policy(timeout_s=timeout_s), self.device_kind, Path(tmp),
                                                   self.launch, "env", env_only=True), case, Path(tmp), timeout_s)
            result = Path(tmp) / RESULT
            return json.loads(result.read_text()) if code == 0 and result.is_file() else None

    def _launch(self, case: Case, policy: Policy, out: Path) -> dict[str, Any]:
        world = case.nproc_per_node * self.launch.nnodes
        cmd = command(case, policy, self.device_kind, out, self.launch, slug(case.id))
        try:
            code, log = self._start_and_wait(cmd, case, out, policy.timeout_s)
        except OSError as e:
            return results.new_record(case, "error", f"torchrun could not start: {one_line(e)}", world_size=world)
        states = read_states(out)
        if code is None:
            running = [str(r) for r, s in sorted(states.items()) if s.get("state") == "running"]
            silent = [str(r) for r in range(world) if r not in states] if self.launch.nnodes == 1 else []
            return results.new_record(
                case, "timeout", f"case exceeded timeout_s={policy.timeout_s:g} s (start, build, warm-up and timing "
                f"on {world} ranks together); torchrun and every rank killed"
                + (f"; ranks still measuring: {', '.join(running)}" if running else "")
                + (f"; ranks that never reported: {', '.join(silent)}" if silent else ""), world_size=world)
        result = out / RESULT
        if code == 0 and result.is_file():
            return distributed_record.combine(case, json.loads(result.read_text()))
        return distributed_record.failure(case, states, distributed_record.torchrun_failures(log), code,
                                          _last_words(log), world, oom_evidence=self.oom_evidence)

    def _start_and_wait(self, cmd: list[str], case: Case, out: Path, timeout_s: float) -> tuple[int | None, str]:
        """(torchrun's exit code, or None past `timeout_s`; what it and the ranks printed to the log)."""
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log: Any = open(self.log_path, "ab")
            log.write(f"\n== torchrun: {case.id} ({case.nproc_per_node} per node)\n".encode())
            log.flush()
            offset = log.tell()
        except OSError:
            log, offset = subprocess.DEVNULL, None  # no log is no reason to lose the measurement
        # Its own session: Ctrl-C reaches only `rbench run`, which then stops torchrun and the ranks.
        env = rank_threads(self.device_kind, case.nproc_per_node, dict(os.environ))
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                         env=env)
        finally:
            if offset is not None:
                log.close()
        self.out = out
        code: int | None = None
        watch = (self.memory or isolation.MemoryWatch()).start(self.proc.pid)  # the ranks share torchrun's cgroup
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.oom_evidence = watch.stop()
            if code != 0 or self.interrupted:  # past the time-out, interrupted, or failed: leave no rank behind
                self.kill()
            self.proc = self.out = None
        if self.interrupted:
            raise KeyboardInterrupt(self.interrupted)
        return code, _log_since(self.log_path, offset)

    def _signal_all(self) -> list[int]:
        """SIGKILL torchrun and every rank (each rank leads a session of its own); the pids signalled."""
        proc, out = self.proc, self.out
        if proc is None:
            return []
        pids = [proc.pid, *_descendants(proc.pid)] if proc.poll() is None else []  # once reaped, its pid is not its own
        pids += [s["pid"] for s in (read_states(out) if out else {}).values()
                 if s.get("pid") not in pids and _is_rank(s["pid"])]
        for pid in pids:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                    break
                except (ProcessLookupError, PermissionError):
                    continue
        return pids

    def kill(self) -> None:
        """Kill torchrun and every rank, and wait until none is left."""
        pids = self._signal_all()
        if self.proc is not None:
            self.proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def interrupt(self, why: str) -> None:
        """From a signal handler: kill the case in flight (no waiting here); `run` then raises KeyboardInterrupt."""
        self.interrupted = why
        self._signal_all()


def _log_since(path: Path, offset: int | None) -> str:
    if offset is None:
        return ""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _last_words(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.startswith("==")]
    return one_line(lines[-1], 300) if lines else "no output"


class Dispatch:
    """The executor of a run: multi-process cases through torchrun, the others through `single`.

    `records` reads the run file's records so far; each multi-process record gets its scaling efficiency
    from the 1-process record of the same key measured earlier in the run (it sorts first, see `plan`).
    """

    def __init__(self, single: Any, device_kind: str, log_path: Path, launch: Launch,
                 records: Callable[[], Sequence[dict[str, Any]]]):
        self.single, self.records = single, records
        self.torchrun = Torchrun(device_kind, log_path, launch)

    def run(self, case: Case, policy: Policy) -> dict[str, Any]:
        if case.nproc_per_node <= 1:
            return self.single.run(case, policy)
        return distributed_record.with_scaling(self.torchrun.run(case, policy), self.records())

    def interrupt(self, why: str) -> None:
        self.torchrun.interrupt(why)
        self.single.interrupt(why)

    def abort(self) -> None:
        self.torchrun.kill()
        self.single.abort()

    def close(self) -> None:
        self.single.close()


@dataclass
class Plan:
    """The cases to run, what the run header says about the ranks (`env`) and about capping (`header`)."""

    cases: list[Case]
    env: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)


def local_devices(device: Any) -> int:
    """How many ranks this node can give a device each: its GPUs of the kind, or its usable CPU cores."""
    import torch

    counts: dict[str, Callable[[], int]] = {"cuda": torch.cuda.device_count, "cpu": _usable_cores,
                                            "xpu": lambda: torch.xpu.device_count()}
    return max(1, counts.get(device.torch_type, lambda: 1)())


def plan(cases: Sequence[Case], device: Any, launch: Launch | None = None, identify: bool = True) -> Plan:
    """Cap each case's `nproc_per_node` at this node's devices (duplicates dropped), 1 first within a key.

    With `identify`, the header gets `env.ranks` (every rank's host, device and driver, from the largest
    case: computed here on one node, gathered through torchrun across nodes) and `nproc_cap` if it capped.
    """
    launch = launch or Launch()
    limit = local_devices(device)
    capped: dict[tuple, Case] = {}
    order: dict[tuple, int] = {}
    for case in cases:
        c = replace(case, nproc_per_node=min(case.nproc_per_node, limit))
        capped.setdefault(c.key(), c)
        order.setdefault(replace(c, nproc_per_node=1).key(), len(order))
    todo = sorted(capped.values(), key=lambda c: (order[replace(c, nproc_per_node=1).key()], c.nproc_per_node))
    out = Plan(todo)
    asked = sorted({c.nproc_per_node for c in cases})
    if asked and asked[-1] > limit:
        out.header["nproc_cap"] = {"devices": limit, "asked": asked, "ran": sorted({c.nproc_per_node for c in todo})}
    most = max((c.nproc_per_node for c in todo), default=1)
    if identify and most > 1:
        out.env["ranks"] = _ranks(todo, device, launch, most)
        if launch.nnodes > 1:
            out.header["torchrun"] = asdict(launch)
    return out


def _ranks(cases: Sequence[Case], device: Any, launch: Launch, most: int) -> list[dict[str, Any]]:
    """Every rank's identity for the header: here on one node; across nodes, gathered through torchrun."""
    from rbench.run.distributed import rank_identity

    if launch.nnodes == 1:
        local = [device if device.torch_type == "cpu" else type(device)(i) for i in range(most)]
        return [{"rank": i, "local_rank": i, "node": 0, **rank_identity(d)} for i, d in enumerate(local)]
    probe = next(c for c in cases if c.nproc_per_node == most)
    gathered = Torchrun(device.kind, Path(tempfile.gettempdir()) / "rbench-probe.log", launch).gather(
        probe, PROBE_TIMEOUT_S)
    if gathered is None:
        return [{"unavailable": True, "reason": "the nodes did not all report their devices at the start of the run "
                 "(see each case's ranks[].device)"}]
    return sorted(gathered["ranks"], key=lambda r: r["rank"])
