"""Loading results into comparable items: rbench run files and pytest-benchmark JSON, and their machine identity.

Each input file becomes a `ResultFile`: its cases as `Item`s keyed like `rbench.spec.record_key`
(pytest-benchmark: the benchmark's fullname and params), and the identity of the machine and
software that measured them, which `compare` and `baseline` match on.
"""

from __future__ import annotations

import json
import statistics
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbench import results
from rbench.spec import record_id

RBENCH = "rbench"
PYTEST_BENCHMARK = "pytest-benchmark"
# Software whose version changes performance; a baseline from other versions is another machine.
SOFTWARE_FIELDS = ("torch", "cuda", "hip", "cudnn", "triton")


class CompareError(ValueError):
    """Input that cannot be compared (missing file, wrong format, nothing in common): exit status 2."""


class MachineMismatch(CompareError):
    """BASE and NEW were measured on different hardware or software."""


@dataclass
class Item:
    """One measured case from one source."""

    key: tuple
    label: str
    status: str
    reason: str = ""
    samples_ms: list[float] | None = None
    summary: dict[str, Any] | None = None  # pytest-benchmark stats in ms (median, iqr, stddev, rounds)
    throughput_ips: float | None = None
    flags: tuple[str, ...] = ()  # measurement flags that were set (throttled, other_processes, ...)
    peak_memory_bytes: float | None = None  # the record's peak device memory (CPU: peak RSS)
    power: dict[str, Any] | None = None  # the record's `power` (energy, J/image, error bound) when measured
    metric: dict[str, Any] | None = None  # an MLPerf scenario's or max-batch search's figure: value, unit, better, valid

    @property
    def median_ms(self) -> float | None:
        if self.samples_ms:
            return statistics.median(self.samples_ms)
        return self.summary.get("median") if self.summary else None

    @property
    def n(self) -> int:
        if self.samples_ms:
            return len(self.samples_ms)
        return int(self.summary.get("rounds", 0)) if self.summary else 0


@dataclass
class ResultFile:
    """One input file: what it measured, and on which machine and software."""

    path: Path
    kind: str
    identity: dict[str, Any]
    machine: str  # a one-line description for people
    suite: str | None = None
    threshold: float | None = None
    started: str = ""
    status: str = "complete"
    items: dict[tuple, Item] = field(default_factory=dict)
    commit: str | None = None  # the git SHA the results were measured at, where recorded

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def run_identity(env: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a run's environment that must match for its timings to be comparable.

    Device kind and name, the performance-relevant software versions, and the GPU driver where the
    environment records one (`env.driver.version`, `env.device.driver[_version]` or `env.gpus[0]`). A field absent from an
    environment is not checked; a field present with value null is (null != "12.4").
    """
    device = env.get("device") or {}
    software = env.get("software") or {}
    ident: dict[str, Any] = {}
    for k in ("kind", "name"):
        if k in device:
            ident[f"device.{k}"] = device[k]
    for k in SOFTWARE_FIELDS:
        if k in software:
            ident[f"software.{k}"] = software[k]
    driver = _driver(env)
    if driver is not None:
        ident["driver"] = driver
    if ranks_identity(env.get("ranks")):
        ident["ranks"] = ranks_identity(env.get("ranks"))
    return ident


def ranks_identity(ranks: Any) -> str | None:
    """Every rank's device in a run with multi-process cases (`env.ranks`), e.g. `4 x NVIDIA H100 (driver 550.54)
    on 1 host`: a 4-GPU run then matches only a run on the same GPUs, driver and number of hosts."""
    entries = [r for r in ranks if isinstance(r, dict) and isinstance(r.get("device"), dict)] if isinstance(
        ranks, list) else []
    counts: dict[str, int] = {}
    for r in entries:
        version = r["driver"].get("version") if isinstance(r.get("driver"), dict) else r.get("driver")
        name = f"{r['device'].get('name', '?')}" + (f" (driver {version})" if version else "")
        counts[name] = counts.get(name, 0) + 1
    hosts = len({r.get("host") for r in entries})
    return (", ".join(f"{n} x {name}" for name, n in counts.items()) + f" on {hosts} host{'s' * (hosts != 1)}"
            if entries else None)


def _driver(env: Mapping[str, Any]) -> Any:
    driver = env.get("driver")
    if isinstance(driver, dict) and driver.get("version") and not driver.get("unavailable"):
        return driver["version"]
    if isinstance(driver, str) and driver:
        return driver
    device = env.get("device") or {}
    for k in ("driver", "driver_version"):
        if device.get(k):
            return device[k]
    gpus = env.get("gpus")
    if isinstance(gpus, list) and gpus and isinstance(gpus[0], dict):
        for k in ("driver", "driver_version"):
            if gpus[0].get(k):
                return gpus[0][k]
    return None


def describe_env(env: Mapping[str, Any]) -> str:
    """A run's machine and software in one line, for people."""
    device = env.get("device") or {}
    sw = env.get("software") or {}
    parts = [f"{device.get('name', '?')} ({device.get('kind', '?')})"]
    parts += [f"{k} {sw[k]}" for k in SOFTWARE_FIELDS if sw.get(k)]
    if _driver(env):
        parts.append(f"driver {_driver(env)}")
    git = env.get("git") or {}
    if git.get("sha"):
        parts.append(f"git {git['sha'][:10]}{'+dirty' if git.get('dirty') else ''}")
    return ", ".join(parts)


def from_run(run: results.Run) -> ResultFile:
    suite = run.suite
    threshold = suite.get("threshold")
    src = ResultFile(path=run.path, kind=RBENCH, identity=run_identity(run.env), machine=describe_env(run.env),
                 suite=suite.get("name"), threshold=float(threshold) if threshold else None,
                 started=str(run.header.get("started", "")), status=run.status,
                 commit=(run.env.get("git") or {}).get("sha"))
    for r in run.latest_records():
        samples = [float(x) for x in r.get("samples_ms") or [] if isinstance(x, (int, float))]
        src.items[results.case_key(r)] = Item(
            key=results.case_key(r), label=record_id(r), status=r.get("status", "?"), reason=r.get("reason") or "",
            samples_ms=samples or None, throughput_ips=r.get("throughput_ips"),
            flags=tuple(sorted(k for k, v in (r.get("flags") or {}).items() if v is True)),
            peak_memory_bytes=r.get("peak_memory_bytes"),
            metric={k: r.get(k) for k in ("metric_value", "metric_unit", "better", "valid")} if r.get("better") else None,
            power=r["power"] if isinstance(r.get("power"), dict) and not r["power"].get("unavailable") else None)
    return src


def is_pytest_benchmark(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("benchmarks"), list) and "machine_info" in data


def benchmark_identity(machine_info: Mapping[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's machine_info: CPU, architecture and Python, plus an rbench environment if a
    `pytest_benchmark_update_machine_info` hook stored one under `rbench_env` (see docs/tracking.md)."""
    cpu = machine_info.get("cpu") or {}
    ident = {"cpu": cpu.get("brand_raw") if isinstance(cpu, dict) else cpu,
             "machine": machine_info.get("machine"), "python": machine_info.get("python_version")}
    env = machine_info.get("rbench_env")
    if isinstance(env, dict):
        ident.update(run_identity(env))
    return ident


def from_pytest_benchmark(path: Path, data: Mapping[str, Any]) -> ResultFile:
    """A pytest-benchmark JSON file (`pytest --benchmark-json`). Times there are seconds; here ms.

    Raw per-round times are present only with `--benchmark-save-data`; otherwise the verdict falls back
    to the summary statistics (see `rbench.analysis.stats.summary_ratio`).
    """
    info = data.get("machine_info") or {}
    env = info.get("rbench_env") if isinstance(info.get("rbench_env"), dict) else None
    machine = describe_env(env) if env else (
        f"{(info.get('cpu') or {}).get('brand_raw', '?') if isinstance(info.get('cpu'), dict) else '?'}, "
        f"Python {info.get('python_version', '?')}")
    commit = data.get("commit_info") or {}
    if commit.get("id"):
        machine += f", git {str(commit['id'])[:10]}{'+dirty' if commit.get('dirty') else ''}"
    src = ResultFile(path=path, kind=PYTEST_BENCHMARK, identity=benchmark_identity(info), machine=machine,
                 started=str(data.get("datetime", "")), commit=commit.get("id"))
    for b in data["benchmarks"]:
        if not isinstance(b, dict) or "stats" not in b:
            continue
        name = b.get("fullname") or b.get("name") or "?"
        key = (PYTEST_BENCHMARK, name, json.dumps(b.get("params"), sort_keys=True, default=str))
        s = b["stats"]
        raw = s.get("data")
        summary = {k: s[k] * 1e3 for k in ("median", "iqr", "stddev", "mean", "min", "max") if isinstance(s.get(k), (int, float))}
        summary["rounds"] = s.get("rounds", len(raw) if raw else 0)
        src.items[key] = Item(key=key, label=name, status="ok",
                              samples_ms=[x * 1e3 for x in raw] if raw else None, summary=summary)
    return src


def load_file(path: Path, explicit: bool) -> ResultFile | None:
    try:
        whole = json.loads(path.read_bytes())
    except OSError as e:
        raise CompareError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError:  # not one JSON document (a run file is JSON Lines), or not UTF-8
        whole = None
    if is_pytest_benchmark(whole):
        return from_pytest_benchmark(path, whole)
    if path.suffix == ".json" and not explicit:
        return None  # some other JSON in a results directory (e.g. a saved compare output)
    try:
        return from_run(results.read_run(path))
    except results.EmptyRunFile as e:
        if explicit:
            raise CompareError(str(e)) from None
        warnings.warn(f"{e}; skipped", results.TornLineWarning, stacklevel=2)
        return None
    except results.RunFileError as e:
        raise CompareError(f"{e}; expected an rbench run file (.jsonl) or pytest-benchmark JSON "
                           "(pytest --benchmark-json)") from None


def load(path: str | Path) -> list[ResultFile]:
    """The sources in a file, or in every *.jsonl / pytest-benchmark *.json below a directory."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".jsonl", ".json"))
        sources = [s for s in (load_file(f, explicit=False) for f in files) if s is not None]
        if not sources:
            raise CompareError(f"{p}: no rbench run files (*.jsonl) or pytest-benchmark JSON below this directory")
        return sources
    if p.is_file():
        return [load_file(p, explicit=True)]  # type: ignore[list-item]
    raise CompareError(f"{p}: no such file or directory")
