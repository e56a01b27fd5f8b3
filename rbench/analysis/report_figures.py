"""The report's figures: several runs (different GPUs, vendors, software) side by side, drawn with matplotlib.

Figures (matplotlib, Agg, no display needed): throughput against batch size per precision and
backend; latency p50 to p99; peak memory; energy per image; achieved TFLOP/s as a share of the
device's vendor peak (`rbench.analysis.peaks`); and the "complexity" chart of the ResNet literature, throughput
against GFLOPs per image with marker area proportional to parameters. `write_pngs` writes the PNGs to a
directory; `rbench.analysis.report` makes the self-contained page. Reads results only: no torch.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbench import files, results
from rbench.analysis import headline, peaks, sources
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
    root: Path | None = None  # the path it was found under (a directory given to `rbench report`, or the file)


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
    kernels: list[headline.KernelBench] = field(default_factory=list)  # kernel benchmark files found beside the runs


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
                records=run.latest_records(), peak=table.lookup(name), root=Path(p)))
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
    """One line per precision and backend, and per MLPerf scenario (LoadGen's figures are not closed loops)."""
    return str(r.get("precision")), str(r.get("backend")) + (f" {r['scenario']}" if r.get("scenario") else "")


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
    """The figure as PNG, cropped to everything drawn (a legend outside the axes is never cut off)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", pad_inches=0.15)
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
    # As many columns as fit the figure's width: ~0.075 in per character at 8 pt, plus the marker.
    longest = max((len(lbl) for lbl in labels), default=0)
    ncol = max(1, min(len(labels), int(fig.get_figwidth() // (0.075 * longest + 0.7)), 4))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig


def power_value(r: dict[str, Any], key: str) -> float | None:
    p = r.get("power")
    if not isinstance(p, dict) or p.get("unavailable"):
        return None
    v = p.get(key)
    return v if isinstance(v, (int, float)) else None


def _lat(key: str) -> Metric:
    return lambda run, r: (r.get("latency_ms") or {}).get(key)


def mib(r: dict[str, Any]) -> float | None:
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
    report = Report(runs, kernels=headline.kernel_benchmarks(sorted({r.root for r in runs if r.root is not None})))
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
        _by_batch_figure(runs, lambda run, r: mib(r), "peak memory (MiB)", "Peak memory vs batch size"),
        "no case recorded peak memory")
    power_note = _unavailable_power(runs)
    add("energy", "Energy per image",
        "Joules per image over the timed window (lower is better)." + (f" Unavailable for {power_note}." if power_note else ""),
        _by_batch_figure(runs, lambda run, r: power_value(r, "j_per_image"), "J per image", "Energy per image"),
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
        out.append(files.replace(path, f.png))
    return out


def fmt_value(v: Any, fmt: str) -> str:
    """A number for a table; "–" for None, NaN, inf and anything that is not a number."""
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else "–"


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
            cell = fmt_value(r.get("throughput_ips"), ",.1f") if r.get("status") == "ok" else f"[dim]{r.get('status')}[/dim]"
            cases.setdefault(record_id(r), {})[run.label] = cell
    for case in sorted(cases):
        table.add_row(case, *(cases[case].get(run.label, "") for run in runs))
    return table

