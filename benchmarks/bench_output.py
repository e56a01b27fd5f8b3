"""What the kernel benchmark reports: goals and summary ratios, the tables it prints, who measured, who else
was on the GPU, and the JSON file it rewrites as each layer finishes (so a killed run keeps its layers).

Imported by benchmarks/kernel_bench.py; plain Python here, torch only inside `machine()`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_roofline import Bounds, network_line

GOALS = {"fused_vs_unfused_geomean": 1.15, "fused_vs_unfused_each": 1.0, "fused_vs_cudnn_conv": 0.9,
         "gemm_vs_matmul": 0.9, "add_vs_copy_bandwidth": 0.85}
KIND = "rbench_kernels.bench"  # what `rbench report` and `rbench results` look for in a JSON file


def geomean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None


def summarize(layers: list[dict], adds: list[dict]) -> dict:
    """Per dtype and batch: geomean and worst ratio of each comparison, and which goals are met."""
    out = {}
    for key in sorted({(r["dtype"], r["batch"]) for r in layers}):
        rows = [r for r in layers if (r["dtype"], r["batch"]) == key]
        fused = [r["ratios"]["unfused_over_ours"] for r in rows]
        cudnn = [r["ratios"]["cudnn_conv_over_ours"] for r in rows]
        gemm = [r["ratios"].get("matmul_over_ours_gemm") for r in rows if "matmul_over_ours_gemm" in r["ratios"]]
        s = {
            "layers": len(rows),
            "geomean_unfused_over_ours": geomean(fused),
            "min_unfused_over_ours": min((x for x in fused if x), default=None),
            "geomean_cudnn_conv_over_ours": geomean(cudnn),
            "min_cudnn_conv_over_ours": min((x for x in cudnn if x), default=None),
            "geomean_matmul_over_ours_gemm": geomean(gemm),
            "min_matmul_over_ours_gemm": min((x for x in gemm if x), default=None),
        }
        s["goals"] = {
            "fused beats unfused on every layer": (s["min_unfused_over_ours"] or 0) > GOALS["fused_vs_unfused_each"],
            f"fused vs unfused geomean >= {GOALS['fused_vs_unfused_geomean']}":
                (s["geomean_unfused_over_ours"] or 0) >= GOALS["fused_vs_unfused_geomean"],
            f"fused >= {GOALS['fused_vs_cudnn_conv']} x cuDNN conv alone (geomean)":
                (s["geomean_cudnn_conv_over_ours"] or 0) >= GOALS["fused_vs_cudnn_conv"],
            f"1x1 GEMM >= {GOALS['gemm_vs_matmul']} x torch.matmul (geomean)":
                (s["geomean_matmul_over_ours_gemm"] or 0) >= GOALS["gemm_vs_matmul"],
        }
        out[f"{key[0]}/batch{key[1]}"] = s
    if adds:
        ratios = [a["bandwidth_ratio"] for a in adds]
        out["add_act"] = {"geomean_bandwidth_vs_copy": geomean(ratios), "min_bandwidth_vs_copy": min(ratios),
                          "goal": {f"add_act >= {GOALS['add_vs_copy_bandwidth']} x copy bandwidth (every shape)":
                                   min(ratios) >= GOALS["add_vs_copy_bandwidth"]}}
    return out


def fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_tables(layers: list[dict], adds: list[dict], summary: dict) -> None:
    """The per-layer table (with the roofline bound and ours' % of it when the run has peaks), add_act's, goals."""
    bounded = any("roofline" in r for r in layers)
    head = ("dtype", "batch", "layer", "CxK RxS/s", "ours ms", "TFLOP/s", "GB/s",
            *(("bound us", "% bound") if bounded else ()), "unfused ms", "cudnn ms",
            "unf/ours", "cudnn/ours", "gemm ms", "matmul ms", "mm/gemm")
    rows = []
    for r in layers:
        m, sh = r["methods"], r["shape"]
        roof = (fmt(r.get("roofline", {}).get("bound_us"), ".2f"), fmt(m["ours"].get("pct_of_bound"), ".1f"))
        rows.append((r["dtype"], str(r["batch"]), r["layer"], f"{sh['c']}x{sh['k']} {sh['r']}x{sh['s']}/{sh['stride']}",
                     fmt(m["ours"].get("ms"), ".4f"), fmt(m["ours"].get("tflops"), ".1f"), fmt(m["ours"].get("gbs"), ".0f"),
                     *(roof if bounded else ()), fmt(m["unfused"].get("ms"), ".4f"), fmt(m["cudnn_conv"].get("ms"), ".4f"),
                     fmt(r["ratios"]["unfused_over_ours"], ".2f"), fmt(r["ratios"]["cudnn_conv_over_ours"], ".2f"),
                     fmt(m.get("ours_gemm", {}).get("ms"), ".4f"), fmt(m.get("matmul", {}).get("ms"), ".4f"),
                     fmt(r["ratios"].get("matmul_over_ours_gemm"), ".2f")))
    _table(head, rows)
    if adds:
        print()
        _table(("dtype", "shape", "add_act ms", "add GB/s", "copy ms", "copy GB/s", "add/copy BW"),
               [(a["dtype"], "x".join(map(str, a["shape"])), fmt(a["add_act"]["ms"], ".4f"), fmt(a["add_act"]["gbs"], ".0f"),
                 fmt(a["copy"]["ms"], ".4f"), fmt(a["copy"]["gbs"], ".0f"), fmt(a["bandwidth_ratio"], ".2f"))
                for a in adds])
    print()
    for key, s in summary.items():
        if key == "add_act":
            print(f"add_act: bandwidth vs copy geomean {fmt(s['geomean_bandwidth_vs_copy'], '.2f')}, "
                  f"min {fmt(s['min_bandwidth_vs_copy'], '.2f')}")
            goals = s["goal"]
        else:
            print(f"{key}: unfused/ours geomean {fmt(s['geomean_unfused_over_ours'], '.2f')} "
                  f"(min {fmt(s['min_unfused_over_ours'], '.2f')}), cudnn-conv/ours geomean "
                  f"{fmt(s['geomean_cudnn_conv_over_ours'], '.2f')}, matmul/1x1-gemm geomean "
                  f"{fmt(s['geomean_matmul_over_ours_gemm'], '.2f')}")
            if s.get("roofline"):
                print("  " + network_line(s["roofline"]))
            goals = s["goals"]
        for goal, met in goals.items():
            print(f"    {'met   ' if met else 'MISSED'}  {goal}")


def _table(head: tuple, rows: list[tuple]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for i, row in enumerate((head, *rows)):
        print("  ".join(str(x).rjust(w) if j > 2 else str(x).ljust(w) for j, (x, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def machine(device: str) -> dict:
    """Who measured: GPU, software versions, host, and the rbench harness's full identity when available."""
    import torch
    import triton

    env = {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
           "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
           "hip": torch.version.hip, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                   gpu_memory_bytes=props.total_memory, sm_count=props.multi_processor_count,
                   cudnn=torch.backends.cudnn.version())
    try:
        env["git_sha"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                        cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_sha"] = None
    try:  # the harness's identity: driver, clocks, power limit, ... (optional here)
        from rbench.hw import detect
        env["rbench_environment"] = detect.environment(detect.detect(device))
    except Exception as e:
        env["rbench_environment"] = {"unavailable": f"{type(e).__name__}: {e}"[:200]}
    return env


def other_gpu_processes() -> list[int] | None:
    """Pids of other processes on GPU 0 (this process must already hold a context), or None if unknown.

    rbench's own telemetry source first (NVML, amdsmi: it maps CUDA_VISIBLE_DEVICES and container pid
    namespaces), then `nvidia-smi --query-compute-apps`.
    """
    try:
        from rbench.hw import detect

        monitor = detect.monitor_for(detect.detect("cuda"))
        try:
            source = getattr(monitor, "source", None)
            pids = source.processes() if source is not None else None
        finally:
            monitor.close()
        if pids is not None:
            return list(pids)
    except Exception:  # noqa: BLE001 - fall back to nvidia-smi
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    pids = {int(x) for x in out.stdout.split() if x.strip().isdigit()}
    return sorted(pids - {os.getpid()})


class ResultFile:
    """The benchmark's JSON file, rewritten whole (atomically) after every layer.

    With `resume`, the layers and add_act shapes an earlier run of the same GPU left in the file are kept
    and not measured again.
    """

    def __init__(self, path: Path, env: dict, timing: str, resume: bool, roofline: Bounds | None = None):
        self.path, self.env, self.timing, self.roofline = path, env, timing, roofline
        self.layers: list[dict] = []
        self.adds: list[dict] = []
        self.other_processes: list[int] = []
        self.seconds = 0.0
        if resume and path.exists():
            old = json.loads(path.read_text())
            if old.get("kind") != KIND:
                raise ValueError(f"{path}: not a kernel benchmark file (kind {old.get('kind')!r})")
            if old["env"].get("gpu") != env.get("gpu"):
                raise ValueError(f"{path} was measured on {old['env'].get('gpu') or 'a CPU'}, this is "
                                 f"{env.get('gpu') or 'a CPU'}: give another --json")
            self.layers, self.adds = old.get("layers", []), old.get("add_act", [])
            self.other_processes = old.get("other_processes_seen", [])
            self.seconds = old.get("seconds", 0.0)

    def done(self) -> set[tuple]:
        return ({("layer", r["dtype"], r["batch"], r["layer"]) for r in self.layers}
                | {("add", a["dtype"], tuple(a["shape"])) for a in self.adds})

    def write(self, complete: bool, left: list[str], seconds: float) -> dict:
        summary = summarize(self.layers, self.adds)
        if self.roofline is not None:  # every layer's bound (kept ones too) and each dtype/batch's network's
            for r in self.layers:
                self.roofline.annotate(r)
            for key, net in self.roofline.summary(self.layers).items():
                summary[key]["roofline"] = net
        record = {"kind": KIND, "env": self.env, "seconds": self.seconds + seconds, "timing": self.timing,
                  "complete": complete, "left": left, "other_processes_seen": self.other_processes,
                  "goals": GOALS, "layers": self.layers, "add_act": self.adds, "summary": summary}
        if self.roofline is not None:
            record["roofline"] = self.roofline.describe()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, self.path)
        return record


def wait_until_alone(query: Callable[[], list[int] | None], wait_s: float,
                     sleep: Callable[[float], None], clock: Callable[[], float]) -> list[int] | None:
    """Poll `query` until no other process is on the GPU or `wait_s` passed; the last answer."""
    deadline = clock() + wait_s
    others = query()
    while others and clock() < deadline:
        sleep(min(2.0, max(deadline - clock(), 0.0)))
        others = query()
    return others
