"""`rbench compare BASE NEW`: match the cases of two result sets and give each a verdict.

BASE and NEW are rbench run files, pytest-benchmark JSON files, or directories holding either (a
baseline set). Cases are matched by their key (rbench: model, batch, image size, precision, backend,
mode, memory format; pytest-benchmark: the benchmark's fullname and params). A case measured on
different hardware or software is not comparable: unless `across_machines`, a mismatch raises
`MachineMismatch` naming what differs. Timing verdicts come from `rbench.analysis.stats` (the rule is there);
status changes (ok -> oom, ok -> incorrect, ...) are regressions of their own.

This module reads results only: no torch, so it runs on any laptop.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbench import results
from rbench.analysis import stats

RBENCH = "rbench"
PYTEST_BENCHMARK = "pytest-benchmark"
# Software whose version changes performance; a baseline from other versions is another machine.
SOFTWARE_FIELDS = ("torch", "cuda", "hip", "cudnn", "triton")
FAIL_ON = ("slower", "status", "any")
# Verdicts beyond the timing ones of rbench.analysis.stats.
STATUS_VERDICTS = ("regressed", "fixed", "status_changed", "not_timed", "new", "missing")
ORDER = ("regressed", "slower", "faster", "fixed", "inconclusive", "status_changed", "new", "missing",
         "unchanged", "not_timed")
MARK = {"regressed": "❌", "slower": "❌", "faster": "🚀", "fixed": "✅", "inconclusive": "❔",
        "status_changed": "⚠️", "new": "🆕", "missing": "➖", "unchanged": "", "not_timed": ""}


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
class Source:
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

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


# Loading.

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
    return ident


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


def case_label(record: Mapping[str, Any]) -> str:
    if record.get("case_id"):
        return str(record["case_id"])
    r = record
    return (f"{r.get('model')}/bs{r.get('batch_size')}/{r.get('image_size')}px/{r.get('precision')}/"
            f"{r.get('backend')}/{r.get('mode')}/{r.get('memory_format')}")


def from_run(run: results.Run) -> Source:
    suite = run.suite
    threshold = suite.get("threshold")
    src = Source(path=run.path, kind=RBENCH, identity=run_identity(run.env), machine=describe_env(run.env),
                 suite=suite.get("name"), threshold=float(threshold) if threshold else None,
                 started=str(run.header.get("started", "")), status=run.status)
    for r in run.latest_records():
        samples = [float(x) for x in r.get("samples_ms") or [] if isinstance(x, (int, float))]
        src.items[results.case_key(r)] = Item(
            key=results.case_key(r), label=case_label(r), status=r.get("status", "?"), reason=r.get("reason") or "",
            samples_ms=samples or None, throughput_ips=r.get("throughput_ips"),
            flags=tuple(sorted(k for k, v in (r.get("flags") or {}).items() if v is True)))
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


def from_pytest_benchmark(path: Path, data: Mapping[str, Any]) -> Source:
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
    src = Source(path=path, kind=PYTEST_BENCHMARK, identity=benchmark_identity(info), machine=machine,
                 started=str(data.get("datetime", "")))
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


def _load_file(path: Path, explicit: bool) -> Source | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CompareError(f"{path}: cannot read: {e}") from None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if is_pytest_benchmark(whole):
        return from_pytest_benchmark(path, whole)
    if path.suffix == ".json" and not explicit:
        return None  # some other JSON in a results directory (e.g. a saved compare output)
    try:
        return from_run(results.read_run(path))
    except results.RunFileError as e:
        raise CompareError(f"{e}; expected an rbench run file (.jsonl) or pytest-benchmark JSON "
                           "(pytest --benchmark-json)") from None


def load(path: str | Path) -> list[Source]:
    """The sources in a file, or in every *.jsonl / pytest-benchmark *.json below a directory."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".jsonl", ".json"))
        sources = [s for s in (_load_file(f, explicit=False) for f in files) if s is not None]
        if not sources:
            raise CompareError(f"{p}: no rbench run files (*.jsonl) or pytest-benchmark JSON below this directory")
        return sources
    if p.is_file():
        return [_load_file(p, explicit=True)]  # type: ignore[list-item]
    raise CompareError(f"{p}: no such file or directory")


# Comparing.

def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Identity fields present in both with different values: {field: (a's, b's)}."""
    return {k: (a[k], b[k]) for k in a if k in b and a[k] != b[k]}


@dataclass
class Row:
    key: tuple
    label: str
    verdict: str
    base: Item | None
    new: Item | None
    threshold: float
    estimate: stats.Estimate | None = None
    reason: str = ""

    @property
    def regression(self) -> str | None:
        """"slower", "status", or None."""
        return {"slower": "slower", "regressed": "status"}.get(self.verdict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"case": self.label, "verdict": self.verdict, "regression": self.regression,
                             "threshold": self.threshold, "reason": self.reason}
        if self.key and self.key[0] != PYTEST_BENCHMARK:
            d.update(dict(zip(results.CASE_FIELDS, self.key)))
        for side, item in (("base", self.base), ("new", self.new)):
            d[side] = None if item is None else {
                "status": item.status, "reason": item.reason, "median_ms": item.median_ms, "n": item.n,
                "throughput_ips": item.throughput_ips, "flags": list(item.flags)}
        e = self.estimate
        d["ratio"] = e.ratio if e else None
        d["ci_low"] = e.low if e else None
        d["ci_high"] = e.high if e else None
        d["method"] = e.method if e else None
        return d


@dataclass
class Comparison:
    base_paths: list[str]
    new_paths: list[str]
    base_machines: list[str]
    new_machines: list[str]
    rows: list[Row]
    notes: list[str]
    across_machines: bool
    threshold_source: str

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)

    def regressions(self, fail_on: str = "any") -> list[Row]:
        kinds = {"slower": {"slower"}, "status": {"status"}, "any": {"slower", "status"}}[fail_on]
        return [r for r in self.rows if r.regression in kinds]

    def summary(self) -> str:
        parts = []
        for v in ORDER:
            n = self.count(v)
            if n:
                parts.append(f"{n} {v.replace('_', ' ')}")
        return ", ".join(parts) or "no cases"

    def to_dict(self, fail_on: str = "any") -> dict[str, Any]:
        return {
            "base": {"paths": self.base_paths, "machines": self.base_machines},
            "new": {"paths": self.new_paths, "machines": self.new_machines},
            "rule": stats.rule_text(), "confidence": stats.CONFIDENCE, "n_boot": stats.N_BOOT,
            "seed": stats.SEED, "threshold_source": self.threshold_source, "across_machines": self.across_machines,
            "fail_on": fail_on, "regressed": bool(self.regressions(fail_on)),
            "counts": {v: self.count(v) for v in ORDER}, "notes": self.notes,
            "cases": [r.to_dict() for r in self.rows],
        }


def _pick(items: Iterable[tuple[Source, Item]], suites: set[str | None],
          identity: Mapping[str, Any] | None = None) -> tuple[Source, Item]:
    """Several sources measured the case: prefer the closest machine (with --across-machines), then the
    same suite as NEW, then the most recent run."""
    def rank(si: tuple[Source, Item]) -> tuple:
        closeness = -len(differences(si[0].identity, identity)) if identity is not None else 0
        return closeness, si[0].suite in suites, si[0].started, str(si[0].path)

    return max(items, key=rank)


def _threshold(explicit: float | None, new_src: Source | None, base_src: Source | None) -> float:
    if explicit is not None:
        return explicit
    for src in (new_src, base_src):
        if src is not None and src.threshold:
            return src.threshold
    return stats.DEFAULT_THRESHOLD


def _mismatch_message(diffs: dict[str, set[tuple[Any, Any]]], base: Sequence[Source], new: Sequence[Source]) -> str:
    parts = []
    for k, pairs in sorted(diffs.items()):
        for b, n in sorted(pairs, key=str):
            parts.append(f"{k}: {b!r} (base) vs {n!r} (new)")
    return ("base and new were measured on different machines or software, so their timings are not "
            f"comparable: {'; '.join(parts)}. Base: {', '.join(str(s.path) for s in base)}; new: "
            f"{', '.join(str(s.path) for s in new)}. Compare anyway with --across-machines.")


def compare(base: Sequence[Source], new: Sequence[Source], threshold: float | None = None,
            across_machines: bool = False) -> Comparison:
    """Match NEW's cases to BASE's and judge each. Raises MachineMismatch or CompareError (see module doc)."""
    notes: list[str] = []
    candidates: dict[Source, list[Source]] = {}
    mismatches: dict[str, set[tuple[Any, Any]]] = {}
    for ns in new:
        same_kind = [bs for bs in base if bs.kind == ns.kind]
        same = [bs for bs in same_kind if not differences(bs.identity, ns.identity)]
        if across_machines:
            candidates[ns] = same_kind
            for bs in same_kind:
                for k, pair in differences(bs.identity, ns.identity).items():
                    mismatches.setdefault(k, set()).add(pair)
        elif same:
            candidates[ns] = same
            others = len(same_kind) - len(same)
            if others:
                notes.append(f"{others} base file(s) from other machines or software ignored for {ns.path}")
        else:
            overlapping = [bs for bs in same_kind if set(bs.items) & set(ns.items)] or same_kind
            for bs in overlapping:
                for k, pair in differences(bs.identity, ns.identity).items():
                    mismatches.setdefault(k, set()).add(pair)
            candidates[ns] = []
    if mismatches and not across_machines:
        raise MachineMismatch(_mismatch_message(mismatches, base, new))
    if mismatches:
        notes.append("compared across machines: " + "; ".join(
            f"{k}: {b!r} (base) vs {n!r} (new)" for k, pairs in sorted(mismatches.items()) for b, n in sorted(pairs, key=str)))
    for src in new:
        if src.kind == RBENCH and src.status != "complete":
            notes.append(f"new run {src.path} is {src.status}: its missing cases are listed as missing")

    new_by_key: dict[tuple, list[tuple[Source, Item]]] = {}
    for ns in new:
        for key, item in ns.items.items():
            new_by_key.setdefault(key, []).append((ns, item))
    new_suites = {ns.suite for ns in new}
    rows: list[Row] = []
    seen_base: set[tuple] = set()
    for key, options in new_by_key.items():
        ns, ni = _pick(options, new_suites)
        base_options = [(bs, bs.items[key]) for bs in candidates[ns] if key in bs.items]
        if not base_options:
            rows.append(Row(key, ni.label, "new", None, ni, _threshold(threshold, ns, None)))
            continue
        bs, bi = _pick(base_options, new_suites, ns.identity)
        seen_base.add(key)
        rows.append(_judge(key, bi, ni, _threshold(threshold, ns, bs)))
    # Missing: cases of the base files that correspond to NEW's suites (or all, for other kinds).
    relevant = {bs for ns in new for bs in candidates[ns]}
    suites_in_base = {bs.suite for bs in relevant}
    for bs in sorted(relevant, key=lambda s: str(s.path)):
        if bs.kind == RBENCH and new_suites & suites_in_base and bs.suite not in new_suites:
            continue
        for key, bi in bs.items.items():
            if key not in new_by_key and key not in seen_base:
                seen_base.add(key)
                rows.append(Row(key, bi.label, "missing", bi, None, _threshold(threshold, None, bs)))
    if not any(r.base is not None and r.new is not None for r in rows):
        raise CompareError(f"no case of new ({', '.join(str(s.path) for s in new)}) is in base "
                           f"({', '.join(str(s.path) for s in base)}): {len(rows)} cases, none in common")
    rows.sort(key=lambda r: (ORDER.index(r.verdict), r.label))
    source = "--threshold" if threshold is not None else (
        "suite" if any(s.threshold for s in list(new) + list(base)) else "default")
    return Comparison(
        base_paths=[str(s.path) for s in base], new_paths=[str(s.path) for s in new],
        base_machines=sorted({s.machine for s in relevant} or {s.machine for s in base}),
        new_machines=sorted({s.machine for s in new}), rows=rows, notes=notes,
        across_machines=across_machines, threshold_source=source)


def _judge(key: tuple, base: Item, new: Item, threshold: float) -> Row:
    def row(verdict: str, reason: str = "", estimate: stats.Estimate | None = None) -> Row:
        return Row(key, new.label, verdict, base, new, threshold, estimate, reason)

    if new.status == "skipped":
        return row("missing", "skipped in new: " + (new.reason or "not selected"))
    if base.status == "skipped":
        return row("new", "skipped in base: " + (base.reason or "not selected"))
    if base.status == "ok" and new.status != "ok":
        return row("regressed", f"ok → {new.status}" + (f": {new.reason}" if new.reason else ""))
    if base.status != "ok" and new.status == "ok":
        return row("fixed", f"{base.status} → ok")
    if base.status != "ok":
        if base.status == new.status:
            return row("not_timed", f"{new.status} in both")
        return row("status_changed", f"{base.status} → {new.status}" + (f": {new.reason}" if new.reason else ""))
    v = stats.judge(base.samples_ms, new.samples_ms, threshold, base.summary, new.summary)
    # Flags do not change the verdict (a throttled GPU's time is still its time) but a reader must
    # know that a "slower" may be another process or a hot GPU rather than the code.
    flagged = [f"{side} ⚠ {', '.join(item.flags)}" for side, item in (("base", base), ("new", new)) if item.flags]
    return row(v.verdict, "; ".join([v.reason] * bool(v.reason) + flagged), v.estimate)


def compare_paths(base: Sequence[str | Path], new: Sequence[str | Path], threshold: float | None = None,
                  across_machines: bool = False) -> Comparison:
    base_sources = [s for p in base for s in load(p)]
    new_sources = [s for p in new for s in load(p)]
    return compare(base_sources, new_sources, threshold, across_machines)


def parse_threshold(text: str) -> float:
    """`5%`, `5 %` or `0.05` -> 0.05; anything outside (0, 1) is an error."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise CompareError(f"--threshold: cannot read {text!r}; write a percentage (5%) or a fraction (0.05)") from None
    if not 0 < value < 1:
        raise CompareError(f"--threshold: {text!r} is not between 0 and 100 %; write e.g. 5% or 0.05")
    return value


# Rendering.

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{(x - 1) * 100:+.1f}%"


def _ms(item: Item | None, with_n: bool = True) -> str:
    if item is None:
        return "-"
    if item.status != "ok":
        return item.status
    m = item.median_ms
    if m is None:
        return "-"
    text = f"{m:.3g}" if m < 1000 else f"{m:,.0f}"
    return f"{text} ms (n={item.n})" if with_n else text


def _ci(row: Row) -> str:
    e = row.estimate
    return "-" if e is None else f"{_pct(e.low)} … {_pct(e.high)}"


def _ips(row: Row) -> str:
    b = row.base.throughput_ips if row.base and row.base.status == "ok" else None
    n = row.new.throughput_ips if row.new and row.new.status == "ok" else None
    if b is None and n is None:
        return "-"
    f = lambda x: "-" if x is None else f"{x:,.1f}"  # noqa: E731
    return f"{f(b)} → {f(n)}"


def _detail(row: Row) -> str:
    text = row.reason
    if row.estimate and row.estimate.method != "bootstrap":
        text = (text + "; " if text else "") + f"{row.estimate.method} (no raw samples)"
    return text


def headline(cmp: Comparison, fail_on: str = "any") -> str:
    regs = cmp.regressions(fail_on)
    if regs:
        slower = sum(r.regression == "slower" for r in regs)
        status = sum(r.regression == "status" for r in regs)
        what = ", ".join(p for p in (f"{slower} slower" if slower else "", f"{status} status" if status else "") if p)
        return f"{len(regs)} regression{'s' if len(regs) != 1 else ''} ({what})"
    return "no regressions"


STYLE = {"regressed": "bold red", "slower": "bold red", "faster": "green", "fixed": "green",
         "inconclusive": "yellow", "status_changed": "yellow", "new": "cyan", "missing": "magenta",
         "unchanged": "dim", "not_timed": "dim"}


def rich_table(cmp: Comparison) -> Any:
    """The comparison as a rich Table (for a terminal)."""
    from rich.table import Table

    table = Table(header_style="bold", title="rbench compare: per-iteration time, new vs base")
    numeric = ("base ms", "new ms", "n", "time Δ", "95% CI")
    for name in ("case", *numeric, "img/s base → new", "verdict", "detail"):
        table.add_column(name, justify="right" if name in numeric else "left", overflow="fold",
                         no_wrap=name not in ("detail", "case"), min_width=24 if name == "detail" else None)
    for r in cmp.rows:
        style = STYLE.get(r.verdict, "")
        n = f"{r.base.n if r.base else '-'}/{r.new.n if r.new else '-'}"
        table.add_row(r.label, _ms(r.base, False), _ms(r.new, False), n, _pct(r.estimate.ratio if r.estimate else None),
                      _ci(r), _ips(r), f"[{style}]{r.verdict.replace('_', ' ')}[/{style}]", _detail(r))
    return table


def text_footer(cmp: Comparison, fail_on: str = "any") -> str:
    lines = [f"base: {', '.join(cmp.base_paths)}  [{'; '.join(cmp.base_machines)}]",
             f"new:  {', '.join(cmp.new_paths)}  [{'; '.join(cmp.new_machines)}]",
             f"rule: {stats.rule_text(_common_threshold(cmp))}"]
    lines += [f"note: {n}" for n in cmp.notes]
    lines.append(f"{headline(cmp, fail_on)} (fail on: {fail_on}); {cmp.summary()}")
    return "\n".join(lines)


def _common_threshold(cmp: Comparison) -> float | None:
    values = {r.threshold for r in cmp.rows}
    return values.pop() if len(values) == 1 else None


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(cmp: Comparison, fail_on: str = "any") -> str:
    """A pull-request comment: verdict first, the cases that need attention, the rest folded away."""
    regs = cmp.regressions(fail_on)
    icon = "❌" if regs else "✅"
    out = [f"### {icon} rbench compare: {headline(cmp, fail_on)}", "",
           f"{cmp.summary()}.", "",
           f"- **base**: {', '.join(f'`{p}`' for p in cmp.base_paths)} — {'; '.join(cmp.base_machines)}",
           f"- **new**: {', '.join(f'`{p}`' for p in cmp.new_paths)} — {'; '.join(cmp.new_machines)}"]
    out += [f"- **note**: {_md_escape(n)}" for n in cmp.notes]
    header = ["| case | base median | new median | time Δ | 95% CI | img/s base → new | verdict |",
              "|---|---:|---:|---:|---:|---:|---|"]

    def line(r: Row) -> str:
        verdict = f"{MARK.get(r.verdict, '')} {r.verdict.replace('_', ' ')}".strip()
        if _detail(r):
            verdict += f" — {_md_escape(_detail(r))}"
        return (f"| `{_md_escape(r.label)}` | {_ms(r.base)} | {_ms(r.new)} | "
                f"{_pct(r.estimate.ratio if r.estimate else None)} | {_ci(r)} | {_ips(r)} | {verdict} |")

    quiet = {"unchanged", "not_timed"}
    loud = [r for r in cmp.rows if r.verdict not in quiet]
    calm = [r for r in cmp.rows if r.verdict in quiet]
    if loud:
        out += ["", *header, *(line(r) for r in loud)]
    if calm:
        out += ["", f"<details><summary>{len(calm)} unchanged or not timed</summary>", "", *header,
                *(line(r) for r in calm), "", "</details>"]
    out += ["", f"<sub>Rule: {stats.rule_text(_common_threshold(cmp))}. Time Δ > 0 means slower.</sub>", ""]
    return "\n".join(out)


def to_json(cmp: Comparison, fail_on: str = "any") -> str:
    return json.dumps(cmp.to_dict(fail_on), indent=2, allow_nan=False, default=str)
