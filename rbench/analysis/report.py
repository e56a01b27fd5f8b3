"""`rbench report RUN...`: the report as one self-contained HTML page, and the report's one entry point.

The page: headline per GPU (`rbench.analysis.headline`), runs, figures (embedded PNGs, drawn by
`rbench.analysis.report_figures`, whose API is re-exported here), every case, the vendor peaks used.
`rbench report results/ --html docs/results/index.html` builds the project's published results page
with it. Nothing on the page is fetched from anywhere. Reads results only: no torch.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from rbench import files, results
from rbench.analysis import headline
from rbench.analysis.report_figures import (
    Figure,
    Report,
    ReportError,
    RunInfo,
    build,
    fmt_value,
    fraction_of_peak,
    load_runs,
    mib,
    power_value,
    side_by_side,
    write_pngs,
)
from rbench.console import metric_cell
from rbench.spec import record_id

__all__ = ["Figure", "Report", "ReportError", "RunInfo", "build", "case_rows", "fraction_of_peak", "load_runs",
           "side_by_side", "to_html", "write_html", "write_pngs"]

# Tables wrap inside the page instead of running off its edge: the long columns (case ids, paths,
# machine descriptions: class w) may break at any character, the others only between words.
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd} h3{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;max-width:100%} th,td{border:1px solid #ddd;padding:3px 7px} td.w{overflow-wrap:anywhere}
th{background:#f4f4f4;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.bad td{background:#fdeaea} img{max-width:100%;height:auto;border:1px solid #eee} .cap{color:#555;font-size:.9em}
.notice{background:#fff6d6;border:1px solid #e8d17a;padding:.6em 1em} code{background:#f4f4f4;padding:0 3px}
@media (max-width:1000px){table{font-size:.72em} th,td{padding:2px 3px}}
"""


def case_rows(runs: list[RunInfo]) -> list[dict[str, Any]]:
    """One row per case and run, for the table of every case."""
    rows = []
    for run in runs:
        for r in run.records:
            lat = r.get("latency_ms") or {}
            frac = fraction_of_peak(run, r)
            rows.append({
                "case": record_id(r), "run": run.label, "status": r.get("status", "?"), "metric": metric_cell(r, markup=False),
                "img/s": fmt_value(r.get("throughput_ips"), ",.1f"), "p50 ms": fmt_value(lat.get("p50"), ".3g"),
                "p90 ms": fmt_value(lat.get("p90"), ".3g"), "p99 ms": fmt_value(lat.get("p99"), ".3g"),
                "host ms": fmt_value(r.get("host_ms_per_iter"), ".3g"),
                "graph": {True: "yes", False: "no"}.get(r.get("cuda_graph"), "–"),
                "peak MiB": fmt_value(mib(r), ",.0f"), "W": fmt_value(power_value(r, "avg_w"), ".0f"),
                "J/img": fmt_value(power_value(r, "j_per_image"), ".3g"), "TFLOP/s": fmt_value(r.get("tflops"), ".3g"),
                "% peak": fmt_value(None if frac is None else 100 * frac, ".1f"),
                "warnings": "; ".join(map(str, r.get("warnings") or [])),
                "_sort": (record_id(r), run.label)})
    rows.sort(key=lambda x: x["_sort"])
    return rows


LONG_COLUMNS = frozenset({"case", "file", "machine and software", "label", "run", "source", "note", "warnings", "metric"})


def _table(headers: list[str], rows: list[list[str]], numeric: set[str] = frozenset(), classes: list[str] | None = None) -> str:
    def cell(h: str) -> str:
        return " class=n" if h in numeric else (" class=w" if h in LONG_COLUMNS else "")

    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td{cell(h)}>{html.escape(str(v))}</td>" for h, v in zip(headers, row))
                   + "</tr>")
    return "\n".join(out + ["</table>"])


def headline_section(report: Report) -> list[str]:
    """Per GPU: ResNet-50 throughput at batch 256 and p50 at batch 1 per backend, and the kernels vs cuDNN.

    With no GPU run it says so first and shows the CPU runs' headline as an example of the layout.
    """
    hs = headline.headlines(report.runs, report.kernels)
    gpus = [h for h in hs if h.on_gpu]
    parts = ["<h2>Headline: ResNet-50 inference per GPU</h2>"]
    if not gpus:
        parts.append("<p class=notice><b>No GPU results yet.</b> Nothing in these results was measured on a GPU; "
                     "the tables and figures below show the CPU runs as an example of what the page holds. "
                     "A lent GPU runs <code>scripts/gpu_session.sh all</code>; "
                     "<code>rbench results import</code> files its archive under <code>results/</code>.</p>")
    shown = gpus or hs
    if not shown:
        parts.append("<p>No ResNet-50 inference case in these runs.</p>")
    for h in shown:
        thr, lat = headline.columns(h)
        parts.append(f"<h3>{html.escape(h.device)} ({html.escape(h.kind)}): ResNet-50 {html.escape(h.precision)}, "
                     f"{h.image_size} px{'' if h.on_gpu else ' (CPU example)'}</h3>")
        parts.append(_table(["backend", thr, lat],
                            [[b, big.text(",.1f"), one.text(".3f")] for b, (big, one) in h.rows.items()],
                            numeric={thr, lat}))
        parts.append(f"<p class=cap>{html.escape(h.kernel_line())}.</p>")
    parts.append("<p class=cap>eager is PyTorch, compile is torch.compile (default mode), triton is the whole network "
                 "on rbench's fused kernels; a figure is shown only for a case that ended ok, otherwise its status.</p>")
    return parts


def to_html(report: Report, title: str = "rbench report") -> str:
    runs = report.runs
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<meta name=viewport content='width=device-width, initial-scale=1'>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class=cap>Generated {html.escape(results.now())} by rbench from {len(runs)} run file(s). "
             "Every figure is embedded; this file is self-contained.</p>"]
    parts += headline_section(report)
    parts.append("<h2>Runs</h2>")
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
    headers = ["case", "run", "status", "metric", "img/s", "p50 ms", "p90 ms", "p99 ms", "host ms", "graph", "peak MiB",
               "W", "J/img", "TFLOP/s", "% peak", "warnings"]
    parts += ["<h2>All cases</h2>", _table(headers, [[r[h] for h in headers] for r in rows],
                                          numeric=set(headers[4:-1]),
                                          classes=["" if r["status"] in ("ok", "unsupported", "skipped") else "bad" for r in rows])]
    used = {run.peak.name: run.peak for run in runs if run.peak}
    parts.append("<h2>Vendor peaks used</h2>")
    if used:
        parts.append(_table(["device", "fp32", "tf32", "fp16", "bf16", "memory TB/s", "source", "note"],
                            [[p.name, *(fmt_value(p.tflops.get(k), "g") for k in ("fp32", "tf32", "fp16", "bf16")),
                              fmt_value(p.memory_tb_s, "g"), p.source, p.note] for p in used.values()],
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
    return files.replace(path, to_html(report, title))
