"""The headline figures per device: what the results page and a GPU session's summary lead with.

For each device: ResNet-50 inference throughput at batch 256 and p50 latency at batch 1 for eager,
torch.compile and rbench's kernels (the `triton` backend), in fp16 where it was measured (on a CPU, the
precision and largest batch it ran), and the kernels' geomean speed against cuDNN's convolution from the
kernel benchmark's JSON (`benchmarks/kernel_bench.py`) when one was measured on that GPU.
Reads results only: no torch.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

MODEL = "resnet50"
BACKENDS = ("eager", "compile", "triton")
THROUGHPUT_BATCH = 256
LATENCY_BATCH = 1
PRECISION = "fp16"
FLAGSHIP_SUITE = "resnet50_fp16"  # its records win over another suite's of the same case
KERNEL_KIND = "rbench_kernels.bench"
KERNEL_KEYS = ("float16/batch256", "bfloat16/batch256")  # the kernel summary shown, first found
SHORT_DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


class RunLike(Protocol):
    """What a headline needs of a run (`rbench.analysis.report.RunInfo` has it)."""

    device: str
    kind: str
    suite: str
    started: str
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class Cell:
    """One figure: the value when the case ended ok, else the status it ended with (or `not run`)."""

    value: float | None
    status: str

    def text(self, fmt: str) -> str:
        return format(self.value, fmt) if self.value is not None else self.status


@dataclass(frozen=True)
class KernelBench:
    """A kernel benchmark file: which GPU, and its summary per dtype and batch."""

    path: Path
    gpus: frozenset[str]  # the names it may go by (torch's and rbench's)
    summary: dict[str, Any]
    complete: bool

    def ratios(self) -> tuple[str, dict[str, Any]] | None:
        """(key, summary) of the headline dtype/batch, e.g. ("float16/batch256", {...})."""
        for key in KERNEL_KEYS:
            if isinstance(self.summary.get(key), dict):
                return key, self.summary[key]
        return None


@dataclass
class Headline:
    device: str
    kind: str
    precision: str
    image_size: int | None
    throughput_batch: int
    rows: dict[str, tuple[Cell, Cell]] = field(default_factory=dict)  # backend -> (img/s, p50 ms)
    kernels: KernelBench | None = None

    @property
    def on_gpu(self) -> bool:
        return self.kind not in ("cpu", "?")

    def kernel_line(self) -> str:
        """One sentence on the kernel benchmark of this device."""
        found = self.kernels.ratios() if self.kernels else None
        if found is None:
            return ("rbench kernels vs cuDNN: no kernel benchmark of this GPU yet" if self.on_gpu
                    else "rbench kernels vs cuDNN: measured on GPUs only (benchmarks/kernel_bench.py)")
        key, s = found
        vs_cudnn, vs_unfused = s.get("geomean_cudnn_conv_over_ours"), s.get("geomean_unfused_over_ours")
        partial = "" if self.kernels and self.kernels.complete else " (benchmark not finished)"
        dtype, _, batch = key.partition("/batch")
        return (f"rbench kernels vs cuDNN conv: {_x(vs_cudnn)} geomean over {s.get('layers', '?')} ResNet-50 layers "
                f"({SHORT_DTYPES.get(dtype, dtype)} at batch {batch}; fused vs PyTorch's unfused conv+BN+ReLU: "
                f"{_x(vs_unfused)}){partial}")


def _x(v: Any) -> str:
    return f"{v:.2f}x" if isinstance(v, (int, float)) else "–"


def kernel_benchmarks(paths: Iterable[str | Path]) -> list[KernelBench]:
    """Every kernel benchmark JSON measured on a GPU at or below `paths` (CPU smoke runs are left out)."""
    found: dict[Path, KernelBench] = {}
    for p in map(Path, paths):
        files = sorted(p.rglob("*.json")) if p.is_dir() else ([p] if p.suffix == ".json" else [])
        for f in files:
            try:
                obj = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(obj, dict) or obj.get("kind") != KERNEL_KIND:
                continue
            env = obj.get("env") or {}
            if not env.get("gpu"):
                continue  # --cpu-smoke: its figures mean nothing
            rb = ((env.get("rbench_environment") or {}).get("device") or {}).get("name")
            found[f.resolve()] = KernelBench(f, frozenset(n for n in (env["gpu"], rb) if n),
                                             obj.get("summary") or {}, obj.get("complete", True) is not False)
    return list(found.values())


def _pick(cands: list[tuple[RunLike, dict[str, Any]]]) -> dict[str, Any] | None:
    """The record to show: the flagship suite's (its verdict stands, a failure too), then an ok one, then the latest."""
    if not cands:
        return None
    return max(cands, key=lambda c: (c[0].suite == FLAGSHIP_SUITE, c[1].get("status") == "ok", c[0].started))[1]


def _cell(record: dict[str, Any] | None, value: float | None) -> Cell:
    if record is None:
        return Cell(None, "not run")
    if record.get("status") == "ok" and isinstance(value, (int, float)):
        return Cell(float(value), "ok")
    return Cell(None, str(record.get("status", "?")))


def headline(device: str, runs: Sequence[RunLike], kernels: Sequence[KernelBench] = ()) -> Headline | None:
    """The headline of one device from its runs; None when it ran no ResNet-50 inference case."""
    cands = [(run, r) for run in runs for r in run.records
             if r.get("model") == MODEL and r.get("mode") == "inference" and r.get("backend") in BACKENDS]
    if not cands:
        return None
    # The precision and image size to show: fp16 at 224 px where cases of it ended ok, else the most ok cases.
    ok = Counter((r.get("precision"), r.get("image_size")) for _, r in cands if r.get("status") == "ok")
    combos = {(r.get("precision"), r.get("image_size")) for _, r in cands}
    precision, size = max(combos, key=lambda c: (ok[c] > 0, c[0] == PRECISION, c[1] == 224, ok[c], str(c)))
    cands = [(run, r) for run, r in cands if (r.get("precision"), r.get("image_size")) == (precision, size)]
    batches = {r.get("batch_size") for _, r in cands if isinstance(r.get("batch_size"), int)}
    ok_batches = {r["batch_size"] for _, r in cands if r.get("status") == "ok" and isinstance(r.get("batch_size"), int)}
    batch = THROUGHPUT_BATCH if THROUGHPUT_BATCH in batches else max(ok_batches or batches or {THROUGHPUT_BATCH})
    h = Headline(device, runs[0].kind, str(precision), size if isinstance(size, int) else None, batch,
                 kernels=next((k for k in kernels if device in k.gpus), None))
    for backend in BACKENDS:
        mine = [(run, r) for run, r in cands if r.get("backend") == backend]
        big = _pick([(run, r) for run, r in mine if r.get("batch_size") == batch])
        one = _pick([(run, r) for run, r in mine if r.get("batch_size") == LATENCY_BATCH])
        h.rows[backend] = (_cell(big, (big or {}).get("throughput_ips")),
                           _cell(one, ((one or {}).get("latency_ms") or {}).get("p50")))
    return h


def headlines(runs: Iterable[RunLike], kernels: Sequence[KernelBench] = ()) -> list[Headline]:
    """One headline per device that ran ResNet-50 inference; GPUs first, then by name."""
    by_device: dict[str, list[RunLike]] = {}
    for run in runs:
        by_device.setdefault(run.device, []).append(run)
    out = [h for name, rs in by_device.items() if (h := headline(name, rs, kernels)) is not None]
    return sorted(out, key=lambda h: (not h.on_gpu, h.device))


def columns(h: Headline) -> tuple[str, str]:
    """The two figures' column titles, naming the batch each was measured at."""
    return f"img/s at batch {h.throughput_batch}", f"p50 ms at batch {LATENCY_BATCH}"


def to_text(hs: Sequence[Headline]) -> str:
    """The headlines as plain text for a terminal (a GPU session's summary)."""
    if not hs:
        return "no ResNet-50 inference results"
    lines = []
    for h in hs:
        lines.append(f"{h.device} ({h.kind}): ResNet-50 {h.precision}, {h.image_size} px, inference")
        thr, lat = columns(h)
        lines.append(f"  {'backend':<9} {thr:>20}  {lat:>20}")
        for backend, (big, one) in h.rows.items():
            lines.append(f"  {backend:<9} {big.text(',.1f'):>20}  {one.text('.3f'):>20}")
        lines.append(f"  {h.kernel_line()}")
    return "\n".join(lines)
