"""Vendor peak figures of known accelerators, for "achieved TFLOP/s as a fraction of peak".

Dense (no structured sparsity) peak TFLOP/s per rbench precision and peak memory bandwidth, at boost
clock, from each vendor's datasheet; NVIDIA's datasheets print tensor-core figures *with* sparsity,
halved here. `fp32` is the peak of plain FP32 math: CUDA cores on NVIDIA (TF32 off), the matrix cores'
FP32 rate on AMD CDNA (rocBLAS/hipBLASLt use them for FP32 GEMM), the vector engines on Intel.
A precision the device has no fast path for is absent (no TF32 on V100, T4 or MI250X).

A device is looked up by the name torch reports (`torch.cuda.get_device_name`), matched against the
patterns in order, so the more specific patterns come first. Extend or correct the table for one
report with `rbench report --peaks FILE` (see `load_extra`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCE = "vendor datasheet"
AMP = {"amp_fp16": "fp16", "amp_bf16": "bf16"}


@dataclass(frozen=True)
class Peak:
    name: str
    pattern: str  # regular expression on the device name, case-insensitive
    tflops: Mapping[str, float]  # precision -> dense peak TFLOP/s
    memory_tb_s: float | None
    source: str = SOURCE
    note: str = ""

    def matches(self, device_name: str) -> bool:
        return re.search(self.pattern, device_name, re.IGNORECASE) is not None


def _p(name: str, pattern: str, fp32: float, tf32: float | None, fp16: float, bf16: float | None,
       memory_tb_s: float, note: str = "") -> Peak:
    t = {"fp32": fp32, "fp16": fp16}
    if tf32:
        t["tf32"] = tf32
    if bf16:
        t["bf16"] = bf16
    return Peak(name, pattern, t, memory_tb_s, note=note)


TABLE: list[Peak] = [
    _p("NVIDIA GH200", r"GH200", 66.9, 494.7, 989.4, 989.4, 4.0, "memory: 96 GB HBM3 part; the 144 GB HBM3e part has 4.9 TB/s"),
    _p("NVIDIA H200 NVL", r"H200 NVL", 60.0, 417.5, 835.5, 835.5, 4.8),
    _p("NVIDIA H200 SXM", r"H200", 66.9, 494.7, 989.4, 989.4, 4.8),
    _p("NVIDIA H100 NVL", r"H100 NVL", 60.0, 417.5, 835.5, 835.5, 3.9),
    _p("NVIDIA H100 PCIe", r"H100 PCIe", 51.2, 378.0, 756.5, 756.5, 2.0),
    _p("NVIDIA H100 SXM", r"H100", 66.9, 494.7, 989.4, 989.4, 3.35),
    _p("NVIDIA A100 80GB PCIe", r"A100.*80GB PCIe|A100-PCIE-80GB", 19.5, 156.0, 312.0, 312.0, 1.935),
    _p("NVIDIA A100 40GB PCIe", r"A100-PCIE-40GB|A100.*PCIe", 19.5, 156.0, 312.0, 312.0, 1.555),
    _p("NVIDIA A100 SXM 40GB", r"A100-SXM4-40GB", 19.5, 156.0, 312.0, 312.0, 1.555),
    _p("NVIDIA A100 SXM 80GB", r"A100", 19.5, 156.0, 312.0, 312.0, 2.039),
    _p("NVIDIA L40S", r"L40S", 91.6, 183.0, 362.05, 362.05, 0.864),
    _p("NVIDIA L4", r"\bL4\b", 30.3, 60.0, 121.0, 121.0, 0.3),
    _p("NVIDIA A10", r"\bA10\b", 31.2, 62.5, 125.0, 125.0, 0.6),
    _p("NVIDIA V100 SXM2", r"V100-SXM|V100 SXM", 15.7, None, 125.0, None, 0.9),
    _p("NVIDIA V100 PCIe", r"V100", 14.0, None, 112.0, None, 0.9),
    _p("NVIDIA T4", r"\bT4\b", 8.1, None, 65.0, None, 0.32),
    _p("AMD Instinct MI325X", r"MI325X", 163.4, 653.7, 1307.4, 1307.4, 6.0, "fp32: matrix cores"),
    _p("AMD Instinct MI300X", r"MI300X", 163.4, 653.7, 1307.4, 1307.4, 5.3, "fp32: matrix cores"),
    _p("AMD Instinct MI250X", r"MI250X", 95.7, None, 383.0, 383.0, 3.2768, "fp32: matrix cores"),
    _p("AMD Instinct MI250", r"MI250", 90.5, None, 362.1, 362.1, 3.2768, "fp32: matrix cores"),
    _p("Intel Data Center GPU Max 1550", r"Max 1550", 52.4, 419.4, 838.9, 838.9, 3.2768),
    _p("Intel Data Center GPU Max 1100", r"Max 1100", 22.2, 177.9, 355.8, 355.8, 1.2288),
]


@dataclass
class PeakTable:
    entries: list[Peak] = field(default_factory=lambda: list(TABLE))

    def lookup(self, device_name: str | None) -> Peak | None:
        if not device_name:
            return None
        return next((p for p in self.entries if p.matches(device_name)), None)

    def tflops(self, device_name: str | None, precision: str) -> float | None:
        """The dense peak for this precision (amp_* use their low-precision peak), or None if unknown."""
        peak = self.lookup(device_name)
        return None if peak is None else peak.tflops.get(AMP.get(precision, precision))


def load_extra(path: str | Path) -> list[Peak]:
    """Peaks from a JSON or YAML file, checked before the built-in table. Each entry:

        {"name": "AMD EPYC 9654", "pattern": "EPYC 9654", "tflops": {"fp32": 5.4, "bf16": 10.8},
         "memory_tb_s": 0.46, "source": "vendor datasheet"}
    """
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data: Any = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of peak entries")
    out = []
    allowed = {"name", "pattern", "tflops", "memory_tb_s", "source", "note"}
    for i, e in enumerate(data):
        if not isinstance(e, dict) or not {"name", "pattern", "tflops"} <= set(e):
            raise ValueError(f"{path}: entry {i}: needs name, pattern and tflops")
        unknown = set(e) - allowed
        if unknown:
            raise ValueError(f"{path}: entry {i}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        out.append(Peak(e["name"], e["pattern"], {k: float(v) for k, v in e["tflops"].items()},
                        e.get("memory_tb_s"), e.get("source", "user-supplied"), e.get("note", "")))
    return out
