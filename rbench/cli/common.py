"""What every command shares: the consoles it prints on and the one-line usage error (exit status 2)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator

from rich.console import Console

from rbench.results import TornLineWarning, os_cause

# Outside a terminal (CI logs, pipes) rich would assume 80 columns and fold the results table.
console = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True, soft_wrap=True)  # one-line messages stay one line


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def say(text: str, out: Console = err) -> None:
    """A plain line on stderr, or on `out` (no markup: paths and case ids may hold brackets)."""
    out.print(text, markup=False, highlight=False)


def fs_error(e: OSError, doing: str = "") -> str:
    """A file-system error as `path: cannot <doing>: cause` (no errno, no traceback)."""
    where = e.filename if e.filename is not None else "?"
    return f"{where}: {f'cannot {doing}: ' if doing else ''}{os_cause(e)}"


@contextlib.contextmanager
def usage_errors(command: str, *kinds: type[Exception], doing: str | None = None) -> Iterator[None]:
    """Turn what a step of `rbench <command>` is expected to fail with into its one-line usage error (exit 2).

    An exception of `kinds` becomes `rbench <command>: <message>`; with `doing` ("read", "write", or ""
    for no verb) an OSError becomes `rbench <command>: <path>: cannot <doing>: <cause>` (`fs_error`).
    Anything else goes on as it is: a bug keeps its traceback."""
    try:
        yield
    except kinds as e:
        raise UsageError(f"rbench {command}: {e}") from None
    except OSError as e:
        if doing is None:
            raise
        raise UsageError(f"rbench {command}: {fs_error(e, doing)}") from None


def rbench_warnings_as_lines(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run `command`, then print rbench's own warnings (a torn run-file line, a skipped empty file) once each,
    as `warning: ...` lines on stderr; other warnings go on to Python's usual display."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", TornLineWarning)
            try:
                return command(args)
            finally:
                shown: set[str] = set()
                for w in seen:
                    if not w.category.__module__.startswith("rbench."):
                        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
                    elif str(w.message) not in shown:
                        shown.add(str(w.message))
                        say(f"warning: {w.message}")
    return run
