"""The worker process behind `rbench.run.isolation.Worker`: reads case requests on stdin, answers records.

Protocol: one JSON object per line each way. The worker first answers `{"ready": true}`; then for
each `{"case": ..., "policy": ...}` it answers `{"record": ...}`. File descriptor 1 is redirected to
stderr at start-up so that nothing a library prints can corrupt the protocol.

The worker dies with its parent, so that a killed `rbench run` never leaves it keeping a GPU busy: on
Linux the kernel sends it SIGKILL when the parent dies (PR_SET_PDEATHSIG); everywhere, a thread
reads stdin, and end-of-file while a case is requested or running means the parent is gone (a
parent that closes stdin on purpose does so between cases): the worker then kills its process
group at once instead of finishing the case.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
from typing import IO

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGKILL when the parent exits (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the stdin watchdog still ends the worker
    if parent and os.getppid() != parent:  # the parent died before the request above took effect
        _die()


def _die() -> None:
    """End this worker and what it started (compile workers): its process group, if it leads one."""
    sys.stderr.flush()
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(3)


class Requests:
    """Case requests from the parent, read by a watchdog thread that ends the worker if the parent goes."""

    def __init__(self, stream: IO[bytes]):
        self.queue: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.busy = self.eof = False
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            if line.strip():
                self.queue.put(line)
        with self.lock:
            self.eof = True
            if self.busy or not self.queue.empty():
                _die()  # the parent went away while it wanted a result: nobody will read it
        self.queue.put(None)

    def next(self) -> bytes | None:
        """The next request (marking the worker busy), or None when the parent closed stdin between cases."""
        line = self.queue.get()
        if line is None:
            return None
        with self.lock:
            if self.eof:
                _die()
            self.busy = True
        return line

    def done(self) -> None:
        """The case is measured: from here, end-of-file is the parent closing stdin on purpose."""
        with self.lock:
            self.busy = False


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rbench.run.worker")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--parent", type=int, default=0, help="the parent's pid: the worker dies with it")
    args = parser.parse_args()
    die_with_parent(args.parent)

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = Requests(sys.stdin.buffer)

    from rbench.run import isolation
    from rbench.spec import Case, Policy

    executor = isolation.InProcess(args.device)
    protocol.write(json.dumps({"ready": True}) + "\n")
    while (line := requests.next()) is not None:
        request = json.loads(line)
        record = executor.run(Case(**request["case"]), Policy(**request["policy"]))
        requests.done()  # before the reply: a parent that has it may close stdin at once
        try:
            protocol.write(json.dumps({"record": record}, default=str) + "\n")
        except BrokenPipeError:
            break  # the parent is gone
    executor.close()


if __name__ == "__main__":
    main()
