"""The `rbench` command: argument parsing and printing. The work is done by the modules it calls.

Exit codes: 0 success, 1 a check failed (e.g. `--strict` with failed cases, a regression), 2 bad input,
130 interrupted. Heavy imports (torch) happen inside the commands that need them, so `compare` and
`report` run on machines without torch's GPU stack.
"""

from __future__ import annotations

import argparse
import sys

from rbench import __version__
from rbench.cli import analysis_commands, export_commands, mlperf_commands, results_commands, run_commands
from rbench.cli.common import UsageError, err

__all__ = ["build_parser", "main", "UsageError"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rbench", description="Honest, quick ResNet benchmarks.")
    parser.add_argument("--version", action="version", version=f"rbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run_commands.add_to(sub)
    analysis_commands.add_to(sub)
    export_commands.add_to(sub)
    results_commands.add_to(sub)
    mlperf_commands.add_to(sub)
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
