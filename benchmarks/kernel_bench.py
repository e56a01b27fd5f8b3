"""Kernel benchmark: rbench_kernels against PyTorch/cuDNN on every ResNet-50 layer shape (needs a GPU).

For each distinct convolution of torchvision's ResNet-50 at 224x224, each batch size and dtype, it
times
  ours        the fused kernel (conv1x1_bn_act for 1x1 layers, conv_bn_act otherwise), with the
              layer's real epilogue (BN, + residual for a block's last conv, ReLU unless downsample)
  unfused     what eager PyTorch runs: cuDNN conv -> F.batch_norm (eval) -> [+= residual] -> relu_
  cudnn_conv  cuDNN's convolution alone (no BN, no add, no ReLU)
  and for the 1x1 layers, the same GEMM both ways without the residual/ReLU epilogue:
  ours_gemm   conv1x1_bn_act(relu=False) (scale/shift only), against
  matmul      torch.matmul on (N·P·Q, C) @ (C, K) -- cuBLAS
plus add_act against a device copy of the same tensor on ResNet-50's block outputs (bandwidth).

Timing: channels_last tensors, cudnn.benchmark on; every method is warmed up (autotuning, cuDNN's
algorithm search) and then captured in a CUDA graph of calls that cycle through enough input sets
(>= 2 x 50 MB, beyond an H100's L2) so that nothing is served from cache; the graph is replayed
many times between CUDA events and the per-call time is the median replay time / calls.  Graphs
take the Python launch cost out, which at batch 1 would otherwise be the whole measurement.

Usage:  python benchmarks/kernel_bench.py [--out DIR] [--batch 256 1] [--dtype fp16 bf16] [--quick]
Writes DIR/kernels-<gpu>-<time>.json (machine, software, every figure) and prints the tables.
Without a CUDA GPU it prints one line and exits 0 (`--cpu-smoke` runs the code paths on tiny
shapes under the Triton interpreter, for tests; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

L2_ROTATION_BYTES = 2 * 50 * 2**20  # twice an H100's 50 MB L2
GOALS = {"fused_vs_unfused_geomean": 1.15, "fused_vs_unfused_each": 1.0, "fused_vs_cudnn_conv": 0.9,
         "gemm_vs_matmul": 0.9, "add_vs_copy_bandwidth": 0.85}


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
        return ((self.h + 2 * self.padding - self.r) // self.stride + 1,
                (self.w + 2 * self.padding - self.s) // self.stride + 1)


def resnet50_layers(image: int = 224) -> list[Layer]:
    """The distinct convolutions of torchvision's resnet50, from its modules and a meta-device pass."""
    import torch
    import torchvision

    model = torchvision.models.resnet50(weights=None).eval().to("meta")
    seen: dict[tuple, Layer] = {}
    shapes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=n: shapes.__setitem__(name, tuple(inp[0].shape[2:])))
             for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.empty(1, 3, image, image, device="meta"))
    for h in hooks:
        h.remove()
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Conv2d):
            continue
        h, w = shapes[name]
        residual = name.endswith("conv3")
        relu = "downsample" not in name
        key = (m.in_channels, m.out_channels, *m.kernel_size, m.stride[0], m.padding[0], h, w, residual, relu)
        if key in seen:
            seen[key] = Layer(**{**asdict(seen[key]), "count": seen[key].count + 1})
        else:
            seen[key] = Layer(name, 1, m.in_channels, m.out_channels, *m.kernel_size, m.stride[0], m.padding[0],
                              h, w, residual, relu)
    return list(seen.values())


def smoke_layers() -> list[Layer]:
    """Tiny stand-ins for --cpu-smoke: a 3x3, a 1x1 with residual, a stride-2 downsample."""
    return [Layer("smoke.3x3", 1, 16, 16, 3, 3, 1, 1, 6, 6, False, True),
            Layer("smoke.conv3", 1, 16, 32, 1, 1, 1, 0, 6, 6, True, True),
            Layer("smoke.downsample", 1, 16, 32, 1, 1, 2, 0, 6, 6, False, False)]


class Timer:
    """Per-call time of `fn` in ms: CUDA-graph replays between events on a GPU, perf_counter on a CPU."""

    def __init__(self, device: str, min_replays: int, min_calls: int, graphs: bool):
        self.device, self.min_replays, self.min_calls, self.graphs = device, min_replays, min_calls, graphs

    def capture(self, fn: Callable[[int], object], n_sets: int) -> tuple[Callable[[], None], int, str]:
        """Warm `fn` up, then capture `calls` calls cycling through the input sets in a CUDA graph.

        Returns (replay, calls, mode); replay() re-runs them (eagerly when capture is off or fails).
        """
        import torch

        # warm-up: autotuning, cuDNN algorithm search, allocator growth -- never timed
        for i in range(max(3, n_sets)):
            fn(i % n_sets)
        torch.cuda.synchronize()
        calls = max(n_sets, self.min_calls)
        calls = n_sets * math.ceil(calls / n_sets)  # every set equally often
        if self.graphs:
            try:
                graph = torch.cuda.CUDAGraph()
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    fn(0)  # one more warm-up on the capture stream
                torch.cuda.current_stream().wait_stream(stream)
                with torch.cuda.graph(graph):
                    for i in range(calls):
                        fn(i % n_sets)
                return graph.replay, calls, "cuda graph"
            except Exception as e:  # some call cannot be captured: time it eagerly
                mode = f"eager (graph capture failed: {type(e).__name__})"
        else:
            mode = "eager"

        def replay() -> None:
            for i in range(calls):
                fn(i % n_sets)

        return replay, calls, mode

    def __call__(self, fn: Callable[[int], object], n_sets: int) -> dict:
        import torch

        if self.device != "cuda":
            for i in range(max(3, n_sets)):
                fn(i % n_sets)
            samples = []
            for i in range(self.min_replays):
                t0 = time.perf_counter()
                fn(i % n_sets)
                samples.append((time.perf_counter() - t0) * 1e3)
            return {"ms": statistics.median(samples), "samples": len(samples), "mode": "host clock (smoke)"}
        replay, calls, mode = self.capture(fn, n_sets)
        replay()
        torch.cuda.synchronize()
        # size the number of replays so that the timed window is >= ~50 ms
        t0 = time.perf_counter()
        replay()
        torch.cuda.synchronize()
        once = max(time.perf_counter() - t0, 1e-6)
        replays = max(self.min_replays, min(200, int(0.05 / once)))
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
        for start, end in events:
            start.record()
            replay()
            end.record()
        torch.cuda.synchronize()
        per_call = sorted(s.elapsed_time(e) / calls for s, e in events)
        return {"ms": statistics.median(per_call), "min_ms": per_call[0], "samples": replays, "calls_per_sample": calls,
                "mode": mode}


MAX_SETS = 512  # --cpu-smoke lowers it to 1


def _sets_needed(bytes_per_set: int) -> int:
    """Input sets to cycle through so that the working set is >= L2_ROTATION_BYTES (at least 2)."""
    return min(MAX_SETS, max(2, math.ceil(L2_ROTATION_BYTES / max(bytes_per_set, 1))))


def make_case(layer: Layer, batch: int, dtype, device: str) -> tuple[dict, dict[str, tuple[Callable, int]]]:
    """The record skeleton for one layer and its methods as {name: (fn(set_index), number of input sets)}."""
    import torch
    import torch.nn.functional as F

    import rbench_kernels as rk

    p, q = layer.pq
    esize = torch.empty((), dtype=dtype).element_size()
    x_bytes = batch * layer.c * layer.h * layer.w * esize
    w_bytes = layer.k * layer.c * layer.r * layer.s * esize
    y_bytes = batch * layer.k * p * q * esize
    set_bytes = x_bytes + w_bytes + (y_bytes if layer.residual else 0)
    n_sets = _sets_needed(set_bytes)
    g = torch.Generator(device=device).manual_seed(0)
    cl = torch.channels_last

    def randn(*shape, scale=1.0):
        t = (torch.randn(*shape, generator=g, device=device) * scale).to(dtype)
        return t.contiguous(memory_format=cl) if t.dim() == 4 else t

    fan_in = layer.c * layer.r * layer.s
    sets = []
    for _ in range(n_sets):
        bn = dict(running_mean=torch.randn(layer.k, device=device, generator=g) * 0.1,
                  running_var=torch.rand(layer.k, device=device, generator=g) + 0.5,
                  weight=torch.rand(layer.k, device=device, generator=g) + 0.5,
                  bias=torch.randn(layer.k, device=device, generator=g) * 0.1)
        scale = bn["weight"] / torch.sqrt(bn["running_var"] + 1e-5)
        shift = bn["bias"] - bn["running_mean"] * scale
        sets.append(dict(
            x=randn(batch, layer.c, layer.h, layer.w),
            w=randn(layer.k, layer.c, layer.r, layer.s, scale=fan_in ** -0.5),
            res=randn(batch, layer.k, p, q) if layer.residual else None,
            scale=scale.contiguous(), shift=shift.contiguous(),
            # eager PyTorch after model.half(): BN parameters in the activation dtype
            bn={k: v.to(dtype) for k, v in bn.items()},
        ))

    def ours(i):
        s = sets[i]
        if layer.is_1x1:
            return rk.conv1x1_bn_act(s["x"], s["w"], s["scale"], s["shift"], stride=layer.stride,
                                     residual=s["res"], relu=layer.relu)
        return rk.conv_bn_act(s["x"], s["w"], s["scale"], s["shift"], stride=layer.stride, padding=layer.padding,
                              residual=s["res"], relu=layer.relu)

    def unfused(i):
        s = sets[i]
        y = F.conv2d(s["x"], s["w"], None, layer.stride, layer.padding)
        b = s["bn"]
        y = F.batch_norm(y, b["running_mean"], b["running_var"], b["weight"], b["bias"], False, 0.0, 1e-5)
        if s["res"] is not None:
            y += s["res"]
        if layer.relu:
            y.relu_()
        return y

    def cudnn_conv(i):
        s = sets[i]
        return F.conv2d(s["x"], s["w"], None, layer.stride, layer.padding)

    flops = 2.0 * batch * p * q * layer.k * layer.c * layer.r * layer.s
    min_bytes = x_bytes + w_bytes + y_bytes * (2 if layer.residual else 1)
    out = {"layer": layer.name, "count": layer.count, "batch": batch, "dtype": str(dtype).replace("torch.", ""),
           "shape": asdict(layer), "gemm": {"M": batch * p * q, "N": layer.k, "K": layer.c * layer.r * layer.s},
           "flops": flops, "min_bytes": min_bytes, "input_sets": n_sets, "methods": {}}
    methods: dict[str, tuple[Callable, int]] = {"ours": (ours, n_sets), "unfused": (unfused, n_sets),
                                                "cudnn_conv": (cudnn_conv, n_sets)}
    if layer.is_1x1:
        a_sets = [randn(batch * p * q, layer.c) for _ in range(_sets_needed(batch * p * q * layer.c * esize + w_bytes))]
        w2 = [s["w"].reshape(layer.k, layer.c) for s in sets]
        n_a = len(a_sets)

        def ours_gemm(i):
            s = sets[i % n_sets]
            return rk.conv1x1_bn_act(s["x"], s["w"], s["scale"], s["shift"], stride=layer.stride, relu=False)

        def matmul(i):
            return torch.matmul(a_sets[i % n_a], w2[i % n_sets].t())

        methods.update(ours_gemm=(ours_gemm, n_sets), matmul=(matmul, n_a))
    return out, methods


def bench_layer(layer: Layer, batch: int, dtype, device: str, timer: Timer) -> dict:
    """Time every method on one layer; ratios > 1 mean ours is faster."""
    out, methods = make_case(layer, batch, dtype, device)
    flops, min_bytes = out["flops"], out["min_bytes"]
    for name, (fn, sets_for) in methods.items():
        try:
            r = timer(fn, sets_for)
        except Exception as e:  # one failing method must not lose the others
            r = {"error": f"{type(e).__name__}: {e}"[:300]}
        if "ms" in r:
            r["tflops"] = flops / (r["ms"] * 1e-3) / 1e12
            r["gbs"] = min_bytes / (r["ms"] * 1e-3) / 1e9
        out["methods"][name] = r
    ms = {k: v.get("ms") for k, v in out["methods"].items()}

    def ratio(a, b):
        return ms[a] / ms[b] if ms.get(a) and ms.get(b) else None

    out["ratios"] = {"unfused_over_ours": ratio("unfused", "ours"), "cudnn_conv_over_ours": ratio("cudnn_conv", "ours")}
    if layer.is_1x1:
        out["ratios"]["matmul_over_ours_gemm"] = ratio("matmul", "ours_gemm")
    return out


def bench_add(shape: tuple[int, ...], dtype, device: str, timer: Timer) -> dict:
    import torch

    import rbench_kernels as rk

    esize = torch.empty((), dtype=dtype).element_size()
    numel = math.prod(shape)
    n_sets = _sets_needed(2 * numel * esize)
    cl = torch.channels_last
    xs = [torch.randn(shape, device=device).to(dtype).contiguous(memory_format=cl) for _ in range(n_sets)]
    rs = [torch.randn(shape, device=device).to(dtype).contiguous(memory_format=cl) for _ in range(n_sets)]
    dst = torch.empty_like(xs[0])
    res = {"shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "input_sets": n_sets}
    add = timer(lambda i: rk.add_act(xs[i], rs[i], relu=True), n_sets)
    copy = timer(lambda i: dst.copy_(xs[i]), n_sets)
    res["add_act"] = {**add, "gbs": 3 * numel * esize / (add["ms"] * 1e-3) / 1e9}
    res["copy"] = {**copy, "gbs": 2 * numel * esize / (copy["ms"] * 1e-3) / 1e9}
    res["bandwidth_ratio"] = res["add_act"]["gbs"] / res["copy"]["gbs"]
    return res


def geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def summarize(layers: list[dict], adds: list[dict]) -> dict:
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


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_tables(layers: list[dict], adds: list[dict], summary: dict) -> None:
    head = ("dtype", "batch", "layer", "CxK RxS/s", "ours ms", "TFLOP/s", "GB/s", "unfused ms", "cudnn ms",
            "unf/ours", "cudnn/ours", "gemm ms", "matmul ms", "mm/gemm")
    rows = []
    for r in layers:
        m, sh = r["methods"], r["shape"]
        rows.append((r["dtype"], str(r["batch"]), r["layer"], f"{sh['c']}x{sh['k']} {sh['r']}x{sh['s']}/{sh['stride']}",
                     _fmt(m["ours"].get("ms"), ".4f"), _fmt(m["ours"].get("tflops"), ".1f"), _fmt(m["ours"].get("gbs"), ".0f"),
                     _fmt(m["unfused"].get("ms"), ".4f"), _fmt(m["cudnn_conv"].get("ms"), ".4f"),
                     _fmt(r["ratios"]["unfused_over_ours"], ".2f"), _fmt(r["ratios"]["cudnn_conv_over_ours"], ".2f"),
                     _fmt(m.get("ours_gemm", {}).get("ms"), ".4f"), _fmt(m.get("matmul", {}).get("ms"), ".4f"),
                     _fmt(r["ratios"].get("matmul_over_ours_gemm"), ".2f")))
    _table(head, rows)
    if adds:
        print()
        _table(("dtype", "shape", "add_act ms", "add GB/s", "copy ms", "copy GB/s", "add/copy BW"),
               [(a["dtype"], "x".join(map(str, a["shape"])), _fmt(a["add_act"]["ms"], ".4f"), _fmt(a["add_act"]["gbs"], ".0f"),
                 _fmt(a["copy"]["ms"], ".4f"), _fmt(a["copy"]["gbs"], ".0f"), _fmt(a["bandwidth_ratio"], ".2f"))
                for a in adds])
    print()
    for key, s in summary.items():
        if key == "add_act":
            print(f"add_act: bandwidth vs copy geomean {_fmt(s['geomean_bandwidth_vs_copy'], '.2f')}, "
                  f"min {_fmt(s['min_bandwidth_vs_copy'], '.2f')}")
            goals = s["goal"]
        else:
            print(f"{key}: unfused/ours geomean {_fmt(s['geomean_unfused_over_ours'], '.2f')} "
                  f"(min {_fmt(s['min_unfused_over_ours'], '.2f')}), cudnn-conv/ours geomean "
                  f"{_fmt(s['geomean_cudnn_conv_over_ours'], '.2f')}, matmul/1x1-gemm geomean "
                  f"{_fmt(s['geomean_matmul_over_ours_gemm'], '.2f')}")
            goals = s["goals"]
        for goal, met in goals.items():
            print(f"    {'met   ' if met else 'MISSED'}  {goal}")


def _table(head, rows) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results", help="directory for the JSON file (default: ./results)")
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1])
    parser.add_argument("--dtype", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16", "fp32"])
    parser.add_argument("--layers", default=None, help="only layers whose name contains this text")
    parser.add_argument("--quick", action="store_true", help="fewer timing samples")
    parser.add_argument("--no-graphs", action="store_true", help="time eager calls instead of CUDA-graph replays")
    parser.add_argument("--no-add", action="store_true", help="skip the add_act bandwidth test")
    parser.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before rbench_kernels is imported
    import torch

    if args.cpu_smoke:
        device = "cpu"
        global MAX_SETS
        MAX_SETS = 1
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        print("kernel_bench: no CUDA/ROCm GPU on this machine; the kernel benchmark needs one (nothing measured)")
        return 0
    import rbench_kernels  # noqa: F401  (imported after TRITON_INTERPRET is settled)

    torch.backends.cudnn.benchmark = True
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    layers = smoke_layers() if args.cpu_smoke else resnet50_layers()
    if args.layers:
        layers = [layer for layer in layers if args.layers in layer.name]
    batches = [1] if args.cpu_smoke else args.batch
    timer = Timer(device, min_replays=3 if args.cpu_smoke else (10 if args.quick else 30),
                  min_calls=1 if args.cpu_smoke else 20, graphs=not args.no_graphs)
    start = time.perf_counter()
    results, adds = [], []
    for dt in args.dtype:
        for batch in batches:
            for layer in layers:
                r = bench_layer(layer, batch, dtypes[dt], device, timer)
                results.append(r)
                print(f"  {dt} batch {batch} {layer.name}: ours {_fmt(r['methods']['ours'].get('ms'), '.4f')} ms, "
                      f"unfused/ours {_fmt(r['ratios']['unfused_over_ours'], '.2f')}", flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()
        if not args.no_add:
            shapes = [(1, 16, 6, 6)] if args.cpu_smoke else [
                (b, k, hw, hw) for b in batches for k, hw in ((256, 56), (512, 28), (1024, 14), (2048, 7))]
            for shape in shapes:
                adds.append(bench_add(shape, dtypes[dt], device, timer))
    summary = summarize(results, adds)
    print()
    print_tables(results, adds, summary)
    record = {"kind": "rbench_kernels.bench", "env": machine(device), "seconds": time.perf_counter() - start,
              "timing": "median per-call time of CUDA-graph replays, inputs rotated past L2" if device == "cuda"
              else "CPU interpreter smoke run: the figures mean nothing",
              "goals": GOALS, "layers": results, "add_act": adds, "summary": summary}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = record["env"].get("gpu", "cpu-smoke").replace(" ", "_").replace("/", "_")
    path = out_dir / f"kernels-{gpu}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=1, default=str))
    print(f"\nwrote {path} ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
