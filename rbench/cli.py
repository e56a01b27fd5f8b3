"""The `rbench` command: argument parsing and printing. The work is done by the modules it calls.

Exit codes: 0 success, 1 a check failed (e.g. `--strict` with failed cases), 2 bad input, 130 interrupted.
Heavy imports (torch) happen inside the commands that need them, so `compare` and `report` run
on machines without torch's GPU stack.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from rbench import __version__

# Outside a terminal (CI logs, pipes) rich would assume 80 columns and fold the results table.
console = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True, soft_wrap=True)  # one-line messages stay one line


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_run(args: argparse.Namespace) -> int:
    from rbench import results, spec
    from rbench.console import notes, progress, run_table, status_counts
    from rbench.hw import detect
    from rbench.run import models, runner

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
        device = detect.detect(kind)
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
        env = detect.environment(device)
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

    from rbench import spec
    from rbench.hw import detect
    from rbench.run import backends, models

    device = detect.detect(args.device)
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

    from rbench.hw import detect

    console.print_json(json.dumps(detect.environment(detect.detect(args.device)), default=str))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rbench.analysis import compare

    try:
        threshold = compare.parse_threshold(args.threshold) if args.threshold else None
        result = compare.compare_paths([args.base], [args.new], threshold, args.across_machines)
    except compare.CompareError as e:
        raise UsageError(f"rbench compare: {e}") from None
    if args.format == "json":
        sys.stdout.write(compare.to_json(result, args.fail_on) + "\n")
    elif args.format == "markdown":
        sys.stdout.write(compare.to_markdown(result, args.fail_on))
    else:
        console.print(compare.rich_table(result))
        console.print(compare.text_footer(result, args.fail_on), markup=False, highlight=False)
    return 1 if result.regressions(args.fail_on) else 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from rbench.analysis import baseline

    try:
        if args.action == "update":
            dest, replaced = baseline.update(args.run, args.into, args.allow_incomplete)
            for old in replaced:
                if old.resolve() != dest.resolve():
                    err.print(f"replaced older baseline {old}", markup=False, highlight=False)
            err.print(f"baseline: {dest}", markup=False, highlight=False)
            print(dest)
        elif args.action == "find":
            found = baseline.find(args.run, args.root)
            print(found[0].source.path if args.file else found[0].directory)
        else:
            from rich.table import Table

            table = Table("directory", "file", "suite", "machine and software", "measured", "promoted",
                          header_style="bold", title=f"baselines under {args.root}")
            for e in baseline.entries(args.root):
                s = e.source
                where = e.directory.relative_to(args.root) if e.directory.is_relative_to(args.root) else e.directory
                table.add_row(str(where), s.path.name, s.suite or s.kind, s.machine, s.started, e.promoted)
            console.print(table)
    except baseline.BaselineError as e:
        raise UsageError(f"rbench baseline {args.action}: {e}") from None
    return 0


def cmd_latest(args: argparse.Namespace) -> int:
    from rbench.analysis import baseline

    try:
        path = baseline.latest(args.directory, args.suite)
    except baseline.BaselineError as e:
        raise UsageError(f"rbench latest: {e}") from None
    print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rbench.analysis import peaks, report

    try:
        table = peaks.PeakTable()
        if args.peaks:
            table.entries[:0] = peaks.load_extra(args.peaks)
        runs = report.load_runs(args.runs, table)
        if not args.html and not args.png:
            console.print(report.side_by_side(runs))
            console.print("draw the figures with --html FILE and/or --png DIR", markup=False, highlight=False)
            return 0
        built = report.build(runs)
    except (report.ReportError, ValueError, OSError) as e:
        raise UsageError(f"rbench report: {e}") from None
    for why in built.skipped:
        err.print(f"not drawn: {why}", markup=False, highlight=False)
    if args.png:
        for path in report.write_pngs(built, args.png):
            print(path)
    if args.html:
        print(report.write_html(built, args.html, args.title))
    return 0


def cmd_kernels_check(args: argparse.Namespace) -> int:
    from rbench_kernels import check

    return check.main(args.extra)


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

    p = sub.add_parser("kernels", help="the Triton kernels: `rbench kernels check` cross-compiles them for GPUs")
    ksub = p.add_subparsers(dest="kernels_command", required=True)
    k = ksub.add_parser("check", add_help=False,
                        help="compile every kernel and config for sm_80, sm_90 and gfx942 on this machine and report "
                             "registers, spills, shared memory and tensor-core use (options: rbench kernels check --help)")
    k.set_defaults(func=cmd_kernels_check, passthrough=True)  # its options are rbench_kernels.check's own

    p = sub.add_parser("env", help="print this machine's environment record (hardware, driver, software)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("compare", help="judge NEW against BASE case by case; exit 1 on a regression",
                       description="Match the cases of two result sets (run files, pytest-benchmark JSON, or "
                                   "directories of them) and judge each from its raw samples. Exit status: 0 no "
                                   "regression, 1 a regression (see --fail-on), 2 bad input or machines differ.")
    p.add_argument("base", help="baseline: a run file, pytest-benchmark JSON, or a directory of them")
    p.add_argument("new", help="the results to judge: a run file, pytest-benchmark JSON, or a directory")
    p.add_argument("--threshold", metavar="PCT",
                   help="smallest change worth reporting, e.g. 5%% or 0.05 (default: the suite's `threshold`, else 5%%)")
    p.add_argument("--fail-on", choices=["slower", "status", "any"], default="any",
                   help="what makes the exit status 1: slower cases, status regressions (ok -> oom/error/...), or "
                        "either (default)")
    p.add_argument("--format", choices=["table", "markdown", "json"], default="table",
                   help="table (terminal), markdown (pull-request comment) or json")
    p.add_argument("--across-machines", action="store_true",
                   help="compare even if device or performance-relevant software (torch, CUDA/HIP, cuDNN, Triton, "
                        "driver) differ")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("baseline", help="store a run as the baseline for CI, find or list baselines")
    bsub = p.add_subparsers(dest="action", required=True)
    b = bsub.add_parser("update", help="copy RUN into a baseline directory, replacing the older baseline of "
                                       "the same suite and device")
    b.add_argument("run", help="run file (or pytest-benchmark JSON)")
    b.add_argument("--into", required=True, metavar="DIR", help="baseline directory, e.g. results/baselines/h100")
    b.add_argument("--allow-incomplete", action="store_true", help="accept an interrupted or unfinished run")
    b.set_defaults(func=cmd_baseline)
    b = bsub.add_parser("find", help="print the baseline directory that matches RUN's suite, machine and software")
    b.add_argument("run", help="run file (or pytest-benchmark JSON)")
    b.add_argument("--root", default="results/baselines", help="where baselines live (default: results/baselines)")
    b.add_argument("--file", action="store_true", help="print the matching baseline file instead of its directory")
    b.set_defaults(func=cmd_baseline)
    b = bsub.add_parser("list", help="every baseline with its suite, machine and software")
    b.add_argument("--root", default="results/baselines", help="where baselines live (default: results/baselines)")
    b.set_defaults(func=cmd_baseline)

    p = sub.add_parser("report", help="several runs side by side: figures as one HTML file and/or PNGs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run files, or directories of them (one line per run)")
    p.add_argument("--html", metavar="FILE", help="write one self-contained HTML file (figures embedded)")
    p.add_argument("--png", metavar="DIR", help="write the figures as PNG files into DIR")
    p.add_argument("--peaks", metavar="FILE", help="JSON/YAML list of extra device peaks (see rbench/peaks.py)")
    p.add_argument("--title", default="rbench report", help="title of the HTML page")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("latest", help="print the most recent run file below a directory (for scripts and CI)")
    p.add_argument("directory", nargs="?", default="results", help="directory to search (default: ./results)")
    p.add_argument("--suite", help="only runs of this suite")
    p.set_defaults(func=cmd_latest)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    from rbench.spec import SpecError

    try:
        return args.func(args)
    except (UsageError, SpecError) as e:
        err.print(str(e), markup=False, highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
