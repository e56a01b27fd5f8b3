"""Where cases run: in a worker process that a crash, a hang or a poisoned CUDA context cannot take down
with it (`Worker`), or in this process (`InProcess`, for tests and debugging).

The worker (`python -m rbench.run.worker`) is long-lived: it is killed and restarted after a crash or a
time-out, and the case is recorded `timeout` or `error`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rbench import results
from rbench.run import runner
from rbench.spec import Case, Policy


class InProcess:
    """Runs cases in this process: no isolation from crashes or hangs (for tests and debugging)."""

    def __init__(self, device_kind: str):
        from rbench.hw import detect

        self.device = detect.detect(device_kind)
        self.monitor = detect.monitor_for(self.device)

    def run(self, case: Case, policy: Policy) -> dict[str, Any]:
        return runner.execute(case, policy, self.device, self.monitor)

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
        ready = self._reply(runner.READY_TIMEOUT_S)
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
