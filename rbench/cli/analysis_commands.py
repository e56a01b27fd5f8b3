"""The commands that read results: `compare`, `baseline`, `latest`, `report`. None of them imports torch."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rbench.analysis.compare import FAIL_ON
from rbench.cli.common import UsageError, console, err, rbench_warnings_as_lines, usage_errors


@rbench_warnings_as_lines
def cmd_compare(args: argparse.Namespace) -> int:
    from rbench.analysis import compare, render

    fail_on = args.fail_on or ["any"]
    with usage_errors("compare", compare.CompareError, doing="read"):
        threshold = compare.parse_threshold(args.threshold) if args.threshold else None
        limits = {k: compare.parse_threshold(getattr(args, k), f"--{k.replace('_', '-')}")
                  for k in ("memory_threshold", "energy_threshold") if getattr(args, k)}
        result = compare.compare_paths([args.base], [args.new], threshold, args.across_machines, **limits)
    for path, text in ((args.markdown, lambda: render.to_markdown(result, fail_on)),
                       (args.json, lambda: render.to_json(result, fail_on) + "\n")):
        if path:
            try:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text())
            except OSError as e:
                raise UsageError(f"rbench compare: cannot write {path}: {e.strerror or e}") from None
    if args.format == "json":
        sys.stdout.write(render.to_json(result, fail_on) + "\n")
    elif args.format == "markdown":
        sys.stdout.write(render.to_markdown(result, fail_on))
    else:
        console.print(render.rich_table(result))
        console.print(render.text_footer(result, fail_on), markup=False, highlight=False)
    return 1 if result.regressions(fail_on) else 0


@rbench_warnings_as_lines
def cmd_baseline(args: argparse.Namespace) -> int:
    from rbench.analysis import baseline

    with usage_errors(f"baseline {args.action}", baseline.BaselineError, doing=""):
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
    return 0


@rbench_warnings_as_lines
def cmd_latest(args: argparse.Namespace) -> int:
    from rbench.analysis import baseline

    with usage_errors("latest", baseline.BaselineError, doing="read"):
        path = baseline.latest(args.directory, args.suite)
    print(path)
    return 0


@rbench_warnings_as_lines
def cmd_report(args: argparse.Namespace) -> int:
    from rbench.analysis import peaks, report

    with usage_errors("report", report.ReportError, ValueError, doing="read"):
        table = peaks.PeakTable()
        if args.peaks:
            table.entries[:0] = peaks.load_extra(args.peaks)
        runs = report.load_runs(args.runs, table)
        if not args.html and not args.png:
            console.print(report.side_by_side(runs))
            console.print("draw the figures with --html FILE and/or --png DIR", markup=False, highlight=False)
            return 0
        built = report.build(runs)
    for why in built.skipped:
        err.print(f"not drawn: {why}", markup=False, highlight=False)
    with usage_errors("report", doing="write"):
        if args.png:
            for path in report.write_pngs(built, args.png):
                print(path)
        if args.html:
            print(report.write_html(built, args.html, args.title))
    return 0


def add_to(sub: Any) -> None:
    """Register these commands on the top-level parser's subparsers."""
    p = sub.add_parser("compare", help="judge NEW against BASE case by case; exit 1 on a regression",
                       description="Match the cases of two result sets (run files, pytest-benchmark JSON, or "
                                   "directories of them) and judge each from its raw samples. Exit status: 0 no "
                                   "regression, 1 a regression (see --fail-on), 2 bad input or machines differ.")
    p.add_argument("base", help="baseline: a run file, pytest-benchmark JSON, or a directory of them")
    p.add_argument("new", help="the results to judge: a run file, pytest-benchmark JSON, or a directory")
    p.add_argument("--threshold", metavar="PCT",
                   help="smallest change worth reporting, e.g. 5%% or 0.05 (default: the suite's `threshold`, else 5%%)")
    p.add_argument("--fail-on", choices=FAIL_ON, action="append",
                   help="what makes the exit status 1 (repeatable): slower cases, status regressions (ok -> "
                        "oom/error/...), memory (more_memory), energy (more_energy), any = slower or status "
                        "(default), all = every kind")
    p.add_argument("--memory-threshold", metavar="PCT",
                   help="peak-memory rise that is more_memory, e.g. 5%% (default 5%%)")
    p.add_argument("--energy-threshold", metavar="PCT",
                   help="J/image rise that is more_energy, beyond the figures' error bounds (default 10%%)")
    p.add_argument("--format", choices=["table", "markdown", "json"], default="table",
                   help="table (terminal), markdown (pull-request comment) or json, on stdout")
    p.add_argument("--markdown", metavar="FILE", help="also write the markdown to FILE")
    p.add_argument("--json", metavar="FILE", help="also write the JSON to FILE")
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
