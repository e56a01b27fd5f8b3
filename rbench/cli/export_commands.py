"""The commands that hand results to other tools and over time: `export` and `history`. Neither imports torch."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rbench import files
from rbench.cli.common import UsageError, console, rbench_warnings_as_lines, say, usage_errors


def _write(path: str | None, text: str) -> None:
    if not path:
        sys.stdout.write(text)
        return
    try:
        files.replace(path, text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    say(f"wrote {path}")


@rbench_warnings_as_lines
def cmd_export(args: argparse.Namespace) -> int:
    from rbench.analysis import export

    with usage_errors("export", export.ExportError):
        text, notes = export.export(args.runs, args.format, samples=args.samples, metric=args.metric)
    for n in notes:
        say(f"note: {n}")
    if args.format == "gab":
        say(f"github-action-benchmark: use `tool: '{export.gab_tool(args.metric)}'` for this file")
    with usage_errors("export", UsageError):
        _write(args.output, text)
    return 0


@rbench_warnings_as_lines
def cmd_history(args: argparse.Namespace) -> int:
    from rbench.analysis import compare, history

    try:
        threshold = compare.parse_threshold(args.threshold) if args.threshold else None
        h = history.history(args.directories, args.order, threshold, args.repo, args.min_runs)
    except history.HistoryUnavailable as e:
        raise UsageError(str(e)) from None
    except (history.HistoryError, compare.CompareError) as e:
        raise UsageError(f"rbench history: {e}") from None
    from rbench.analysis import trends

    if any(s.changes for s in h.series):
        console.print(trends.rich_table(h))
    console.print(trends.footer(h), markup=False, highlight=False)
    with usage_errors("history", UsageError, OSError):
        if args.json:
            _write(args.json, trends.to_json(h) + "\n")
        if args.html or args.png:
            figs = trends.figures(h)
            for path in trends.write_pngs(figs, args.png) if args.png else []:
                say(f"wrote {path}")
            if args.html:
                say(f"wrote {trends.write_html(h, figs, args.html, args.title)}")
    return 1 if h.regressions() else 0


def add_to(sub: Any) -> None:
    """Register these commands on the top-level parser's subparsers."""
    from rbench.analysis.export import FORMATS, GAB_METRICS
    from rbench.analysis.history import MIN_RUNS, ORDERS

    p = sub.add_parser("export", help="run files as CSV, github-action-benchmark or Bencher (BMF) JSON",
                       description="Write the records of run files (or of every run file below directories) in a "
                                   "format other tools read: csv (one row per record), gab (github-action-benchmark "
                                   "custom JSON) or bmf (Bencher Metric Format).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run files, or directories of them")
    p.add_argument("--format", choices=FORMATS, required=True, help="csv, gab or bmf")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--samples", action="store_true", help="csv: add the raw per-iteration samples (samples_ms)")
    p.add_argument("--metric", choices=tuple(GAB_METRICS), default="latency",
                   help="gab: which figure (latency p50/p99, memory and energy are customSmallerIsBetter, throughput "
                        "customBiggerIsBetter; default latency)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("history", help="every case across the runs below DIR: change points; exit 1 on a new slowdown",
                       description="Order the runs below DIR by time (or commit), follow each case on each device, "
                                   "and find step changes. Exit status: 0 no series whose newest change point is a "
                                   "slowdown, 1 there is one (beyond the threshold), 2 bad input or ruptures missing.")
    p.add_argument("directories", nargs="+", metavar="DIR", help="directories of run files (or pytest-benchmark JSON)")
    p.add_argument("--order", choices=ORDERS, default="time",
                   help="time (when each run started, the default) or commit (git history of --repo's HEAD)")
    p.add_argument("--repo", default=".", help="the git checkout for --order commit (default: .)")
    p.add_argument("--threshold", metavar="PCT",
                   help="smallest step worth reporting, e.g. 5%% (default: the suite's `threshold`, else 5%%)")
    p.add_argument("--min-runs", type=int, default=MIN_RUNS, metavar="N",
                   help=f"runs needed on each side of a change point (default {MIN_RUNS})")
    p.add_argument("--html", metavar="FILE", help="write the trends as one self-contained HTML file")
    p.add_argument("--png", metavar="DIR", help="write one trend PNG per series into DIR")
    p.add_argument("--json", metavar="FILE", help="write every series and change point as JSON")
    p.add_argument("--title", default="rbench history", help="title of the HTML page")
    p.set_defaults(func=cmd_history)
