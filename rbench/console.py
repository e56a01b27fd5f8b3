"""What a person sees during and after `rbench run`: a live progress display and the results table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rbench.names import printable

STATUS_STYLE = {"ok": "green", "oom": "red", "error": "red", "timeout": "red", "incorrect": "bold red",
                "unsupported": "dim", "over_budget": "yellow", "skipped": "dim"}


def progress(console: Console) -> Progress:
    """Case n of N, the case being measured, elapsed time and the ETA."""
    return Progress(TextColumn("[bold]case"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.description}"),
                    console=console, transient=False)


def safe(text: Any) -> str:
    """Text from a suite or a run file, fit for a rich cell: control and bidi characters escaped, no markup."""
    return escape(printable(text))


def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _num(x: Any, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "-"


def power_cell(power: Any, refs: dict[str, int]) -> str:
    """`W, J/img`, or `unavailable [n]` with the reason as note n."""
    if not isinstance(power, dict) or power.get("unavailable"):
        reason = power.get("reason", "unknown") if isinstance(power, dict) else "not recorded"
        return f"[dim]unavailable [{refs[f'power unavailable: {reason}']}][/dim]"
    avg, jpi = power.get("avg_w"), power.get("j_per_image")
    return f"{_num(avg, '.0f')} W, {_num(jpi, '.3g')} J/img"


def run_table(records: list[dict[str, Any]], title: str = "") -> Table:
    """One row per case: what was measured, how fast, how much memory and power, and its status.

    Reasons and warnings are numbered notes in the status cell and spelled out by `notes()`, so the
    table stays narrow enough for a terminal. `host ms` is the host's time to issue one iteration
    (`host_ms_per_iter`): close to p50 on a GPU, the CPU's launches are the bottleneck.
    """
    table = Table(title=safe(title), header_style="bold")
    for name in ("model", "batch", "precision", "backend", "mode", "metric", "img/s", "p50 ms", "p99 ms", "host ms",
                 "TFLOP/s", "peak mem", "power", "status"):
        table.add_column(name, justify="right" if name in NUMERIC_COLUMNS else "left", no_wrap=name != "power")
    numbers = note_numbers(records)
    for r in records:
        refs = [numbers[n] for n in _notes_of(r) if not n.startswith("power unavailable")]
        lat = r.get("latency_ms") or {}
        status = r.get("status", "?")
        style = STATUS_STYLE.get(status, "")
        cell = (f"[{style}]{status}[/{style}]" if style else safe(status)) + "".join(f" [{n}]" for n in refs)
        if r.get("warnings"):
            cell += " [yellow]⚠[/yellow]"
        table.add_row(*(safe(r.get(k, "?")) for k in ("model", "batch_size", "precision", "backend", "mode")),
                      metric_cell(r), _num(r.get("throughput_ips"), ",.1f"),
                      _num(lat.get("p50"), ".2f"), _num(lat.get("p99"), ".2f"), _num(r.get("host_ms_per_iter"), ".2f"),
                      _num(r.get("tflops"), ".2f"),
                      _bytes(r.get("peak_memory_bytes")), power_cell(r.get("power"), numbers) if status == "ok" else "-",
                      cell)
    return table


def metric_cell(r: dict[str, Any], markup: bool = True) -> str:
    """An MLPerf scenario's (or max-batch search's) figure: `server 812 queries/s VALID (short run)`; `-` otherwise.
    `markup=False`: plain text (the HTML report), no rich colours."""
    if not r.get("scenario"):
        return "-"
    value = r.get("metric_value")
    figure = f" {value:.4g} {safe(r.get('metric_unit') or '')}" if isinstance(value, (int, float)) else ""
    verdict = {True: " [green]VALID[/green]", False: " [red]INVALID[/red]"}.get(r.get("valid"), "")
    if not markup:
        verdict = {True: " VALID", False: " INVALID"}.get(r.get("valid"), "")
    return f"{safe(r['scenario'])}{figure}{verdict}{' (short run)' if r.get('mlperf_length') is False else ''}"


NUMERIC_COLUMNS = {"batch", "img/s", "p50 ms", "p99 ms", "host ms", "TFLOP/s", "peak mem"}


def _notes_of(r: dict[str, Any]) -> list[str]:
    notes = [r["reason"]] if r.get("status") != "ok" and r.get("reason") else []
    power = r.get("power")
    if r.get("status") == "ok" and isinstance(power, dict) and power.get("unavailable"):
        notes.append(f"power unavailable: {power.get('reason', 'unknown')}")
    return notes + [f"warning: {w}" for w in r.get("warnings") or []]


def note_numbers(records: list[dict[str, Any]]) -> dict[str, int]:
    """Each distinct reason or warning in the records, numbered in order of appearance."""
    numbers: dict[str, int] = {}
    for r in records:
        for n in _notes_of(r):
            numbers.setdefault(n, len(numbers) + 1)
    return numbers


def notes(records: list[dict[str, Any]]) -> str:
    """The numbered reasons and warnings that the table's cells refer to."""
    return "\n".join(f"[{i}] {printable(text)}" for text, i in note_numbers(records).items())


def status_counts(records: Iterable[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def scaling_table(records: list[dict[str, Any]]) -> Table | None:
    """The multi-process cases (torchrun): ranks, global img/s, scaling efficiency, rank spread, all-reduce share."""
    from rich.markup import escape

    rows = [r for r in records if r.get("world_size") and r.get("status") == "ok"]
    if not rows:
        return None
    table = Table("case", "ranks", "img/s", "scaling", "slowest rank", "all-reduce", header_style="bold",
                  title="multi-process cases: global img/s over the slowest rank's window; scaling vs 1 process")
    for r in rows:
        spread, eff = r.get("rank_spread") or {}, r.get("scaling_efficiency")
        table.add_row(escape(str(r.get("case_id", "?"))), str(r["world_size"]), _num(r.get("throughput_ips"), ",.1f"),
                      format(eff, ".0%") if isinstance(eff, (int, float)) else "-",
                      f"{_num(spread.get('spread'), '.1%')} below fastest", _num(r.get("allreduce_share"), ".0%"))
    return table
