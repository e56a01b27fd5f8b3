"""The worker process behind `rbench.run.isolation.Worker`: reads case requests on stdin, answers records.

Protocol: one JSON object per line each way. The worker first answers `{"ready": true}`; then for
each `{"case": ..., "policy": ...}` it answers `{"record": ...}`. File descriptor 1 is redirected to
stderr at start-up so that nothing a library prints can corrupt the protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rbench.run.worker")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from rbench.run import isolation
    from rbench.spec import Case, Policy

    executor = isolation.InProcess(args.device)
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        record = executor.run(Case(**request["case"]), Policy(**request["policy"]))
        protocol.write(json.dumps({"record": record}, default=str) + "\n")
    executor.close()


if __name__ == "__main__":
    main()
