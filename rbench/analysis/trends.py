"""A history as people read it: the change-point table, trend figures with the steps marked, one HTML page.

Figures are matplotlib (Agg, no display) PNGs held as `rbench.analysis.report.Figure`s and written by its
`write_pngs`; the HTML page embeds them as base64, so it is self-contained like the report's.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from rbench import files, results
from rbench.analysis import report
from rbench.analysis.history import History, Series, rule_text
from rbench.names import slug


def rich_table(h: History) -> Any:
    """Every change point: when, which case, how much."""
    from rich.table import Table

    table = Table(header_style="bold", title=f"rbench history: change points ({h.order} order)")
    numeric = ("before ms", "after ms", "change", "p", "runs")
    for name in ("when", "case", *numeric, "verdict", "what else changed"):
        table.add_column(name, justify="right" if name in numeric else "left", overflow="fold",
                         no_wrap=name not in ("case", "what else changed"))
    for s in h.series:
        for i, c in enumerate(s.changes):
            newest = i == len(s.changes) - 1
            style = "bold red" if newest and s.regression else "green" if c.verdict == "faster" else "yellow"
            verdict = c.verdict + (" (newest)" if newest else "")
            table.add_row(c.point.when, s.label, f"{c.before_ms:.4g}", f"{c.after_ms:.4g}", f"{(c.ratio - 1) * 100:+.1f}%",
                          f"{c.p_value:.1g}", f"{c.runs_before}/{c.runs_after}", f"[{style}]{verdict}[/{style}]",
                          c.context or "-")
    return table


def footer(h: History) -> str:
    changed = sum(bool(s.changes) for s in h.series)
    regs = h.regressions()
    lines = [f"rule: {rule_text()}"] + [f"note: {n}" for n in h.notes]
    lines += [f"note: {s.label}: {s.note}" for s in h.series if s.note]
    lines.append(f"{len(h.series)} series, {sum(len(s.changes) for s in h.series)} change points in {changed}; "
                 + (f"{len(regs)} series whose newest change is a slowdown beyond its threshold: "
                    + ", ".join(s.label for s in regs) if regs else "no series whose newest change is a slowdown"))
    return "\n".join(lines)


SERIES, SLOWER, FASTER = "#1f77b4", "#d62728", "#2ca02c"  # the report's first three colours
CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}"
       "table{border-collapse:collapse;font-size:.85em} th,td{border:1px solid #ddd;padding:3px 7px}"
       "th{background:#f4f4f4;text-align:left} tr.bad td{background:#fdeaea} img{max-width:100%} .cap{color:#555}")


def trend_figure(s: Series) -> Any:
    """The series' medians in order, the level of each segment, and a line at each change point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(s.points)))
    ax.plot(xs, [p.median_ms for p in s.points], marker="o", color=SERIES, lw=1, label="median per run")
    edges = [0, *(c.index for c in s.changes), len(s.points)]
    for j in range(len(edges) - 1):
        level = (s.changes[j - 1].after_ms if j else s.changes[0].before_ms) if s.changes else None
        if level is not None:
            ax.hlines(level, edges[j] - 0.3, edges[j + 1] - 0.7, colors="#555", linestyles="--", lw=1)
    for c in s.changes:
        color = SLOWER if c.verdict == "slower" else FASTER
        ax.axvline(c.index - 0.5, color=color, lw=1.5)
        ax.annotate(f"{(c.ratio - 1) * 100:+.0f}%", (c.index - 0.5, ax.get_ylim()[1]), color=color,
                    ha="left", va="top", fontsize=9, xytext=(3, -3), textcoords="offset points")
    step = max(1, len(xs) // 12)
    ax.set_xticks(xs[::step])
    ax.set_xticklabels([s.points[i].when[:16] for i in xs[::step]], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("ms per iteration (median)")
    ax.set_title(s.label, fontsize=10)
    ax.grid(True, alpha=0.3)
    return fig


def figures(h: History) -> list[report.Figure]:
    out = []
    for s in h.series:
        if len(s.points) < 2:
            continue
        caption = (f"{len(s.points)} runs; " + ("; ".join(f"{c.verdict} {(c.ratio - 1) * 100:+.1f}% at {c.point.when}"
                                                            for c in s.changes) or "no change point"))
        png = io.BytesIO()
        trend_figure(s).savefig(png, format="png", dpi=100)
        out.append(report.Figure(slug(s.label), s.label, caption, png.getvalue()))
    return out


def write_pngs(figs: list[report.Figure], directory: str | Path) -> list[Path]:
    return report.write_pngs(report.Report(runs=[], figures=figs), directory)


def _change_rows(h: History) -> str:
    cells = lambda values, tag: "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values)  # noqa: E731
    rows = [f"<tr{' class=bad' if s.regression is c else ''}>" + cells(
        [c.point.when, s.label, f"{c.before_ms:.4g}", f"{c.after_ms:.4g}", f"{(c.ratio - 1) * 100:+.1f}%",
         f"{c.p_value:.1g}", c.verdict, c.context, c.point.path], "td") + "</tr>" for s in h.series for c in s.changes]
    head = cells(["when", "case", "before ms", "after ms", "change", "p", "verdict", "what else changed", "file"], "th")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>" if rows else "<p>No change point in any series.</p>"


def to_html(h: History, figs: list[report.Figure], title: str = "rbench history") -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class=cap>Generated {html.escape(results.now())} by rbench from {len(h.series)} series "
             f"({h.order} order). {html.escape(rule_text())}. Every figure is embedded.</p>", "<h2>Change points</h2>",
             _change_rows(h)]
    parts += [f"<p>{html.escape(n)}</p>" for n in h.notes]
    for f in figs:
        b64 = base64.b64encode(f.png).decode()
        parts += [f"<h2>{html.escape(f.title)}</h2>", f"<p class=cap>{html.escape(f.caption)}</p>",
                  f'<img alt="{html.escape(f.title)}" src="data:image/png;base64,{b64}">']
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(h: History, figs: list[report.Figure], path: str | Path, title: str = "rbench history") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.replace(path, to_html(h, figs, title))


def to_json(h: History) -> str:
    return json.dumps(h.to_dict(), indent=2, allow_nan=False, default=str)
