"""Writing a whole file so that a reader finds the old one or the new one, never a part of either.

Reports, pages, figures, exports and baselines are read by people and by CI while rbench writes them,
and a full disk or a kill can stop a write halfway: each is written to a temporary file beside its
destination, flushed to disk, then renamed over it (a rename within one directory is atomic).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def replace(path: str | Path, data: bytes | str) -> Path:
    """Put `data` (text is written as UTF-8) at `path` whole; raises OSError, leaving `path` as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share one
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path
