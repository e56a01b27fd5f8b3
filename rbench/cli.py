"""The `rbench` command: argument parsing and printing. The work is done by the modules it calls.

Exit codes: 0 success, 1 a check failed (e.g. `--strict` with failed cases), 2 bad input, 130 interrupted.
Heavy imports (torch) happen inside the commands that need them, so `compare` and `report` run
on machines without torch's GPU stack.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from rbench import __version__

# Outside a terminal (CI logs, pipes) rich would assume 80 columns and fold the results table.
console = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_run(args: argparse.Namespace) -> int:
    from rbench import devices, models, results, runner, spec
    from rbench.console import notes, progress, run_table, status_counts

    if args.resume:
        try:
            previous = results.read_run(args.resume)
        except results.RunFileError as e:
            raise UsageError(str(e)) from None
        suite = spec.from_dict(previous.suite)
        kind = previous.header.get("device_kind", "auto")
        path = Path(args.resume)
    else:
        if not args.suite:
            raise UsageError("rbench run: give a suite file (e.g. suites/smoke.yaml) or --resume RUNFILE")
        suite = spec.load(args.suite, models.names())
        kind = args.device or suite.device
    try:
        device = devices.detect(kind)
    except (ValueError, RuntimeError) as e:
        raise UsageError(f"{args.suite or args.resume}: field 'device': {e}") from None

    profile = suite.for_device(device.kind)
    cases = profile.cases(device.kind)
    if profile is not suite:
        console.print(f"[bold yellow]Running the suite's {device.kind} profile[/] (overrides.{device.kind} in "
                      f"{suite.source or 'the suite'}): batch sizes {list(profile.batch_sizes)}, precisions "
                      f"{list(profile.precisions)}, backends {list(profile.backends)}, modes {list(profile.modes)}")
    if args.resume:
        writer = results.RunWriter(path)
        measured = {results.case_key(r) for r in previous.records}
        todo = [c for c in cases if c.key() not in measured]
        writer.mark("resume", remaining=len(todo))
        console.print(f"Resuming {path}: {len(cases) - len(todo)} of {len(cases)} cases already measured")
    else:
        path = results.default_path(args.out, suite.name, device.kind)
        env = devices.environment(device)
        writer = results.RunWriter.create(path, suite.to_dict(), env, device_kind=device.kind,
                                          suite_path=str(args.suite), argv=sys.argv)
        todo = cases
    console.print(f"[bold]{suite.name}[/]: {len(todo)} cases on {device.name} ({device.kind}); "
                  f"results -> {path}")

    patterns = args.filter or []
    selected: Callable[[Any], bool] = lambda c: all(p in c.id for p in patterns)  # noqa: E731
    executor = (runner.InProcess(device.kind) if args.isolation == "none"
                else runner.Worker(device.kind, path.with_suffix(".log")))
    signal.signal(signal.SIGTERM, _terminate)
    finished: list[dict] = []
    try:
        with progress(console) as bar:
            task = bar.add_task("", total=len(todo))
            runner.run_cases(todo, profile.policy, executor, writer, selected,
                             on_start=lambda i, c: bar.update(task, description=c.id),
                             on_done=lambda i, r: (finished.append(r), bar.advance(task)))
    except KeyboardInterrupt as e:
        executor.close()
        writer.mark("end", status="interrupted", reason=str(e) or "KeyboardInterrupt")
        err.print(f"interrupted: {len(finished)} finished records are in {path}; "
                  f"continue with: rbench run --resume {path}")
        return 130
    executor.close()
    writer.mark("end", status="complete")
    all_records = results.read_run(path).latest_records()
    console.print(run_table(all_records, title=f"{suite.name} on {device.name}"))
    if notes(all_records):
        console.print(notes(all_records), markup=False, highlight=False)
    console.print(f"{status_counts(all_records)}\nresults: {path}")
    failed = [r for r in all_records if r["status"] not in ("ok", "unsupported", "skipped")]
    return 1 if args.strict and failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rbench import backends, devices, models, spec

    device = devices.detect(args.device)
    console.print(f"[bold]This machine:[/] {device.name} ({device.kind})")
    table = Table("precision", "on this machine", header_style="bold")
    for p in spec.PRECISIONS:
        reason = device.unsupported_precision(p)
        table.add_row(p, f"[dim]unsupported: {reason}[/dim]" if reason else "[green]supported[/green]")
    console.print(table)
    table = Table("backend", "on this machine (inference)", header_style="bold")
    for name, backend in backends.REGISTRY.items():
        probe = spec.Case("resnet50", 1, 224, "fp32", name, "inference", "channels_last", device.kind)
        reason = backend.unsupported(probe, device)
        table.add_row(name, f"[dim]unsupported: {reason}[/dim]" if reason else "[green]supported[/green]")
    console.print(table)
    console.print(f"compile modes: {', '.join(spec.COMPILE_MODES)} (write e.g. compile:max-autotune)")
    console.print(f"memory formats: {', '.join(spec.MEMORY_FORMATS)}; modes: {', '.join(spec.MODES)}")
    names = models.names()
    console.print(f"[bold]models[/] ({len(names)}; ResNet family first): {', '.join(names)}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    import json

    from rbench import devices

    console.print_json(json.dumps(devices.environment(devices.detect(args.device)), default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rbench", description="Honest, quick ResNet benchmarks.")
    parser.add_argument("--version", action="version", version=f"rbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a suite and write a run file under results/")
    p.add_argument("suite", nargs="?", help="suite YAML file, e.g. suites/resnet50_fp16.yaml")
    p.add_argument("--out", default="results", help="directory for the run file (default: ./results)")
    p.add_argument("--resume", metavar="RUNFILE", help="measure only the cases missing from RUNFILE")
    p.add_argument("--device", help="override the suite's device (auto, cuda, rocm, xpu, mps, cpu)")
    p.add_argument("--filter", action="append", metavar="TEXT",
                   help="run only cases whose id contains TEXT (repeatable; others are recorded skipped)")
    p.add_argument("--isolation", choices=["process", "none"], default="process",
                   help="process (default): each case in a worker process that a crash or hang cannot take "
                        "down with it; none: in this process")
    p.add_argument("--strict", action="store_true", help="exit 1 if any case ended oom/error/timeout/incorrect/over_budget")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="models, backends, precisions, and what this machine supports")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("env", help="print this machine's environment record (hardware, driver, software)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rbench.spec import SpecError

    try:
        return args.func(args)
    except (UsageError, SpecError) as e:
        err.print(str(e), markup=False, highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
