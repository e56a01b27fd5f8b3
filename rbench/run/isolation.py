"""Where cases run: in a worker process that a crash, a hang or a poisoned CUDA context cannot take down
with it (`Worker`), or in this process (`InProcess`, for tests and debugging).

The worker (`python -m rbench.run.worker`) is long-lived: it is killed and restarted after a crash or a
time-out, and the case is recorded `timeout` or `error`; a worker that the kernel's OOM killer ended is
recorded `oom`, with the evidence (`MemoryWatch`). The worker's life is tied to this process: it dies
with it (see `rbench.run.worker`), so a killed `rbench run` never leaves a worker keeping the GPU busy.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rbench import results
from rbench.run import runner
from rbench.spec import Case, Policy

# cgroup v2 at the root of this container's cgroup namespace; the worker's own cgroup files are added.
OOM_COUNTERS = (Path("/sys/fs/cgroup/memory.events"),)
LOW_MEMORY_FRACTION = 0.05  # available memory below this share of the total counts as "ran out"
SAMPLE_S = 0.1


class InProcess:
    """Runs cases in this process: no isolation from crashes or hangs (for tests and debugging)."""

    def __init__(self, device_kind: str):
        from rbench.hw import detect

        self.device = detect.detect(device_kind)
        self.monitor = detect.monitor_for(self.device)

    def run(self, case: Case, policy: Policy) -> dict[str, Any]:
        return runner.execute(case, policy, self.device, self.monitor)

    interrupted = ""

    def interrupt(self, why: str) -> None:
        """From a signal handler: stop the case being measured here and now (the first time only, so that
        a second Ctrl-C cannot break the clean-up that the first one started)."""
        if not self.interrupted:
            self.interrupted = why
            raise KeyboardInterrupt(why)

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        self.monitor.close()


def _oom_kills(path: Path) -> int | None:
    """The `oom_kill N` count of a cgroup v2 `memory.events` or v1 `memory.oom_control` file."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill" and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return None


def cgroup_counters(pid: int) -> list[Path]:
    """The files whose `oom_kill` counts kills in `pid`'s memory cgroup (v2 and v1 hierarchies)."""
    try:
        groups = [g.split(":", 2) for g in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if g.count(":") >= 2]
        mounts = [m.split() for m in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return []
    found: list[Path] = []
    for m in mounts:
        if "-" not in m or len(m) < m.index("-") + 4:
            continue
        fstype, options = m[m.index("-") + 1], m[m.index("-") + 3].split(",")
        for hierarchy, controllers, path in groups:
            if fstype == "cgroup2" and hierarchy == "0":
                name = "memory.events"
            elif fstype == "cgroup" and "memory" in controllers.split(",") and "memory" in options:
                name = "memory.oom_control"
            else:
                continue
            for candidate in (Path(m[4]) / path.lstrip("/") / name, Path(m[4]) / name):
                if candidate.is_file() and candidate not in found:
                    found.append(candidate)
                    break
    return found


def _available(meminfo: Path) -> tuple[int, int] | None:
    """(MemAvailable, MemTotal) in bytes."""
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        return int(fields["MemAvailable"].split()[0]) * 1024, int(fields["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None


class MemoryWatch:
    """What says the kernel's OOM killer ended a worker: an `oom_kill` counter that rose during the case
    (the worker's cgroup, and `counters`), or host memory that ran out (`meminfo` sampled every `interval_s`).

    The sources are parameters so that tests can stand in for the kernel.
    """

    def __init__(self, counters: Sequence[Path] = OOM_COUNTERS, meminfo: Path = Path("/proc/meminfo"),
                 interval_s: float = SAMPLE_S):
        self.counters, self.meminfo, self.interval_s = [Path(c) for c in counters], Path(meminfo), interval_s

    def start(self, pid: int) -> _Watch:
        files = list(dict.fromkeys(self.counters + cgroup_counters(pid)))
        return _Watch(files, self.meminfo, self.interval_s)


class _Watch:
    """One case's watch: the counters before it, and the lowest available memory seen during it."""

    def __init__(self, files: list[Path], meminfo: Path, interval_s: float):
        self.before = {f: _oom_kills(f) for f in files}
        self.meminfo, self.lowest = meminfo, _available(meminfo)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, args=(interval_s,), daemon=True)
        self.thread.start()

    def _sample(self, interval_s: float) -> None:
        while not self.stopped.wait(interval_s):
            self._note()

    def _note(self) -> None:
        now = _available(self.meminfo)
        if now and (self.lowest is None or now[0] < self.lowest[0]):
            self.lowest = now

    def stop(self) -> str:
        """The evidence of an OOM kill during the case, as one phrase; empty if there is none."""
        self.stopped.set()
        self.thread.join()
        self._note()
        evidence = [f"oom_kill in {f} rose {b} -> {a}" for f, b in self.before.items()
                    if b is not None and (a := _oom_kills(f)) is not None and a > b]
        if self.lowest and self.lowest[0] < LOW_MEMORY_FRACTION * self.lowest[1]:
            evidence.append(f"available memory fell to {self.lowest[0] / 2**20:.0f} MiB of "
                            f"{self.lowest[1] / 2**30:.1f} GiB during the case")
        return "; ".join(evidence)


class Worker:
    """Runs cases in a child process (`python -m rbench.run.worker`), restarted after a crash or time-out.

    The worker's own output (warnings, compiler logs, tracebacks) goes to `log_path`, so the live
    display stays readable and a crash's last words are kept. `command` replaces the worker's command
    line (tests); `memory` is where OOM-kill evidence comes from.
    """

    def __init__(self, device_kind: str, log_path: Path, command: Sequence[str] | None = None,
                 memory: MemoryWatch | None = None):
        self.device_kind = device_kind
        self.log_path = log_path
        self.command = list(command) if command else None
        self.memory = memory or MemoryWatch()
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()
        self.interrupted = ""  # the signal that stopped the run, once one has

    def _argv(self) -> list[str]:
        return self.command or [sys.executable, "-m", "rbench.run.worker", "--device", self.device_kind,
                                "--parent", str(os.getpid())]

    def _start(self) -> None:
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log: Any = open(self.log_path, "ab")
        except OSError:
            log = subprocess.DEVNULL  # no log is no reason to lose the measurement
        # Its own session: the terminal's Ctrl-C reaches only this process, which then stops the worker.
        self.proc = subprocess.Popen(self._argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                     start_new_session=True)
        if log is not subprocess.DEVNULL:
            log.close()
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        try:
            ready = self._reply(runner.READY_TIMEOUT_S)
        except TimeoutError:
            ready = None
        if self.interrupted:
            self._kill()
            raise KeyboardInterrupt(self.interrupted)
        if not ready or "ready" not in ready:
            self._kill()
            raise RuntimeError(f"worker process did not start: {self._last_log_line()}")

    @staticmethod
    def _read(stream: Any, lines: queue.Queue) -> None:
        for line in iter(stream.readline, b""):
            lines.put(line)
        lines.put(None)

    def _reply(self, timeout: float) -> dict[str, Any] | None:
        """The worker's next message; None if it died (or cut its reply short); TimeoutError after `timeout` s."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if line is None or not line.endswith(b"\n"):
            return None
        try:
            return json.loads(line)
        except ValueError:
            return None

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        self.proc = None

    def _last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        return lines[-1].strip()[:300] if lines else "no output"

    def interrupt(self, why: str) -> None:
        """From a signal handler: kill the worker now (freeing the device); `run` then raises KeyboardInterrupt.

        A case that finished before the kill still has its reply queued, and is recorded.
        """
        self.interrupted = why
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def run(self, case: Case, policy: Policy) -> dict[str, Any]:
        if self.interrupted:
            raise KeyboardInterrupt(self.interrupted)
        if self.proc is None or self.proc.poll() is not None:
            try:
                self._start()
            except (RuntimeError, OSError) as e:
                return results.new_record(case, "error", str(e) if isinstance(e, RuntimeError)
                                          else f"worker process could not start: {e}")
        watch = self.memory.start(self.proc.pid)
        try:
            self.proc.stdin.write((json.dumps({"case": case.to_dict(), "policy": asdict(policy)}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            pass  # it died already: its reply is None below
        try:
            reply = self._reply(policy.timeout_s)
        except TimeoutError:
            watch.stop()
            self._kill()
            return results.new_record(case, "timeout", f"case exceeded timeout_s={policy.timeout_s:g} s "
                                      "(build, compile, gate, warm-up and timing together); worker killed")
        evidence = watch.stop()
        if reply is None:
            return self._died(case, evidence)
        if reply["record"]["status"] == "error":
            self._kill()  # an error may leave the device context unusable: start the next case afresh
        return reply["record"]

    def _died(self, case: Case, evidence: str) -> dict[str, Any]:
        """The record of a case whose worker died: `oom` if the kernel's OOM killer did it, else `error`."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # alive, but its reply was unreadable
            self._kill()
            return results.new_record(case, "error", f"worker process sent an unreadable reply: {self._last_log_line()}")
        self.proc = None
        if self.interrupted:
            raise KeyboardInterrupt(self.interrupted)
        try:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        except ValueError:
            how = f"signal {-code}"
        if code == -signal.SIGKILL and evidence:
            return results.new_record(case, "oom", f"worker process killed by the kernel's OOM killer (SIGKILL; "
                                      f"{evidence}): {self._last_log_line()}")
        return results.new_record(case, "error", f"worker process died ({how}): {self._last_log_line()}")

    def abort(self) -> None:
        """Stop now (an interrupted run): the case in flight is abandoned."""
        self._kill()

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
