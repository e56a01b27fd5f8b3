"""Matching the cases of two result sets and giving each a verdict.

BASE and NEW are `rbench.analysis.sources` files. Cases are matched by their key. A case measured on
different hardware or software is not comparable: unless `across_machines`, a mismatch raises
`MachineMismatch` naming what differs. Timing verdicts come from `rbench.analysis.stats` (the rule is
there); status changes (ok -> oom, ok -> incorrect, ...) are regressions of their own. Beside its
timing verdict a case ok on both sides gets a peak-memory verdict and, where both sides measured
energy, a J/image verdict (rules in `rbench.analysis.stats`); `more_memory` and `more_energy` are
regressions that `fail_on` may name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbench import results
from rbench.analysis import sources, stats
from rbench.analysis.sources import PYTEST_BENCHMARK, RBENCH, CompareError, Item, MachineMismatch, ResultFile

ORDER = ("regressed", "slower", "faster", "fixed", "inconclusive", "status_changed", "new", "missing",
         "unchanged", "not_timed")
# What `--fail-on` accepts: a kind of regression, `any` (slower or status, the default, as before
# memory and energy were judged) or `all` (every kind).
FAIL_ON = ("slower", "status", "memory", "energy", "any", "all")
_KINDS = {"any": {"slower", "status"}, "all": {"slower", "status", "memory", "energy"}}

__all__ = ["CompareError", "MachineMismatch", "Comparison", "Row", "compare", "compare_paths", "parse_threshold"]


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
    memory: stats.ResourceVerdict | None = None
    energy: stats.ResourceVerdict | None = None

    @property
    def regression(self) -> str | None:
        """The timing or status regression: "slower", "status", or None."""
        return {"slower": "slower", "regressed": "status"}.get(self.verdict)

    @property
    def regression_kinds(self) -> tuple[str, ...]:
        """Every kind of regression of this case: "slower" or "status", "memory", "energy"."""
        kinds = (self.regression,) if self.regression else ()
        if self.memory and self.memory.verdict == "more_memory":
            kinds += ("memory",)
        if self.energy and self.energy.verdict == "more_energy":
            kinds += ("energy",)
        return kinds

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"case": self.label, "verdict": self.verdict, "regression": self.regression,
                             "threshold": self.threshold, "reason": self.reason}
        if self.key and self.key[0] != PYTEST_BENCHMARK:
            d.update(dict(zip(results.CASE_FIELDS, self.key)))
        for side, item in (("base", self.base), ("new", self.new)):
            d[side] = None if item is None else {
                "status": item.status, "reason": item.reason, "median_ms": item.median_ms, "n": item.n,
                "throughput_ips": item.throughput_ips, "flags": list(item.flags), "metric": item.metric}
        e = self.estimate
        d["ratio"] = e.ratio if e else None
        d["ci_low"] = e.low if e else None
        d["ci_high"] = e.high if e else None
        d["method"] = e.method if e else None
        d["memory"] = self.memory.to_dict() if self.memory else None
        d["energy"] = self.energy.to_dict() if self.energy else None
        d["regressions"] = list(self.regression_kinds)
        return d


def fail_kinds(fail_on: str | Collection[str]) -> set[str]:
    """The regression kinds that `fail_on` (one FAIL_ON name, or several) makes an exit status 1."""
    names = [fail_on] if isinstance(fail_on, str) else list(fail_on) or ["any"]
    unknown = [n for n in names if n not in FAIL_ON]
    if unknown:
        raise CompareError(f"--fail-on: unknown {', '.join(map(repr, unknown))}; allowed: {', '.join(FAIL_ON)}")
    return set().union(*(_KINDS.get(n, {n}) for n in names))


def fail_on_text(fail_on: str | Collection[str]) -> str:
    return fail_on if isinstance(fail_on, str) else ",".join(fail_on) or "any"


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
    memory_threshold: float = stats.MEMORY_THRESHOLD
    energy_threshold: float = stats.ENERGY_THRESHOLD

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)

    def regressions(self, fail_on: str | Collection[str] = "any") -> list[Row]:
        kinds = fail_kinds(fail_on)
        return [r for r in self.rows if kinds & set(r.regression_kinds)]

    def resource_count(self, verdict: str) -> int:
        """Cases whose memory or energy verdict is `verdict` (more_memory, more_energy, ...)."""
        return sum(verdict in (r.memory and r.memory.verdict, r.energy and r.energy.verdict) for r in self.rows)

    def summary(self) -> str:
        parts = []
        for v in ORDER:
            n = self.count(v)
            if n:
                parts.append(f"{n} {v.replace('_', ' ')}")
        for v in ("more_memory", "less_memory", "more_energy", "less_energy"):
            n = self.resource_count(v)
            if n:
                parts.append(f"{n} {v.replace('_', ' ')}")
        return ", ".join(parts) or "no cases"

    def to_dict(self, fail_on: str | Collection[str] = "any") -> dict[str, Any]:
        return {
            "base": {"paths": self.base_paths, "machines": self.base_machines},
            "new": {"paths": self.new_paths, "machines": self.new_machines},
            "rule": stats.rule_text(), "confidence": stats.CONFIDENCE, "n_boot": stats.N_BOOT,
            "seed": stats.SEED, "threshold_source": self.threshold_source, "across_machines": self.across_machines,
            "fail_on": fail_on_text(fail_on), "regressed": bool(self.regressions(fail_on)),
            "memory_threshold": self.memory_threshold, "energy_threshold": self.energy_threshold,
            "resource_rule": stats.resource_rule_text(self.memory_threshold, self.energy_threshold),
            "counts": {v: self.count(v) for v in ORDER},
            "resource_counts": {v: self.resource_count(v) for v in (*stats.MEMORY_VERDICTS, *stats.ENERGY_VERDICTS)},
            "notes": self.notes,
            "cases": [r.to_dict() for r in self.rows],
        }


def _pick(items: Iterable[tuple[ResultFile, Item]], suites: set[str | None],
          identity: Mapping[str, Any] | None = None) -> tuple[ResultFile, Item]:
    """Several sources measured the case: prefer the closest machine (with --across-machines), then the
    same suite as NEW, then the most recent run."""
    def rank(si: tuple[ResultFile, Item]) -> tuple:
        closeness = -len(differences(si[0].identity, identity)) if identity is not None else 0
        return closeness, si[0].suite in suites, si[0].started, str(si[0].path)

    return max(items, key=rank)


def _threshold(explicit: float | None, new_src: ResultFile | None, base_src: ResultFile | None) -> float:
    if explicit is not None:
        return explicit
    for src in (new_src, base_src):
        if src is not None and src.threshold:
            return src.threshold
    return stats.DEFAULT_THRESHOLD


def _difference_parts(mismatches: Mapping[str, set[tuple[Any, Any]]]) -> list[str]:
    """`field: base's (base) vs new's (new)` for every identity difference, in a stable order."""
    return [f"{k}: {b!r} (base) vs {n!r} (new)" for k, pairs in sorted(mismatches.items())
            for b, n in sorted(pairs, key=str)]


def _mismatch_message(diffs: dict[str, set[tuple[Any, Any]]], base: Sequence[ResultFile], new: Sequence[ResultFile]) -> str:
    return ("base and new were measured on different machines or software, so their timings are not "
            f"comparable: {'; '.join(_difference_parts(diffs))}. Base: {', '.join(str(s.path) for s in base)}; new: "
            f"{', '.join(str(s.path) for s in new)}. Compare anyway with --across-machines.")


def compare(base: Sequence[ResultFile], new: Sequence[ResultFile], threshold: float | None = None,
            across_machines: bool = False, memory_threshold: float = stats.MEMORY_THRESHOLD,
            energy_threshold: float = stats.ENERGY_THRESHOLD) -> Comparison:
    """Match NEW's cases to BASE's and judge each. Raises MachineMismatch or CompareError (see module doc)."""
    candidates, mismatches, notes = _match_files(base, new, across_machines)
    if mismatches and not across_machines:
        raise MachineMismatch(_mismatch_message(mismatches, base, new))
    if mismatches:
        notes.append("compared across machines: " + "; ".join(_difference_parts(mismatches)))
    notes += [f"new run {src.path} is {src.status}: its missing cases are listed as missing"
              for src in new if src.kind == RBENCH and src.status != "complete"]

    new_by_key = _cases_by_key(new)
    new_suites = {ns.suite for ns in new}
    rows, seen_base = _judge_new_cases(new_by_key, candidates, new_suites, threshold, memory_threshold,
                                       energy_threshold)
    relevant = {bs for ns in new for bs in candidates[ns]}
    rows += _missing_rows(relevant, new_suites, new_by_key, seen_base, threshold)
    if not any(r.base is not None and r.new is not None for r in rows):
        raise CompareError(f"no case of new ({', '.join(str(s.path) for s in new)}) is in base "
                           f"({', '.join(str(s.path) for s in base)}): {len(rows)} cases, none in common")
    rows.sort(key=_rank)
    source = "--threshold" if threshold is not None else (
        "suite" if any(s.threshold for s in list(new) + list(base)) else "default")
    return Comparison(
        base_paths=[str(s.path) for s in base], new_paths=[str(s.path) for s in new],
        base_machines=sorted({s.machine for s in relevant} or {s.machine for s in base}),
        new_machines=sorted({s.machine for s in new}), rows=rows, notes=notes,
        across_machines=across_machines, threshold_source=source, memory_threshold=memory_threshold,
        energy_threshold=energy_threshold)


def _match_files(base: Sequence[ResultFile], new: Sequence[ResultFile], across_machines: bool
                 ) -> tuple[dict[ResultFile, list[ResultFile]], dict[str, set[tuple[Any, Any]]], list[str]]:
    """The BASE files each NEW file is judged against, the identity differences that stand in the way, notes.

    A NEW file is judged against the BASE files of its kind measured on the same machine and software
    (every one of its kind with `across_machines`, the differences then noted). Where none is, the
    differences of the files that share cases with it (else of all of its kind) are the mismatch."""
    notes: list[str] = []
    candidates: dict[ResultFile, list[ResultFile]] = {}
    mismatches: dict[str, set[tuple[Any, Any]]] = {}
    for ns in new:
        same_kind = [bs for bs in base if bs.kind == ns.kind]
        same = [bs for bs in same_kind if not differences(bs.identity, ns.identity)]
        if across_machines:
            candidates[ns] = same_kind
            _add_differences(mismatches, same_kind, ns)
        elif same:
            candidates[ns] = same
            others = len(same_kind) - len(same)
            if others:
                notes.append(f"{others} base file(s) from other machines or software ignored for {ns.path}")
        else:
            _add_differences(mismatches, [bs for bs in same_kind if set(bs.items) & set(ns.items)] or same_kind, ns)
            candidates[ns] = []
    return candidates, mismatches, notes


def _add_differences(mismatches: dict[str, set[tuple[Any, Any]]], base_files: Iterable[ResultFile],
                     ns: ResultFile) -> None:
    for bs in base_files:
        for k, pair in differences(bs.identity, ns.identity).items():
            mismatches.setdefault(k, set()).add(pair)


def _cases_by_key(files: Sequence[ResultFile]) -> dict[tuple, list[tuple[ResultFile, Item]]]:
    """Every case of `files` by its key, with each file that measured it (several may)."""
    by_key: dict[tuple, list[tuple[ResultFile, Item]]] = {}
    for src in files:
        for key, item in src.items.items():
            by_key.setdefault(key, []).append((src, item))
    return by_key


def _judge_new_cases(new_by_key: dict[tuple, list[tuple[ResultFile, Item]]],
                     candidates: dict[ResultFile, list[ResultFile]], new_suites: set[str | None],
                     threshold: float | None, memory_threshold: float, energy_threshold: float
                     ) -> tuple[list[Row], set[tuple]]:
    """A row for each NEW case (`new` where no candidate base file has it), and the keys found in base."""
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
        row = _judge(key, bi, ni, _threshold(threshold, ns, bs))
        if bi.status == ni.status == "ok":
            _judge_resources(row, bi, ni, memory_threshold, energy_threshold)
        rows.append(row)
    return rows, seen_base


def _judge_resources(row: Row, base: Item, new: Item, memory_threshold: float, energy_threshold: float) -> None:
    """The peak-memory and J/image verdicts of a case ok on both sides, beside its timing verdict."""
    row.memory = stats.memory_verdict(base.peak_memory_bytes, new.peak_memory_bytes, memory_threshold)
    short = [side for side, item in (("base", base), ("new", new)) if "window_too_short" in item.flags]
    row.energy = stats.energy_verdict(base.power, new.power, energy_threshold, uncertain=(
        f"timed window too short for the energy figure ({', '.join(short)})" if short else ""))


def _missing_rows(relevant: set[ResultFile], new_suites: set[str | None],
                  new_by_key: Mapping[tuple, Any], seen_base: set[tuple], threshold: float | None) -> list[Row]:
    """Cases of the base files NEW was judged against that NEW lacks: those of NEW's suites (or all, for
    other kinds of file), each once."""
    rows: list[Row] = []
    seen = set(seen_base)
    suites_in_base = {bs.suite for bs in relevant}
    for bs in sorted(relevant, key=lambda s: str(s.path)):
        if bs.kind == RBENCH and new_suites & suites_in_base and bs.suite not in new_suites:
            continue
        for key, bi in bs.items.items():
            if key not in new_by_key and key not in seen:
                seen.add(key)
                rows.append(Row(key, bi.label, "missing", bi, None, _threshold(threshold, None, bs)))
    return rows


def _rank(r: Row) -> tuple:
    """Timing and status regressions first, then memory and energy regressions, then ORDER."""
    rank: float = ORDER.index(r.verdict)
    if rank > ORDER.index("slower") and r.regression_kinds:
        rank = ORDER.index("slower") + 0.5
    return rank, r.label


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
    if base.metric and new.metric:  # an MLPerf scenario or max-batch search: LoadGen's (or the search's) figure
        return _judge_metric(base.metric, new.metric, threshold, row)
    v = stats.judge(base.samples_ms, new.samples_ms, threshold, base.summary, new.summary)
    # Flags do not change the verdict (a throttled GPU's time is still its time) but a reader must
    # know that a "slower" may be another process or a hot GPU rather than the code.
    flagged = [f"{side} ⚠ {', '.join(item.flags)}" for side, item in (("base", base), ("new", new)) if item.flags]
    return row(v.verdict, "; ".join([v.reason] * bool(v.reason) + flagged), v.estimate)


def _judge_metric(base: dict[str, Any], new: dict[str, Any], threshold: float, row: Any) -> Row:
    """One figure per run (QPS, samples/s, a latency percentile, a batch size), no samples: the ratio alone is
    judged against the threshold, as a time (above 1 is slower); VALID -> INVALID is a regression of its own."""
    if base.get("valid") is True and new.get("valid") is False:
        return row("regressed", "LoadGen: VALID → INVALID")
    if base.get("valid") is False and new.get("valid") is True:
        return row("fixed", "LoadGen: INVALID → VALID")
    b, n = base.get("metric_value"), new.get("metric_value")
    if not (isinstance(b, (int, float)) and isinstance(n, (int, float)) and b > 0 and n > 0):
        return row("inconclusive", "no figure on one side (LoadGen gave no estimate)")
    ratio = b / n if new.get("better") == "higher" else n / b
    estimate = stats.Estimate(ratio, ratio, ratio, "one figure per run", 1, 1)
    return row(stats.classify(estimate, threshold), f"{b:.4g} → {n:.4g} {new.get('metric_unit') or ''}".strip(), estimate)


def compare_paths(base: Sequence[str | Path], new: Sequence[str | Path], threshold: float | None = None,
                  across_machines: bool = False, memory_threshold: float = stats.MEMORY_THRESHOLD,
                  energy_threshold: float = stats.ENERGY_THRESHOLD) -> Comparison:
    base_sources = [s for p in base for s in sources.load(p)]
    new_sources = [s for p in new for s in sources.load(p)]
    return compare(base_sources, new_sources, threshold, across_machines, memory_threshold, energy_threshold)


def parse_threshold(text: str, option: str = "--threshold") -> float:
    """`5%`, `5 %` or `0.05` -> 0.05; anything outside (0, 1) is an error naming `option`."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise CompareError(f"{option}: cannot read {text!r}; write a percentage (5%) or a fraction (0.05)") from None
    if not 0 < value < 1:
        raise CompareError(f"{option}: {text!r} is not between 0 and 100 %; write e.g. 5% or 0.05")
    return value
