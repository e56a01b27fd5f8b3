"""Run files: the record schema, append-only atomic writing, and reading into pandas.

A run file is JSON Lines: a `run` header (suite, environment), one `record` line per case as soon as
it is measured, and an `end` line (`complete` or `interrupted`). Each line is written with a single
`write()` on an O_APPEND descriptor and fsync'd, so a crash or Ctrl-C never loses a finished record
and never leaves a half record except possibly the very last line, which readers skip.
This module imports no torch: results can be read on any laptop.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
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
        "gate_tolerance": None, "warnings": [], "finished": now(),
    }
    record.update(metrics)
    return record


def default_path(out_dir: str | Path, suite_name: str, device_kind: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = slug(f"{suite_name}-{device_kind}-{socket.gethostname()}")
    path = Path(out_dir) / f"{safe}-{stamp}{RUN_SUFFIX}"
    n = 1
    while path.exists():
        n += 1
        path = Path(out_dir) / f"{safe}-{stamp}-{n}{RUN_SUFFIX}"
    return path


def _append_line(path: Path, obj: dict[str, Any]) -> None:
    data = (json.dumps(obj, default=_jsonable, allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # a short write on a regular file means a full disk
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cls(path)
        _append_line(path, _finite({"type": "run", "schema": SCHEMA_VERSION, "started": now(), "suite": suite,
                                    "env": env, **header}))
        return writer

    def append(self, record: dict[str, Any]) -> None:
        _append_line(self.path, _finite({"type": "record", **record}))

    def mark(self, kind: str, **fields: Any) -> None:
        """Lifecycle lines: `end` (status complete/interrupted) and `resume`."""
        _append_line(self.path, _finite({"type": kind, "time": now(), **fields}))


@dataclass
class Run:
    """A parsed run file."""

    path: Path
    header: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

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
    """A file that is not an rbench run file."""


def read_run(path: str | Path) -> Run:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise RunFileError(f"{path}: cannot read: {e.strerror or e}") from None
    run: Run | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # a last line cut short by a crash: everything before it is intact
            raise RunFileError(f"{path}:{number}: not valid JSON") from None
        kind = obj.get("type") if isinstance(obj, dict) else None
        if run is None:
            if kind != "run":
                raise RunFileError(f"{path}:{number}: not an rbench run file (first line is not a run header)")
            run = Run(path=path, header=obj)
        elif kind == "record":
            run.records.append({k: v for k, v in obj.items() if k != "type"})
        else:
            run.events.append(obj)
    if run is None:
        raise RunFileError(f"{path}: empty file, not an rbench run file")
    return run


def run_files(path_or_dir: str | Path) -> list[Path]:
    p = Path(path_or_dir)
    if p.is_dir():
        return sorted(f for f in p.rglob(f"*{RUN_SUFFIX}") if f.is_file())
    if p.is_file():
        return [p]
    raise RunFileError(f"{p}: no such file or directory")


def iter_runs(path_or_dir: str | Path) -> Iterator[Run]:
    for f in run_files(path_or_dir):
        yield read_run(f)


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
