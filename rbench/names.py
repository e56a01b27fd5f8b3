"""Free text made safe: slugs for file names, one-line reasons for records, text fit for a terminal.

The lowest module of rbench: everything may use it, it uses nothing of rbench.
"""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: object, fallback: str = "unknown") -> str:
    """`text` as a file-name part: ASCII letters, digits, `_ . -` only, never starting with a dot."""
    s = _UNSAFE.sub("_", str(text)).strip("_")
    s = s.lstrip(".")  # a leading dot would hide the file (and `..` would climb a directory)
    return s or fallback


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: `TypeName: first line of the message`, at most `limit` characters."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")[:limit]


def printable(text: object) -> str:
    """`text` with control and bidirectional-override characters shown as `\\uXXXX` escapes.

    A name from a suite file must not move the cursor, ring the bell or reverse the terminal's text.
    """
    out = []
    for ch in str(text):
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\t":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)
