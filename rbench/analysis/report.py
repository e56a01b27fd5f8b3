"""`rbench report RUN...`: several runs (different GPUs, vendors, software) side by side.

Figures (matplotlib, Agg, no display needed): throughput against batch size per precision and
backend; latency p50 to p99; peak memory; energy per image; achieved TFLOP/s as a share of the
device's vendor peak (`rbench.analysis.peaks`); and the "complexity" chart of the ResNet literature, throughput
against GFLOPs per image with marker area proportional to parameters. `write_html` makes one
self-contained file (PNGs embedded as base64); `write_pngs` writes the PNGs to a directory.
This module reads results only: no torch.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbench import results
from rbench.analysis import peaks, sources
from rbench.spec import record_id

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


class ReportError(ValueError):
    """Runs that cannot be reported (no files, no measured case): exit status 2."""


@dataclass
class RunInfo:
    """One run in the report: its label (device, made unique), provenance and records."""

    label: str
    path: Path
    device: str
    kind: str
    suite: str
    machine: str
    started: str
    status: str
    host: str
    records: list[dict[str, Any]]
    peak: peaks.Peak | None = None


@dataclass
class Figure:
    name: str  # file stem
    title: str
    caption: str
    png: bytes


@dataclass
class Report:
    runs: list[RunInfo]
    figures: list[Figure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # figures not drawn, with the reason


def load_runs(paths: Sequence[str | Path], table: peaks.PeakTable | None = None) -> list[RunInfo]:
    """Every run file given (directories: every run file below them), each labelled by its device."""
    table = table or peaks.PeakTable()
    runs: list[RunInfo] = []
    for p in paths:
        try:
            found = list(results.iter_runs(p))
        except results.RunFileError as e:
            raise ReportError(str(e)) from None
        for run in found:
            device = run.env.get("device") or {}
            name = str(device.get("name") or "unknown device")
            host = (run.env.get("host") or {}).get("hostname", "")
            runs.append(RunInfo(
                label=name, path=run.path, device=name, kind=str(device.get("kind", "?")),
                suite=str(run.suite.get("name", "?")), machine=sources.describe_env(run.env),
                started=str(run.header.get("started", "")), status=run.status, host=str(host),
                records=run.latest_records(), peak=table.lookup(name)))
    if not runs:
        raise ReportError(f"no run files in {', '.join(map(str, paths))}")
    _unique_labels(runs)
    return runs


def _unique_labels(runs: list[RunInfo]) -> None:
    """Same device twice (two software versions, two hosts): add the first detail that tells them apart."""
    extras: tuple[Callable[[RunInfo], str], ...] = (
        lambda r: r.suite, lambda r: r.host, lambda r: r.started[:16].replace("T", " "), lambda r: r.path.stem)
    groups: dict[str, list[RunInfo]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    for label, group in groups.items():
        if len(group) < 2:
            continue
        extra = next((e for e in extras if len({e(r) for r in group}) == len(group)), extras[-1])
        for r in group:
            r.label = f"{label} [{extra(r)}]"


def _ok(run: RunInfo) -> list[dict[str, Any]]:
    return [r for r in run.records if r.get("status") == "ok"]


def _series_key(r: dict[str, Any]) -> tuple[str, str]:
    return str(r.get("precision")), str(r.get("backend"))


def _style_maps(runs: list[RunInfo]) -> tuple[dict[str, str], dict[tuple[str, str], tuple[str, str]]]:
    colors = {run.label: COLORS[i % len(COLORS)] for i, run in enumerate(runs)}
    combos = sorted({_series_key(r) for run in runs for r in _ok(run)})
    styles = {c: (LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)]) for i, c in enumerate(combos)}
    return colors, styles


def _new_figure(rows: int, cols: int, width: float = 5.2, height: float = 3.6) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(max(7.0, width * cols), height * rows + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _batch_axis(ax: Any, batches: Iterable[int]) -> None:
    bs = sorted(set(batches))
    if len(bs) > 1 and bs[-1] / max(bs[0], 1) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(bs)
    ax.set_xticklabels([str(b) for b in bs])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.grid(True, alpha=0.3)


Metric = Callable[[RunInfo, dict[str, Any]], "float | None"]


def _by_batch_figure(runs: list[RunInfo], metric: Metric, ylabel: str,
                     title: str, band: Metric | None = None,
                     log_y: bool | None = None, modes: Sequence[str] | None = None) -> Any | None:
    """One panel per (model, mode): a line per run x precision x backend, metric against batch size."""
    colors, styles = _style_maps(runs)
    points = [(run, r) for run in runs for r in _ok(run) if metric(run, r) is not None]
    if modes is not None:
        points = [(run, r) for run, r in points if r.get("mode") in modes]
    if not points:
        return None
    models = sorted({r["model"] for _, r in points})
    mode_list = [m for m in ("inference", "training") if any(r.get("mode") == m for _, r in points)]
    fig, axes = _new_figure(len(models), len(mode_list))
    values = [metric(run, r) for run, r in points]
    if log_y is None:
        positive = [v for v in values if v and v > 0]
        log_y = bool(positive) and max(positive) / min(positive) > 30
    for i, model in enumerate(models):
        for j, mode in enumerate(mode_list):
            ax = axes[i][j]
            panel = [(run, r) for run, r in points if r["model"] == model and r.get("mode") == mode]
            series: dict[tuple, list[dict[str, Any]]] = {}
            owner: dict[str, RunInfo] = {}
            for run, r in panel:
                series.setdefault((run.label, *_series_key(r)), []).append(r)
                owner[run.label] = run
            for (label, prec, backend), recs in sorted(series.items()):
                recs.sort(key=lambda r: r["batch_size"])
                xs = [r["batch_size"] for r in recs]
                ys = [metric(owner[label], r) for r in recs]
                ls, marker = styles[(prec, backend)]
                ax.plot(xs, ys, linestyle=ls, marker=marker, color=colors[label], markersize=5,
                        label=f"{label} · {prec} · {backend}")
                if band is not None:
                    hi = [band(owner[label], r) for r in recs]
                    if all(h is not None for h in hi):
                        ax.fill_between(xs, ys, hi, color=colors[label], alpha=0.15, linewidth=0)
            if panel:
                _batch_axis(ax, [r["batch_size"] for _, r in panel])
                if log_y:
                    ax.set_yscale("log")
                else:
                    ax.set_ylim(bottom=0)
                ax.set_ylabel(ylabel)
            ax.set_title(f"{model} · {mode}", fontsize=10)
            if not panel:
                ax.text(0.5, 0.5, "no ok case", ha="center", va="center", transform=ax.transAxes, color="gray")
                ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
    handles, labels = [], []
    for row in axes:
        for ax in row:
            for h, lbl in zip(*ax.get_legend_handles_labels()):
                if lbl not in labels:
                    handles.append(h)
                    labels.append(lbl)
    longest = max((len(lbl) for lbl in labels), default=0)
    ncol = max(1, min(len(labels), int(len(axes[0]) * 95 // max(longest, 1)), 4))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig


def _power(r: dict[str, Any], key: str) -> float | None:
    p = r.get("power")
    if not isinstance(p, dict) or p.get("unavailable"):
        return None
    v = p.get(key)
    return v if isinstance(v, (int, float)) else None


def _lat(key: str) -> Metric:
    return lambda run, r: (r.get("latency_ms") or {}).get(key)


def _mib(r: dict[str, Any]) -> float | None:
    v = r.get("peak_memory_bytes")
    return v / 2**20 if isinstance(v, (int, float)) else None


def fraction_of_peak(run: RunInfo, r: dict[str, Any]) -> float | None:
    if run.peak is None or not isinstance(r.get("tflops"), (int, float)):
        return None
    peak = run.peak.tflops.get(peaks.AMP.get(r.get("precision", ""), r.get("precision", "")))
    return r["tflops"] / peak if peak else None


def _unavailable_power(runs: list[RunInfo]) -> str:
    reasons = {}
    for run in runs:
        for r in _ok(run):
            p = r.get("power")
            if isinstance(p, dict) and p.get("unavailable"):
                reasons.setdefault(run.label, p.get("reason", "unknown"))
    return "; ".join(f"{k}: {v}" for k, v in reasons.items())


def utilisation_figure(runs: list[RunInfo]) -> tuple[Any | None, str]:
    known = [run for run in runs if run.peak is not None]
    unknown = sorted({run.device for run in runs if run.peak is None})
    note = (f"no vendor peak known for {', '.join(unknown)} (add one with --peaks)" if unknown else "")
    if known:
        def metric(run: RunInfo, r: dict[str, Any]) -> float | None:
            f = fraction_of_peak(run, r)
            return None if f is None else 100 * f

        fig = _by_batch_figure(known, metric, "% of vendor peak (dense)",
                               "Achieved TFLOP/s as a share of the device's peak", log_y=False)
        return fig, note
    fig = _by_batch_figure(runs, lambda run, r: r.get("tflops"), "achieved TFLOP/s",
                           "Achieved TFLOP/s (no vendor peak known for these devices)")
    return fig, note


def complexity_figure(runs: list[RunInfo]) -> Any | None:
    """Throughput against GFLOPs per image, marker area proportional to parameters (best inference case)."""
    colors, _ = _style_maps(runs)
    points = []
    for run in runs:
        best: dict[str, dict[str, Any]] = {}
        for r in _ok(run):
            if r.get("mode") != "inference" or not r.get("flops_per_image") or not r.get("throughput_ips"):
                continue
            if r["model"] not in best or r["throughput_ips"] > best[r["model"]]["throughput_ips"]:
                best[r["model"]] = r
        points += [(run, r) for r in best.values()]
    if not points:
        return None
    fig, axes = _new_figure(1, 1, width=10.0, height=5.6)
    ax = axes[0][0]
    max_params = max(r.get("params") or 1 for _, r in points)
    for run, r in points:
        size = 60 + 900 * (r.get("params") or 0) / max_params
        ax.scatter(r["flops_per_image"] / 1e9, r["throughput_ips"], s=size, color=colors[run.label], alpha=0.55,
                   edgecolors="black", linewidths=0.6)
        ax.annotate(r["model"], (r["flops_per_image"] / 1e9, r["throughput_ips"]), textcoords="offset points",
                    xytext=(0, 0), ha="center", va="center", fontsize=7)
    gflops = [r["flops_per_image"] / 1e9 for _, r in points]
    ips = [r["throughput_ips"] for _, r in points]
    if max(gflops) / min(gflops) > 4:
        ax.set_xscale("log")
    if max(ips) / min(ips) > 10:
        ax.set_yscale("log")
    _pad_axes(ax, gflops, ips)
    ax.set_xlabel("GFLOPs per image (forward, 2 x multiply-adds)")
    ax.set_ylabel("throughput (images/s, best inference case)")
    ax.grid(True, alpha=0.3)
    for run in runs:
        ax.scatter([], [], color=colors[run.label], alpha=0.55, s=80, label=run.label, edgecolors="black")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside right upper", title="device", title_fontsize=8)
    params = sorted({r.get("params") or 0 for _, r in points})
    shown = (params[0], params[-1]) if len(params) > 1 else params[:1]
    sizes = [ax.scatter([], [], s=60 + 900 * p / max_params, color="lightgray", edgecolors="black") for p in shown]
    fig.legend(sizes, [f"{p / 1e6:.1f} M" for p in shown], fontsize=8, loc="outside right lower", title="parameters",
               title_fontsize=8, labelspacing=2.2, borderpad=1.2, handletextpad=1.6)
    ax.set_title("Complexity: throughput against GFLOPs per image (marker area ∝ parameters)", fontsize=12)
    return fig


def _pad_axes(ax: Any, xs: list[float], ys: list[float]) -> None:
    """Room around the points so that markers and labels stay inside the axes."""
    def span(values: list[float], log: bool) -> tuple[float, float]:
        lo, hi = min(values), max(values)
        if log:
            return lo / 1.6, hi * 1.6
        pad = (hi - lo) * 0.25 or abs(hi) * 0.3 or 1.0
        return max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad

    ax.set_xlim(*span(xs, ax.get_xscale() == "log"))
    ax.set_ylim(*span(ys, ax.get_yscale() == "log"))


def build(runs: list[RunInfo]) -> Report:
    """Draw every figure that the runs have data for; say why the others are missing."""
    report = Report(runs)
    if not any(_ok(run) for run in runs):
        raise ReportError("no case ended ok in these runs: nothing to plot "
                          f"({', '.join(str(r.path) for r in runs)})")

    def add(name: str, title: str, caption: str, fig: Any | None, why_not: str) -> None:
        if fig is None:
            report.skipped.append(f"{title}: {why_not}")
        else:
            report.figures.append(Figure(name, title, caption, _png(fig)))

    add("throughput", "Throughput vs batch size",
        "Images per second over the timed window (higher is better); one line per device, precision and backend.",
        _by_batch_figure(runs, lambda run, r: r.get("throughput_ips"), "images/s", "Throughput vs batch size"),
        "no ok case with a throughput")
    add("latency", "Latency percentiles",
        "Per-iteration latency: the line is p50, the band reaches p99 (nearest-rank percentiles of the raw samples).",
        _by_batch_figure(runs, _lat("p50"), "ms per iteration", "Latency: p50 (line) to p99 (band)",
                         band=_lat("p99")),
        "no latency samples")
    add("memory", "Peak memory",
        "Peak device memory allocated by torch (GPU) or the process's peak RSS (CPU).",
        _by_batch_figure(runs, lambda run, r: _mib(r), "peak memory (MiB)", "Peak memory vs batch size"),
        "no case recorded peak memory")
    power_note = _unavailable_power(runs)
    add("energy", "Energy per image",
        "Joules per image over the timed window (lower is better)." + (f" Unavailable for {power_note}." if power_note else ""),
        _by_batch_figure(runs, lambda run, r: _power(r, "j_per_image"), "J per image", "Energy per image"),
        "no power measurement in these runs" + (f" ({power_note})" if power_note else ""))
    fig, note = utilisation_figure(runs)
    add("utilisation", "Achieved TFLOP/s vs peak",
        "Achieved TFLOP/s (forward FLOPs x throughput, x3 for training) over the dense vendor peak for the "
        "case's precision (source: vendor datasheet)." + (f" Note: {note}." if note else ""),
        fig, "no case recorded TFLOP/s")
    add("complexity", "Complexity chart",
        "Each model's best inference throughput against its forward GFLOPs per image; marker area is proportional "
        "to the parameter count.", complexity_figure(runs), "no inference case with FLOPs recorded")
    return report


def write_pngs(report: Report, directory: str | Path) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for f in report.figures:
        path = directory / f"{f.name}.png"
        path.write_bytes(f.png)
        out.append(path)
    return out


def _fmt(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else "–"


def case_rows(runs: list[RunInfo]) -> list[dict[str, Any]]:
    """One row per case and run, for the HTML table."""
    rows = []
    for run in runs:
        for r in run.records:
            lat = r.get("latency_ms") or {}
            frac = fraction_of_peak(run, r)
            rows.append({
                "case": record_id(r), "run": run.label, "status": r.get("status", "?"),
                "img/s": _fmt(r.get("throughput_ips"), ",.1f"), "p50 ms": _fmt(lat.get("p50"), ".3g"),
                "p90 ms": _fmt(lat.get("p90"), ".3g"), "p99 ms": _fmt(lat.get("p99"), ".3g"),
                "peak MiB": _fmt(_mib(r), ",.0f"), "W": _fmt(_power(r, "avg_w"), ".0f"),
                "J/img": _fmt(_power(r, "j_per_image"), ".3g"), "TFLOP/s": _fmt(r.get("tflops"), ".3g"),
                "% peak": _fmt(None if frac is None else 100 * frac, ".1f"),
                "_sort": (record_id(r), run.label)})
    rows.sort(key=lambda x: x["_sort"])
    return rows


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} th,td{border:1px solid #ddd;padding:3px 7px}
th{background:#f4f4f4;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fdeaea} img{max-width:100%;border:1px solid #eee} .cap{color:#555;font-size:.9em}
code{background:#f4f4f4;padding:0 3px}
"""


def _table(headers: list[str], rows: list[list[str]], numeric: set[str] = frozenset(), classes: list[str] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(
            f'<td{" class=n" if h in numeric else ""}>{html.escape(str(v))}</td>' for h, v in zip(headers, row)) + "</tr>")
    return "\n".join(out + ["</table>"])


def to_html(report: Report, title: str = "rbench report") -> str:
    runs = report.runs
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class=cap>Generated {html.escape(results.now())} by rbench from {len(runs)} run file(s). "
             "Every figure is embedded; this file is self-contained.</p>", "<h2>Runs</h2>"]
    parts.append(_table(
        ["label", "machine and software", "suite", "started", "status", "host", "file"],
        [[r.label, r.machine, r.suite, r.started, r.status, r.host, str(r.path)] for r in runs]))
    for f in report.figures:
        b64 = base64.b64encode(f.png).decode()
        parts += [f"<h2>{html.escape(f.title)}</h2>", f"<p class=cap>{html.escape(f.caption)}</p>",
                  f'<img alt="{html.escape(f.title)}" src="data:image/png;base64,{b64}">']
    if report.skipped:
        parts += ["<h2>Not drawn</h2><ul>"] + [f"<li>{html.escape(s)}</li>" for s in report.skipped] + ["</ul>"]
    rows = case_rows(runs)
    headers = ["case", "run", "status", "img/s", "p50 ms", "p90 ms", "p99 ms", "peak MiB", "W", "J/img", "TFLOP/s", "% peak"]
    parts += ["<h2>All cases</h2>", _table(headers, [[r[h] for h in headers] for r in rows],
                                          numeric=set(headers[3:]),
                                          classes=["" if r["status"] in ("ok", "unsupported", "skipped") else "bad" for r in rows])]
    used = {run.peak.name: run.peak for run in runs if run.peak}
    parts.append("<h2>Vendor peaks used</h2>")
    if used:
        parts.append(_table(["device", "fp32", "tf32", "fp16", "bf16", "memory TB/s", "source", "note"],
                            [[p.name, *(_fmt(p.tflops.get(k), "g") for k in ("fp32", "tf32", "fp16", "bf16")),
                              _fmt(p.memory_tb_s, "g"), p.source, p.note] for p in used.values()],
                            numeric={"fp32", "tf32", "fp16", "bf16", "memory TB/s"}))
        parts.append("<p class=cap>Dense TFLOP/s (no structured sparsity) at boost clock.</p>")
    unknown = sorted({run.device for run in runs if run.peak is None})
    if unknown:
        parts.append(f"<p>No vendor peak known for: {html.escape(', '.join(unknown))}. "
                     "Give one with <code>rbench report --peaks FILE</code>.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Report, path: str | Path, title: str = "rbench report") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_html(report, title), encoding="utf-8")
    return path


def side_by_side(runs: list[RunInfo]) -> Any:
    """A rich table for the terminal: throughput of each case on each run."""
    from rich.table import Table

    table = Table(header_style="bold", title="throughput (img/s) side by side")
    table.add_column("case")
    for run in runs:
        table.add_column(run.label, justify="right", overflow="fold")
    cases: dict[str, dict[str, str]] = {}
    for run in runs:
        for r in run.records:
            cell = _fmt(r.get("throughput_ips"), ",.1f") if r.get("status") == "ok" else f"[dim]{r.get('status')}[/dim]"
            cases.setdefault(record_id(r), {})[run.label] = cell
    for case in sorted(cases):
        table.add_row(case, *(cases[case].get(run.label, "") for run in runs))
    return table

