"""A comparison as people and programs read it: a rich table for a terminal, markdown for a pull request, JSON."""

from __future__ import annotations

import json
from typing import Any

from rbench.analysis import stats
from rbench.analysis.compare import Comparison, Item, Row, fail_on_text

MARK = {"regressed": "❌", "slower": "❌", "faster": "🚀", "fixed": "✅", "inconclusive": "❔",
        "status_changed": "⚠️", "new": "🆕", "missing": "➖", "unchanged": "", "not_timed": ""}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{(x - 1) * 100:+.1f}%"


def _ms(item: Item | None, with_n: bool = True) -> str:
    if item is None:
        return "-"
    if item.status != "ok":
        return item.status
    if item.metric and item.metric.get("metric_value") is not None:
        return f"{item.metric['metric_value']:.4g} {item.metric.get('metric_unit') or ''}".rstrip()
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


RESOURCE_WORD = {"more_memory": "more", "less_memory": "less", "same_memory": "", "more_energy": "more",
                 "less_energy": "less", "same_energy": "", "energy_uncertain": "uncertain"}
RESOURCE_STYLE = {"more": "bold red", "less": "green", "uncertain": "yellow"}
KIND_WORD = {"slower": "slower", "status": "status", "memory": "more memory", "energy": "more energy"}


def headline(cmp: Comparison, fail_on: Any = "any") -> str:
    regs = cmp.regressions(fail_on)
    if regs:
        counts = {k: sum(k in r.regression_kinds for r in regs) for k in KIND_WORD}
        what = ", ".join(f"{n} {KIND_WORD[k]}" for k, n in counts.items() if n)
        return f"{len(regs)} regression{'s' if len(regs) != 1 else ''} ({what})"
    return "no regressions"


def resource_cell(v: Any, markup: bool = False) -> str:
    """`+12.0% more` for a memory or energy verdict, `-` when not judged."""
    if v is None:
        return "-"
    word = RESOURCE_WORD.get(v.verdict, v.verdict)
    style = RESOURCE_STYLE.get(word, "")
    if markup and style:
        word = f"[{style}]{word}[/{style}]"
    return f"{_pct(v.ratio)} {word}".strip()


def _resource_columns(cmp: Comparison) -> list[tuple[str, str]]:
    """(column, Row attribute) for the resources that some case was judged on."""
    return [(name, attr) for name, attr in (("peak mem Δ", "memory"), ("J/img Δ", "energy"))
            if any(getattr(r, attr) is not None for r in cmp.rows)]


STYLE = {"regressed": "bold red", "slower": "bold red", "faster": "green", "fixed": "green",
         "inconclusive": "yellow", "status_changed": "yellow", "new": "cyan", "missing": "magenta",
         "unchanged": "dim", "not_timed": "dim"}


def rich_table(cmp: Comparison) -> Any:
    """The comparison as a rich Table (for a terminal)."""
    from rich.table import Table

    table = Table(header_style="bold", title="rbench compare: per-iteration time, new vs base")
    numeric = ("base ms", "new ms", "n", "time Δ", "95% CI")
    resources = _resource_columns(cmp)
    for name in ("case", *numeric, "img/s base → new", "verdict", *(c for c, _ in resources), "detail"):
        table.add_column(name, justify="right" if name in numeric else "left", overflow="fold",
                         no_wrap=name not in ("detail", "case"), min_width=24 if name == "detail" else None)
    for r in cmp.rows:
        style = STYLE.get(r.verdict, "")
        n = f"{r.base.n if r.base else '-'}/{r.new.n if r.new else '-'}"
        table.add_row(r.label, _ms(r.base, False), _ms(r.new, False), n, _pct(r.estimate.ratio if r.estimate else None),
                      _ci(r), _ips(r), f"[{style}]{r.verdict.replace('_', ' ')}[/{style}]",
                      *(resource_cell(getattr(r, attr), markup=True) for _, attr in resources), _detail(r))
    return table


def text_footer(cmp: Comparison, fail_on: Any = "any") -> str:
    lines = [f"base: {', '.join(cmp.base_paths)}  [{'; '.join(cmp.base_machines)}]",
             f"new:  {', '.join(cmp.new_paths)}  [{'; '.join(cmp.new_machines)}]",
             f"rule: {stats.rule_text(_common_threshold(cmp))}"]
    if _resource_columns(cmp):
        lines.append(f"rule: {stats.resource_rule_text(cmp.memory_threshold, cmp.energy_threshold)}")
    lines += [f"note: {n}" for n in cmp.notes]
    lines.append(f"{headline(cmp, fail_on)} (fail on: {fail_on_text(fail_on)}); {cmp.summary()}")
    return "\n".join(lines)


def _common_threshold(cmp: Comparison) -> float | None:
    values = {r.threshold for r in cmp.rows}
    return values.pop() if len(values) == 1 else None


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(cmp: Comparison, fail_on: Any = "any") -> str:
    """A pull-request comment: verdict first, the cases that need attention, the rest folded away."""
    regs = cmp.regressions(fail_on)
    icon = "❌" if regs else "✅"
    out = [f"### {icon} rbench compare: {headline(cmp, fail_on)}", "",
           f"{cmp.summary()}.", "",
           f"- **base**: {', '.join(f'`{p}`' for p in cmp.base_paths)} — {'; '.join(cmp.base_machines)}",
           f"- **new**: {', '.join(f'`{p}`' for p in cmp.new_paths)} — {'; '.join(cmp.new_machines)}"]
    out += [f"- **note**: {_md_escape(n)}" for n in cmp.notes]
    resources = _resource_columns(cmp)
    header = ["| case | base median | new median | time Δ | 95% CI | img/s base → new | "
              + "".join(f"{c} | " for c, _ in resources) + "verdict |",
              "|---|---:|---:|---:|---:|---:|" + "---:|" * len(resources) + "---|"]

    def line(r: Row) -> str:
        verdict = f"{MARK.get(r.verdict, '')} {r.verdict.replace('_', ' ')}".strip()
        for kind in r.regression_kinds:
            if kind in ("memory", "energy"):
                verdict += f", ❌ more {kind}"
        if _detail(r):
            verdict += f" — {_md_escape(_detail(r))}"
        cells = "".join(f"{resource_cell(getattr(r, attr))} | " for _, attr in resources)
        return (f"| `{_md_escape(r.label)}` | {_ms(r.base)} | {_ms(r.new)} | "
                f"{_pct(r.estimate.ratio if r.estimate else None)} | {_ci(r)} | {_ips(r)} | {cells}{verdict} |")

    quiet = {"unchanged", "not_timed"}
    loud = [r for r in cmp.rows if r.verdict not in quiet or _resource_changed(r)]
    calm = [r for r in cmp.rows if r.verdict in quiet and not _resource_changed(r)]
    if loud:
        out += ["", *header, *(line(r) for r in loud)]
    if calm:
        out += ["", f"<details><summary>{len(calm)} unchanged or not timed</summary>", "", *header,
                *(line(r) for r in calm), "", "</details>"]
    rule = stats.rule_text(_common_threshold(cmp))
    if resources:
        rule += "; " + stats.resource_rule_text(cmp.memory_threshold, cmp.energy_threshold)
    out += ["", f"<sub>Rule: {rule}. Time Δ > 0 means slower.</sub>", ""]
    return "\n".join(out)


def _resource_changed(r: Row) -> bool:
    return any(v is not None and RESOURCE_WORD.get(v.verdict) for v in (r.memory, r.energy))


def to_json(cmp: Comparison, fail_on: Any = "any") -> str:
    return json.dumps(cmp.to_dict(fail_on), indent=2, allow_nan=False, default=str)
