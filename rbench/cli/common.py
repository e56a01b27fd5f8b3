"""What every command shares: the consoles it prints on and the one-line usage error (exit status 2)."""

from __future__ import annotations

import sys

from rich.console import Console

# Outside a terminal (CI logs, pipes) rich would assume 80 columns and fold the results table.
console = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True, soft_wrap=True)  # one-line messages stay one line


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def say(text: str) -> None:
    """A plain line on stderr (no markup: paths and case ids may hold brackets)."""
    err.print(text, markup=False, highlight=False)
