"""Baselines: the results a CI job compares against, kept as files under `results/baselines/<name>/`.

A baseline directory holds one file per suite and device (`<suite>-<device>.jsonl`, or the
pytest-benchmark file's own name). `update` copies a run there, replacing an older baseline of the
same suite on the same device, and appends a `baseline` line recording where and when it came from;
the run's own header (machine, software, git commit) is kept byte for byte. `find` is the reverse
lookup: which baseline directory holds results of this run's suite from this machine and software.
No torch here.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbench import files, results
from rbench.analysis import compare, sources
from rbench.names import slug

DEFAULT_ROOT = Path("results/baselines")


class BaselineError(ValueError):
    """A baseline that cannot be stored or found: the message says why (exit status 2, or 1 for `find`)."""


def _single(path: str | Path) -> sources.ResultFile:
    p = Path(path)
    if not p.is_file():
        raise BaselineError(f"{p}: no such file (give one run file or pytest-benchmark JSON)")
    try:
        (source,) = sources.load(p)
    except compare.CompareError as e:
        raise BaselineError(str(e)) from None
    return source


def _device_of(source: sources.ResultFile) -> tuple[Any, Any]:
    ident = source.identity
    return ident.get("device.kind"), ident.get("device.name") or ident.get("cpu")


def filename(source: sources.ResultFile) -> str:
    if source.kind == sources.PYTEST_BENCHMARK:
        return source.path.name
    kind, name = _device_of(source)
    return f"{slug(source.suite)}-{slug(kind)}-{slug(name)}{results.RUN_SUFFIX}"


def _same_slot(a: sources.ResultFile, b: sources.ResultFile) -> bool:
    """Whether b is an older baseline of the same suite on the same device as a (so a replaces it)."""
    if a.kind != b.kind:
        return False
    if a.kind == sources.PYTEST_BENCHMARK:
        return a.path.name == b.path.name and _device_of(a) == _device_of(b)
    return a.suite == b.suite and _device_of(a) == _device_of(b)


def _sources_below(root: Path) -> list[sources.ResultFile]:
    if not root.is_dir():
        return []
    out = []
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in (".jsonl", ".json"):
            try:
                s = sources.load_file(f, explicit=False)
            except compare.CompareError:
                continue  # not a result file; a baseline directory may hold a README or notes
            if s is not None:
                out.append(s)
    return out


def update(run_path: str | Path, into: str | Path, allow_incomplete: bool = False) -> tuple[Path, list[Path]]:
    """Copy a run (or pytest-benchmark file) into the baseline directory `into`.

    Returns (the new baseline file, the older baselines it replaced). Refuses an interrupted or
    unfinished run unless `allow_incomplete`, and a run with no `ok` case.
    """
    source = _single(run_path)
    into = Path(into)
    if source.kind == sources.RBENCH:
        if source.status != "complete" and not allow_incomplete:
            raise BaselineError(f"{run_path}: the run is {source.status}; a baseline should be a complete run "
                                "(finish it with rbench run --resume, or pass --allow-incomplete)")
        if not any(i.status == "ok" for i in source.items.values()):
            raise BaselineError(f"{run_path}: no case ended ok; nothing to compare against")
    elif not source.items:
        raise BaselineError(f"{run_path}: a pytest-benchmark file with no benchmarks; nothing to compare against "
                            "(was pytest run with --benchmark-json and benchmarks selected?)")
    try:
        data = Path(run_path).read_bytes()
    except OSError as e:
        raise BaselineError(f"{run_path}: cannot read: {e.strerror or e}") from None
    provenance = {"time": results.now(), "source": str(Path(run_path).resolve()),
                  "sha256": hashlib.sha256(data).hexdigest(), "by": _user(), "host": socket.gethostname()}
    if source.kind == sources.RBENCH:
        text = data if data.endswith(b"\n") else data + b"\n"
        text += (json.dumps({"type": "baseline", **provenance}) + "\n").encode()
    else:
        doc = json.loads(data)
        doc["rbench_baseline"] = provenance
        text = (json.dumps(doc, indent=2) + "\n").encode()
    try:
        into.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BaselineError(f"{into}: cannot create the baseline directory: {results.os_cause(e)}") from None
    dest = into / filename(source)
    replaced = [s.path for s in _sources_below(into) if _same_slot(source, s)]
    _write_atomically(dest, text)  # the old baseline stays whole until the new one is
    for old in replaced:
        if old.resolve() != dest.resolve():
            try:
                old.unlink()
            except OSError as e:
                raise BaselineError(f"{old}: cannot remove the replaced baseline: {e.strerror or e} (the new "
                                    f"one is {dest})") from None
    return dest, replaced


def _write_atomically(dest: Path, data: bytes) -> None:
    try:
        files.replace(dest, data)
    except OSError as e:
        raise BaselineError(f"{dest}: cannot write: {results.os_cause(e)}; the previous baseline, if any, is "
                            "unchanged") from None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class Entry:
    """One baseline file, for `list` and `find`."""

    directory: Path
    source: sources.ResultFile
    promoted: str


def _promoted(source: sources.ResultFile) -> str:
    if source.kind == sources.PYTEST_BENCHMARK:
        try:
            return (json.loads(source.path.read_text()).get("rbench_baseline") or {}).get("time", "")
        except (OSError, ValueError):
            return ""
    try:
        run = results.read_run(source.path)
    except results.RunFileError:
        return ""
    times = [e.get("time", "") for e in run.events if e.get("type") == "baseline"]
    return times[-1] if times else ""


def entries(root: str | Path = DEFAULT_ROOT) -> list[Entry]:
    root = Path(root)
    return [Entry(s.path.parent, s, _promoted(s)) for s in _sources_below(root)]


def find(run_path: str | Path, root: str | Path = DEFAULT_ROOT) -> list[Entry]:
    """The baselines under `root` that the run can be compared with: same suite (or benchmark file),
    same machine and software. Newest first. Raises BaselineError saying what the nearest ones differ in."""
    source = _single(run_path)
    all_entries = entries(root)
    if not all_entries:
        raise BaselineError(f"{root}: no baselines here; create one with: rbench baseline update {run_path} "
                            f"--into {Path(root) / '<name>'}")

    def same_set(e: Entry) -> bool:
        s = e.source
        if s.kind != source.kind:
            return False
        if s.kind == sources.PYTEST_BENCHMARK:
            return bool(set(s.items) & set(source.items))
        return s.suite == source.suite

    same_suite = [e for e in all_entries if same_set(e)]
    matches = [e for e in same_suite if not compare.differences(e.source.identity, source.identity)]
    if matches:
        return sorted(matches, key=lambda e: (e.promoted or e.source.started), reverse=True)
    what = f"suite {source.suite!r}" if source.kind == sources.RBENCH else "these benchmarks"
    if not same_suite:
        raise BaselineError(f"no baseline of {what} under {root} (there are {len(all_entries)} other baseline "
                            f"files); create one with: rbench baseline update {run_path} --into {Path(root) / '<name>'}")
    near = []
    for e in same_suite:
        diffs = compare.differences(e.source.identity, source.identity)
        near.append(f"{e.source.path}: " + "; ".join(f"{k} {b!r} (baseline) vs {n!r} (run)" for k, (b, n) in diffs.items()))
    raise BaselineError(f"no baseline of {what} from this machine and software under {root}; nearest: "
                        + " | ".join(near))


def latest(directory: str | Path, suite: str | None = None) -> Path:
    """The most recently started run file below `directory` (optionally of one suite)."""
    directory = Path(directory)
    try:
        files = results.run_files(directory)
    except results.RunFileError as e:
        raise BaselineError(str(e)) from None
    best: tuple[str, float, Path] | None = None
    for f in files:
        try:
            run = results.read_run(f)
        except results.RunFileError:
            continue
        if suite and run.suite.get("name") != suite:
            continue
        rank = (str(run.header.get("started", "")), f.stat().st_mtime, f)
        if best is None or rank > best:
            best = rank
    if best is None:
        raise BaselineError(f"{directory}: no run files" + (f" of suite {suite!r}" if suite else ""))
    return best[2]
