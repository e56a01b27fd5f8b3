"""The layers the kernel benchmark times and their roofline bounds: ResNet-50's distinct convolutions (taken
from rbench_kernels.roofline, the one list of them), the GPU's peaks, each layer's bound and how close a
measured time comes to it (% of bound = bound / achieved), and the whole network's bound per batch and dtype.

Imported by benchmarks/kernel_bench.py.  rbench_kernels is imported inside the functions, never at the top:
--cpu-smoke sets TRITON_INTERPRET first, and the kernels read it when they are imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rbench_kernels.roofline import ConvLayer

DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}  # a record's dtype -> roofline's name
BOUNDED = ("ours", "unfused")  # the methods that do the layer's whole work (cudnn_conv and the GEMMs do less)


def _roofline() -> ModuleType:
    from rbench_kernels import roofline

    return roofline


@dataclass(frozen=True)
class Layer:
    """One distinct ResNet-50 convolution and the epilogue it has in the network."""

    name: str  # first module with this shape, e.g. layer2.0.conv2
    count: int  # how many convolutions of the model have this shape
    c: int
    k: int
    r: int
    s: int
    stride: int
    padding: int
    h: int
    w: int
    residual: bool  # a bottleneck's conv3: the identity is added before the ReLU
    relu: bool  # every conv but the downsample shortcut

    @property
    def is_1x1(self) -> bool:
        return self.r == self.s == 1 and self.padding == 0

    @property
    def pq(self) -> tuple[int, int]:
        conv = self.conv(1)
        return conv.p, conv.q

    def conv(self, batch: int, dtype: str = "fp16") -> ConvLayer:
        """This layer at `batch` as roofline sees it (`dtype`: fp16, bf16 or fp32)."""
        return _roofline().ConvLayer(self.name, batch, self.c, self.h, self.w, self.k, self.r, self.s, self.stride,
                                     self.padding, residual=self.residual, relu=self.relu, dtype=dtype)


def resnet50_layers(image: int = 224) -> list[Layer]:
    """The distinct convolutions of torchvision's resnet50 in forward order, each named after its first use."""
    seen: dict[tuple, Layer] = {}
    for x in _roofline().resnet_layers("resnet50", 1, image):
        key = (x.c, x.k, x.r, x.s, x.stride, x.padding, x.h, x.w, x.residual, x.relu)
        first = seen.get(key)
        seen[key] = Layer(first.name if first else x.name, (first.count if first else 0) + 1, *key)
    return list(seen.values())


def smoke_layers() -> list[Layer]:
    """Tiny stand-ins for --cpu-smoke: a 3x3, a 1x1 with residual, a stride-2 downsample."""
    return [Layer("smoke.3x3", 1, 16, 16, 3, 3, 1, 1, 6, 6, False, True),
            Layer("smoke.conv3", 1, 16, 32, 1, 1, 1, 0, 6, 6, True, True),
            Layer("smoke.downsample", 1, 16, 32, 1, 1, 2, 0, 6, 6, False, False)]


# the network a run's summary is bounded against: every convolution at (batch, roofline dtype)
NETWORKS: dict[str, Callable[[int, str], list[ConvLayer]]] = {
    "resnet50": lambda batch, dtype: _roofline().resnet_layers("resnet50", batch, dtype=dtype),
    "smoke": lambda batch, dtype: [x.conv(batch, dtype) for x in smoke_layers() for _ in range(x.count)],
}


@dataclass(frozen=True)
class Peaks:
    """What a run's bounds assume: dense fp16/bf16 tensor-core FLOP/s and memory bytes/s, and from where."""

    flops: float
    bandwidth: float
    device: str | None  # the roofline.DEVICES key, None when both came from the command line
    source: str


def peaks_for(gpu: str | None, tflops: float | None = None, gbs: float | None = None) -> tuple[Peaks | None, str]:
    """The GPU's peaks (roofline.DEVICES via device_for, each overridable) or None, and a line saying which.

    Raises ValueError for a non-positive peak, or for only one of the two on a GPU without an entry.
    """
    rf = _roofline()
    for flag, value in (("--peak-tflops", tflops), ("--peak-gbs", gbs)):
        if value is not None and not value > 0:
            raise ValueError(f"{flag} must be a positive number, got {value:g}")
    key = rf.device_for(gpu)
    if key is None and (tflops is None) != (gbs is None):
        raise ValueError(f"{gpu or 'this device'} has no roofline.DEVICES entry: give both --peak-tflops and "
                         "--peak-gbs")
    if key is None and tflops is None:
        return None, (f"no roofline peaks for {gpu or 'this device (CPU smoke run)'}, so no bound or % of bound: "
                      "pass --peak-tflops T --peak-gbs G (dense fp16 tensor-core TFLOP/s, memory GB/s), or add a "
                      "Device to DEVICES and a rule to GPU_NAMES in kernels/rbench_kernels/roofline.py")
    base = rf.DEVICES[key] if key else None
    flops = tflops * 1e12 if tflops is not None else base.flops
    bandwidth = gbs * 1e9 if gbs is not None else base.bandwidth
    given = [flag for flag, v in (("--peak-tflops", tflops), ("--peak-gbs", gbs)) if v is not None]
    source = " with ".join(filter(None, [f"roofline.DEVICES[{key!r}] ({base.name})" if key else None,
                                         " and ".join(given)]))
    return Peaks(flops, bandwidth, key, source), (f"roofline peaks: {flops / 1e12:g} TFLOP/s, "
                                                  f"{bandwidth / 1e9:g} GB/s from {source}")


def _pct(bound_us: float | None, achieved_us: float | None) -> float | None:
    return 100.0 * bound_us / achieved_us if bound_us and achieved_us else None


class Bounds:
    """One run's roofline: the peaks it assumes and the network its per-batch summary is bounded against."""

    def __init__(self, peaks: Peaks | None, note: str, network: str = "resnet50"):
        self.peaks, self.note, self.network = peaks, note, network

    def describe(self) -> dict[str, Any]:
        """The JSON file's top-level `roofline`: peaks, their source and the network (or why there are none)."""
        out: dict[str, Any] = {"network": self.network, "note": self.note}
        if self.peaks:
            out.update(device=self.peaks.device, flops=self.peaks.flops, bandwidth=self.peaks.bandwidth,
                       source=self.peaks.source)
        return out

    def _bound(self, conv: ConvLayer) -> Any:
        return _roofline().layer_bound(conv, flops=self.peaks.flops, bandwidth=self.peaks.bandwidth)

    def annotate(self, record: dict) -> None:
        """Add the layer's bound (`roofline`) and each whole-work method's `pct_of_bound` to a layer record.

        A pure function of the record's shape, batch and dtype: kept records of a resumed file are redone.
        """
        record.pop("roofline", None)  # an earlier run's, perhaps with other peaks
        for m in record["methods"].values():
            m.pop("pct_of_bound", None)
        if not self.peaks:
            return
        b = self._bound(Layer(**record["shape"]).conv(record["batch"], DTYPES[record["dtype"]]))
        record["roofline"] = {"bound_us": b.seconds * 1e6, "compute_us": b.compute_s * 1e6,
                              "memory_us": b.memory_s * 1e6, "limit": b.limit, "flops": b.flops, "bytes": b.bytes,
                              "intensity": b.intensity}
        for name in BOUNDED:
            m = record["methods"].get(name, {})
            if m.get("ms"):
                m["pct_of_bound"] = _pct(b.seconds * 1e6, m["ms"] * 1e3)

    def summary(self, layers: list[dict]) -> dict[str, dict]:
        """Per "dtype/batchN": the network's bound, and the measured layers' count-weighted bound and times.

        `*_pct_of_bound` compares like with like: the measured layers' bound over their achieved time (all
        of them in a complete run, where `measured_bound_us` is `network_bound_us`).
        """
        if not self.peaks:
            return {}
        out = {}
        for dtype, batch in sorted({(r["dtype"], r["batch"]) for r in layers}):
            rows = [r for r in layers if (r["dtype"], r["batch"]) == (dtype, batch) and "roofline" in r]
            net = _roofline().network_bound(NETWORKS[self.network](batch, DTYPES[dtype]), flops=self.peaks.flops,
                                            bandwidth=self.peaks.bandwidth)
            s = {"network": self.network, "convolutions": len(net.layers), "network_bound_us": net.seconds * 1e6,
                 "network_images_per_s": net.images_per_s,
                 "memory_bound_convolutions": sum(b.limit == "memory" for _, b in net.layers),
                 "convolutions_measured": sum(r["count"] for r in rows),
                 "measured_bound_us": sum(r["count"] * r["roofline"]["bound_us"] for r in rows)}
            for name in BOUNDED:
                times = [r["methods"].get(name, {}).get("ms") for r in rows]
                total = sum(r["count"] * t * 1e3 for r, t in zip(rows, times)) if all(times) and rows else None
                s[f"{name}_us"], s[f"{name}_pct_of_bound"] = total, _pct(s["measured_bound_us"], total)
            out[f"{dtype}/batch{batch}"] = s
        return out


def network_line(net: dict) -> str:
    """A dtype/batch's network bound, and ours and unfused against it, for the printed summary."""
    part = "" if net["convolutions_measured"] == net["convolutions"] else (
        f" (the {net['convolutions_measured']} of {net['convolutions']} convolutions measured: bound "
        f"{net['measured_bound_us']:.1f} us)")
    figures = ", ".join(f"{name} {_us(net[f'{name}_us'])} = {_fmt_pct(net[f'{name}_pct_of_bound'])} of bound"
                        for name in BOUNDED)
    return (f"{net['network']} roofline {net['network_bound_us']:.1f} us "
            f"({net['network_images_per_s']:,.0f} img/s, {net['memory_bound_convolutions']} of "
            f"{net['convolutions']} convolutions memory-bound){part}; {figures}")


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} us"


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} %"
