"""The `rbench maxbatch` command: each case's largest batch that runs without running out of memory.

The search is `rbench.run.maxbatch` (doubling, then bisection; every probe a case in the worker, recorded);
this file only opens the run file, runs the searches and prints their answers. MLPerf scenarios need no
command of their own: they are suite cases (`scenarios:`), run by `rbench run`.
"""

from __future__ import annotations

import argparse
from typing import Any

from rbench.cli.common import UsageError, console, say


def answers_table(records: list[dict[str, Any]]) -> Any:
    """One row per search: the largest batch that ran, the smallest that ran out of memory, the probes."""
    from rich.markup import escape
    from rich.table import Table

    from rbench.names import printable
    from rbench.scenario_spec import MAX_BATCH

    safe = lambda text: escape(printable(text))  # noqa: E731

    table = Table("case", "max batch", "first OOM", "probes", "status", title="max-batch search", header_style="bold")
    for r in records:
        if r.get("scenario") == MAX_BATCH and r.get("batch_size") is None:
            table.add_row(safe(r.get("case_id")), str(r.get("max_batch") or "-"), str(r.get("first_oom_batch") or "-"),
                          str(len(r.get("probes") or [])), safe(r["status"] + (f": {r['reason']}" if r.get("reason") else "")))
    return table


def cmd_maxbatch(args: argparse.Namespace) -> int:
    from rbench.console import progress
    from rbench.run import isolation, session

    try:
        s = session.open_session(args.suite, args.out, args.device, max_batch_only=True)
    except session.SessionError as e:
        raise UsageError(f"rbench maxbatch: {e}") from None
    say(f"{s.suite.name}: max-batch search of {len(s.todo)} cases on {s.device.name} ({s.device.kind}); "
        f"results -> {s.path}", out=console)
    executor = (isolation.InProcess(s.device.kind) if args.isolation == "none"
                else isolation.Worker(s.device.kind, s.path.with_suffix(".log")))
    try:
        with progress(console) as bar:
            task = bar.add_task("", total=len(s.todo))
            s.run(executor, on_start=lambda i, c: bar.update(task, description=c.id), on_done=lambda i, r: bar.advance(task))
    except KeyboardInterrupt:
        getattr(executor, "abort", executor.close)()
        s.end("interrupted", "KeyboardInterrupt")
        say(f"interrupted: the probes measured so far are in {s.path}")
        return 130
    executor.close()
    s.end("complete")
    records = s.records()
    console.print(answers_table(records))
    say(f"results: {s.path}", out=console)
    return 0 if all(r["status"] == "ok" for r in records if r.get("batch_size") is None) else 1


def add_to(sub: Any) -> None:
    """Register `rbench maxbatch` on the top-level parser's subparsers."""
    p = sub.add_parser("maxbatch", help="search each model x precision x backend x mode's largest batch that fits "
                                        "in memory (doubling, then bisection; every probe recorded)")
    p.add_argument("suite", help="suite YAML file; its scenario_settings.max_batch (memory_limit_mb, largest, "
                                 "tolerance) apply")
    p.add_argument("--out", default="results", help="directory for the run file (default: ./results)")
    p.add_argument("--device", help="override the suite's device (auto, cuda, rocm, xpu, mps, cpu)")
    p.add_argument("--isolation", choices=["process", "none"], default="process",
                   help="process (default): every probe in a worker process; none: in this process")
    p.set_defaults(func=cmd_maxbatch)
