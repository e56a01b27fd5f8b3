"""Run files: the record schema, append-only atomic writing, and reading into pandas.

A run file is JSON Lines: a `run` header (suite, environment), one `record` line per case as soon as
it is measured, and an `end` line (`complete` or `interrupted`). Each line is written with a single
`write()` on an O_APPEND descriptor and fsync'd, so a crash or Ctrl-C never loses a finished record
and never leaves a half record except possibly the very last line, which readers skip.
This module imports no torch: results can be read on any laptop.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbench.names import slug
from rbench.spec import KEY_FIELDS, record_key

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error", "timeout", "incorrect", "unsupported", "over_budget", "skipped")
CASE_FIELDS = KEY_FIELDS  # what identifies a case across runs; defined once, in rbench.spec
RUN_SUFFIX = ".jsonl"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def case_key(record: dict[str, Any]) -> tuple:
    """The fields that identify a case across runs (what `compare` matches on)."""
    return record_key(record)


def new_record(case: Any, status: str, reason: str = "", **metrics: Any) -> dict[str, Any]:
    """A record for `case` (an `rbench.spec.Case`); every field the README documents is present."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; allowed: {', '.join(STATUSES)}")
    record: dict[str, Any] = {
        "status": status, "reason": reason, **case.to_dict(), "case_id": case.id,
        "throughput_ips": None, "latency_ms": None, "samples_ms": [], "flops_per_image": None,
        "params": None, "tflops": None, "peak_memory_bytes": None, "peak_memory": None,
        "power": {"unavailable": True, "reason": "case was not timed"}, "gate_error": None,
        "gate_tolerance": None, "host_ms_per_iter": None, "cuda_graph": None, "warnings": [], "finished": now(),
    }
    record.update(metrics)
    return record


def default_path(out_dir: str | Path, suite_name: str, device_kind: str) -> Path:
    """`<suite>-<device>-<host>-<stamp>.jsonl` under `out_dir`; `RunWriter.create` adds `-2`, `-3`... if taken."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(out_dir) / f"{slug(f'{suite_name}-{device_kind}-{socket.gethostname()}')}-{stamp}{RUN_SUFFIX}"


class RunWriteError(Exception):
    """A run file that cannot be written (full disk, no permission, `--out` under a file): one line, path and cause.

    Whatever the file held before the failed write is still there, whole: a failed append is cut back.
    """

    def __init__(self, path: str | Path, cause: str):
        super().__init__(f"{path}: {cause}")
        self.path, self.cause = Path(path), cause


def os_cause(e: OSError) -> str:
    """Why an OS call failed, in words: `No space left on device`; a path that is a file where a
    directory is needed says so (mkdir answers `File exists`)."""
    if isinstance(e, FileExistsError) and e.filename and not Path(e.filename).is_dir():
        return "Not a directory (it is a file)"
    return e.strerror or str(e)



def _write_line(fd: int, path: Path, data: bytes) -> None:
    """One whole line or nothing: a short write (a full disk) is cut back to where the line began."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        written = os.write(fd, data)
        if written < len(data):  # a full disk writes what fits; the next write says why the rest did not
            if os.write(fd, data[written:]) < len(data) - written:
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes; is the disk full?)")
        os.fsync(fd)
    except OSError as e:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass
        raise RunWriteError(path, f"cannot write: {os_cause(e)}") from None


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(_finite(obj), default=_jsonable, allow_nan=False) + "\n").encode()


def _append_line(path: Path, obj: dict[str, Any]) -> None:
    _append_raw(path, _line(obj))


def _append_raw(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as e:
        raise RunWriteError(path, f"cannot open for appending: {os_cause(e)}") from None
    try:
        _write_line(fd, path, data)
    finally:
        os.close(fd)


def _create_exclusive(path: Path) -> tuple[Path, int]:
    """Create `path`, or `<stem>-2.jsonl`, `-3`... if it exists: two runs never share one file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunWriteError(path.parent, f"cannot create the directory: {os_cause(e)}") from None
    stem = path.name[: -len(RUN_SUFFIX)] if path.name.endswith(RUN_SUFFIX) else path.stem
    suffix = RUN_SUFFIX if path.name.endswith(RUN_SUFFIX) else path.suffix
    for n in range(1, 10_000):
        candidate = path if n == 1 else path.with_name(f"{stem}-{n}{suffix}")
        try:
            return candidate, os.open(candidate, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        except OSError as e:
            raise RunWriteError(candidate, f"cannot create: {os_cause(e)}") from None
    raise RunWriteError(path, "cannot create: 10000 run files of this name already exist")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def _finite(obj: Any) -> Any:
    """Replace NaN/inf (which JSON cannot hold) by None, recursively."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class RunWriter:
    """Appends to one run file; creating it writes the header."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, suite: dict[str, Any], env: dict[str, Any], **header: Any) -> RunWriter:
        """Create the run file exclusively (a `-N` suffix if `path` is taken) and write its header.

        If the header cannot be written (a full disk), the new file is removed: no empty run file is left.
        """
        path, fd = _create_exclusive(Path(path))
        try:
            _write_line(fd, path, _line({"type": "run", "schema": SCHEMA_VERSION, "started": now(), "suite": suite,
                                         "env": env, **header}))
        except RunWriteError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return cls(path)

    def append(self, record: dict[str, Any]) -> None:
        _append_line(self.path, {"type": "record", **record})

    def mark(self, kind: str, **fields: Any) -> None:
        """Lifecycle lines: `end` (status complete/interrupted) and `resume`."""
        _append_line(self.path, {"type": kind, "time": now(), **fields})


@dataclass
class Run:
    """A parsed run file."""

    path: Path
    header: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    torn: list[int] = field(default_factory=list)  # line numbers skipped as torn (see `read_run`)

    @property
    def status(self) -> str:
        """`complete`, `interrupted`, or `incomplete` (no end line: the process died or is still running)."""
        status = "incomplete"
        for e in self.events:
            if e.get("type") == "end":
                status = e.get("status", "incomplete")
            elif e.get("type") == "resume":
                status = "incomplete"
        return status

    @property
    def env(self) -> dict[str, Any]:
        return self.header.get("env", {})

    @property
    def suite(self) -> dict[str, Any]:
        return self.header.get("suite", {})

    def latest_records(self) -> list[dict[str, Any]]:
        """One record per case key: a resumed run may measure a case again; the last one counts."""
        by_key: dict[tuple, dict[str, Any]] = {}
        for r in self.records:
            by_key[case_key(r)] = r
        return list(by_key.values())


class RunFileError(ValueError):
    """A file that is not an rbench run file (or one of a schema this rbench does not read)."""


class EmptyRunFile(RunFileError):
    """A run file without a complete header: the run died (or the disk filled) before writing it."""


class TornLineWarning(UserWarning):
    """A run-file line cut short by a crash or a full disk: skipped, and every other line is read."""


_LINE_START = b'{"type": '  # how every line rbench writes begins


def _parse_line(raw: bytes) -> tuple[Any, bool]:
    """(the line's object, whether it was torn). A torn line is None; one torn line that a later append
    joined (rbench before 0.2 appended onto a half line) gives back the appended object."""
    try:
        return json.loads(raw), False
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    cut = raw.rfind(_LINE_START)
    if cut > 0:
        try:
            return json.loads(raw[cut:]), True
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    return None, True


def read_run(path: str | Path) -> Run:
    """Parse a run file. A torn line is skipped with a `TornLineWarning` and counted in `Run.torn`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RunFileError(f"{path}: cannot read: {os_cause(e)}") from None
    run: Run | None = None
    torn: list[int] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        obj, was_torn = _parse_line(raw)
        if was_torn:
            torn.append(number)
        if obj is None:
            if run is None:
                raise EmptyRunFile(f"{path}:{number}: no run header (the first line is not valid JSON: the run died "
                                   "while writing it, or this is not a run file)")
            continue
        kind = obj.get("type") if isinstance(obj, dict) else None
        if run is None:
            if kind != "run":
                raise RunFileError(f"{path}:{number}: not an rbench run file (first line is not a run header)")
            if obj.get("schema") != SCHEMA_VERSION:
                raise RunFileError(f"{path}:{number}: run file schema {obj.get('schema')!r} is not one this rbench "
                                   f"reads (schema {SCHEMA_VERSION}); read it with the rbench version that wrote it")
            run = Run(path=path, header=obj)
        elif kind == "record":
            run.records.append({k: v for k, v in obj.items() if k != "type"})
        elif kind is not None:
            run.events.append(obj)
    if run is None:
        raise EmptyRunFile(f"{path}: empty file, not an rbench run file (the run died before writing its header)")
    run.torn = torn
    if torn:
        warnings.warn(f"{path}: skipped {len(torn)} torn line(s) (line {', '.join(map(str, torn))}: cut short by "
                      f"a crash or a full disk); the other {len(run.records)} records are intact",
                      TornLineWarning, stacklevel=2)
    return run


def repair_tail(path: str | Path) -> tuple[Path, int] | None:
    """Before appending to a run file: cut off a torn last line, keeping its bytes in `<file>.torn`.

    Returns (the .torn file, bytes removed), or None if the file ended with a whole line. A last line
    that is whole JSON but lacks its newline gets the newline instead.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RunWriteError(path, f"cannot read: {os_cause(e)}") from None
    start = (data[:-1] if data.endswith(b"\n") else data).rfind(b"\n") + 1
    tail = data[start:]
    obj, was_torn = _parse_line(tail) if tail.strip() else (None, False)
    if not was_torn and (obj is None or isinstance(obj, dict)):
        if obj is not None and not data.endswith(b"\n"):
            _append_raw(path, b"\n")  # a whole last line that only lacks its newline: keep it
        return None
    keep, removed = _unique(path.with_name(path.name + ".torn")), data[start:]
    try:
        fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise RunWriteError(keep, f"cannot create: {os_cause(e)}") from None
    try:
        _write_line(fd, keep, removed)
    except RunWriteError:
        keep.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    try:
        os.truncate(path, start)
    except OSError as e:
        raise RunWriteError(path, f"cannot cut off the torn last line: {os_cause(e)}") from None
    return keep, len(removed)


def _unique(path: Path) -> Path:
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def run_files(path_or_dir: str | Path) -> list[Path]:
    p = Path(path_or_dir)
    if p.is_dir():
        return sorted(f for f in p.rglob(f"*{RUN_SUFFIX}") if f.is_file())
    if p.is_file():
        return [p]
    raise RunFileError(f"{p}: no such file or directory")


def iter_runs(path_or_dir: str | Path) -> Iterator[Run]:
    """Every run in a file, or below a directory; there, a file without a header is skipped with a warning."""
    scanning = Path(path_or_dir).is_dir()
    for f in run_files(path_or_dir):
        try:
            yield read_run(f)
        except EmptyRunFile as e:
            if not scanning:
                raise
            warnings.warn(f"{e}; skipped", TornLineWarning, stacklevel=2)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted columns (latency_ms.p50); lists such as samples_ms stay whole."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict) and k != "peak_memory":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def to_rows(runs: Iterable[Run]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        device = run.env.get("device", {})
        for r in run.latest_records():
            row = _flatten(r)
            row.update({"run_file": str(run.path), "suite": run.suite.get("name"),
                        "device_name": device.get("name"), "device_kind": device.get("kind"),
                        "git_sha": run.env.get("git", {}).get("sha"), "run_started": run.header.get("started")})
            rows.append(row)
    return rows


def load(path_or_dir: str | Path) -> pandas.DataFrame:  # noqa: F821
    """Every record of a run file, or of every run file below a directory, as a pandas DataFrame.

    One row per case; the record's fields are columns, nested ones dotted (`latency_ms.p50`,
    `power.avg_w`), plus `run_file`, `suite`, `device_name`, `device_kind`, `git_sha`, `run_started`.
    """
    import pandas as pd

    return pd.DataFrame(to_rows(iter_runs(path_or_dir)))
