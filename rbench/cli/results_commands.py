"""The `rbench results` commands: `import` a GPU session's archive under results/, `summary` of results.

Neither imports torch: archives from a lent GPU are filed and read on any laptop.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from rbench.cli.common import UsageError, say


def cmd_import(args: argparse.Namespace) -> int:
    from rbench.analysis import archive

    try:
        done = archive.import_archive(args.archive, args.into)
    except archive.ArchiveError as e:
        raise UsageError(f"rbench results import: {e}") from None
    except OSError as e:
        raise UsageError(f"rbench results import: {e.filename or args.into}: {e.strerror or e}") from None
    how = "replaced the earlier import of this session in" if done.replaced else "into"
    say(f"imported {len(done.runs)} run file(s) and {len(done.files) - len(done.runs)} other file(s) from "
        f"{done.device} {how} {done.destination}")
    print(done.destination)
    return 0


def _summary_lines(path: Path) -> list[str]:
    from rbench.analysis import headline, report

    runs = report.load_runs([path])
    lines = []
    for run in sorted(runs, key=lambda r: (r.suite, r.started)):
        counts = Counter(str(r.get("status")) for r in run.records)
        lines.append(f"{run.suite} on {run.device}: {run.status}, {len(run.records)} cases "
                     f"({', '.join(f'{n} {s}' for s, n in counts.most_common())})")
    lines.append(headline.to_text(headline.headlines(runs, headline.kernel_benchmarks([path]))))
    return lines


def cmd_summary(args: argparse.Namespace) -> int:
    from rbench.analysis import archive, report

    path = Path(args.path)
    try:
        if path.is_file() and not path.name.endswith(".jsonl"):
            with tempfile.TemporaryDirectory(prefix="rbench-summary-") as tmp:
                files = archive.unpack(path, Path(tmp))
                archive.check_runs(path, Path(tmp), files)
                lines = _summary_lines(Path(tmp))
        else:
            lines = _summary_lines(path)
    except (archive.ArchiveError, report.ReportError, ValueError) as e:
        raise UsageError(f"rbench results summary: {e}") from None
    print("\n".join(lines))
    return 0


def add_to(sub: Any) -> None:
    """Register `rbench results ...` on the top-level parser's subparsers."""
    p = sub.add_parser("results", help="file a GPU session's archive under results/, or summarise results")
    rsub = p.add_subparsers(dest="results_command", required=True)
    i = rsub.add_parser("import", help="file ARCHIVE (gpu-results.tar.gz) under DIR/<device>/<date>-<git sha>/",
                        description="Unpack a scripts/gpu_session.sh archive, check that every run file in it loads, "
                                    "and copy all its files under DIR/<device>/<date>-<git sha>/ (a later archive "
                                    "of the same session replaces the earlier import). Exit 2 if it cannot.")
    i.add_argument("archive", help="the archive, e.g. gpu-results.tar.gz")
    i.add_argument("--into", default="results", metavar="DIR", help="where results are kept (default: ./results)")
    i.set_defaults(func=cmd_import)
    s = rsub.add_parser("summary", help="per run: status counts; per device: the ResNet-50 headline figures",
                        description="Summarise a run file, a directory of results or a GPU session archive: each "
                                    "run's status counts, then per device ResNet-50 inference throughput at batch "
                                    "256 and p50 latency at batch 1 for eager, compile and triton, and the kernels' "
                                    "geomean against cuDNN from the kernel benchmark.")
    s.add_argument("path", help="a run file, a directory, or a gpu-results.tar.gz archive")
    s.set_defaults(func=cmd_summary)
