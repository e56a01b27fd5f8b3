"""Kernel benchmark: rbench_kernels against PyTorch/cuDNN on every ResNet-50 layer shape (needs a GPU).

For each distinct convolution of torchvision's ResNet-50 at 224x224, each batch size and dtype, it times
  ours        the fused kernel (conv1x1_bn_act for 1x1 layers, conv_bn_act otherwise), with the
              layer's real epilogue (BN, + residual for a block's last conv, ReLU unless downsample)
  unfused     what eager PyTorch runs: cuDNN conv -> F.batch_norm (eval) -> [+= residual] -> relu_
  cudnn_conv  cuDNN's convolution alone (no BN, no add, no ReLU)
  and for the 1x1 layers, the same GEMM both ways without the residual/ReLU epilogue:
  ours_gemm   conv1x1_bn_act(relu=False) (scale/shift only), against
  matmul      torch.matmul on (N·P·Q, C) @ (C, K) -- cuBLAS
plus add_act against a device copy of the same tensor on ResNet-50's block outputs (bandwidth), and
each layer's roofline bound (rbench_kernels.roofline, at the GPU's peaks or --peak-tflops/--peak-gbs)
with ours' and unfused's % of it (bound / achieved), and per batch and dtype the whole network's bound
against the count-weighted sum of the measured times.

Timing: channels_last tensors, cudnn.benchmark on; every method is warmed up (autotuning, cuDNN's
algorithm search) and then captured in a CUDA graph of calls that cycle through enough input sets
(>= 2 x 50 MB, beyond an H100's L2) so that nothing is served from cache; the graph is replayed
many times between CUDA events and the per-call time is the median replay time / calls.  Graphs
take the Python launch cost out, which at batch 1 would otherwise be the whole measurement.

Usage:  python benchmarks/kernel_bench.py [--out DIR | --json FILE [--resume]] [--budget-s S] [--busy flag]
        [--batch 256 1] [--dtype fp16 bf16] [--quick] [--peak-tflops T --peak-gbs G]
Writes DIR/kernels-<gpu>-<time>.json (or FILE: machine, software, every figure), rewritten after every
layer so that a killed run keeps what it measured, and prints the tables. `--budget-s` stops it between
layers (exit 3) and `--resume` continues the file. A GPU that another process uses is refused (exit 4)
unless `--busy flag` measures anyway and flags it. Without a CUDA GPU it prints one line and exits 0
(`--cpu-smoke` runs the code paths on tiny shapes under the Triton interpreter; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_output/_roofline, also when loaded by path
from bench_output import ResultFile, fmt, machine, other_gpu_processes, print_tables, wait_until_alone  # noqa: E402
from bench_roofline import DTYPES, Bounds, Layer, peaks_for, resnet50_layers, smoke_layers  # noqa: E402, F401

L2_ROTATION_BYTES = 2 * 50 * 2**20  # twice an H100's 50 MB L2
EXIT_STOPPED = 3  # --budget-s ran out: run again with --resume to measure the rest
EXIT_BUSY = 4  # another process holds the GPU (and --busy refuse)


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

    conv = layer.conv(batch, DTYPES[str(dtype).replace("torch.", "")])  # its sizes, FLOPs and bytes: roofline's
    p, q, moved = conv.p, conv.q, conv.bytes_moved()
    esize = torch.empty((), dtype=dtype).element_size()
    w_bytes = moved["weights"]
    set_bytes = moved["input"] + w_bytes + moved["residual"]
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

    flops = float(conv.flops)
    min_bytes = conv.bytes - moved["affine"]  # input, weights, residual, output (this file's GB/s, as before)
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


def plan(layers: list[Layer], batches: list[int], dtypes: list, no_add: bool, smoke: bool) -> list[tuple]:
    """Every measurement in order (fp16 at batch 256 first: the headline), each as (key, what, args).

    add_act runs on ResNet-50's block outputs (channels_last) at every batch size.
    """
    shapes = [(1, 16, 6, 6)] if smoke else [(b, k, hw, hw) for b in batches
                                            for k, hw in ((256, 56), (512, 28), (1024, 14), (2048, 7))]
    items = []
    for dt in dtypes:
        short = str(dt).replace("torch.", "")
        for batch in batches:
            items += [(("layer", short, batch, layer.name), "layer", (layer, batch, dt)) for layer in layers]
        if not no_add:
            items += [(("add", short, shape), "add", (shape, dt)) for shape in shapes]
    return items


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results", help="directory for the JSON file (default: ./results)")
    parser.add_argument("--json", metavar="FILE", help="write exactly this JSON file (instead of a new one in --out)")
    parser.add_argument("--resume", action="store_true",
                        help="with --json: keep what FILE already holds (same GPU) and measure only the rest")
    parser.add_argument("--budget-s", type=float, default=None, metavar="S",
                        help=f"start no new layer after S seconds; exit {EXIT_STOPPED} if anything is left")
    parser.add_argument("--busy", choices=["refuse", "flag"], default="refuse",
                        help=f"another process on the GPU: refuse (exit {EXIT_BUSY}, the default) or measure and "
                             "flag it in the JSON")
    parser.add_argument("--wait-idle", type=float, default=30.0, metavar="S",
                        help="wait up to S seconds for other processes to leave the GPU first (default 30)")
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1])
    parser.add_argument("--dtype", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16", "fp32"])
    parser.add_argument("--layers", default=None, help="only layers whose name contains this text")
    parser.add_argument("--quick", action="store_true", help="fewer timing samples")
    parser.add_argument("--no-graphs", action="store_true", help="time eager calls instead of CUDA-graph replays")
    parser.add_argument("--no-add", action="store_true", help="skip the add_act bandwidth test")
    parser.add_argument("--peak-tflops", type=float, default=None, metavar="T",
                        help="dense fp16 tensor-core peak for the roofline, TFLOP/s (default: the GPU's entry in "
                             "rbench_kernels.roofline.DEVICES; needed, with --peak-gbs, for a GPU it lacks)")
    parser.add_argument("--peak-gbs", type=float, default=None, metavar="G",
                        help="memory bandwidth peak for the roofline, GB/s (as --peak-tflops)")
    parser.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None, busy_query: Callable[[], list[int] | None] | None = None,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """Exit 0 when everything asked for is measured, 3 when --budget-s stopped it, 4 on a busy GPU."""
    args = _parser().parse_args(argv)
    if args.resume and not args.json:
        print("kernel_bench: --resume needs --json FILE (the file to continue)")
        return 2
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before rbench_kernels is imported
    import torch

    if args.cpu_smoke:
        device = "cpu"
        global MAX_SETS
        MAX_SETS = 1
    elif torch.cuda.is_available():
        device = "cuda"
        torch.zeros(1, device=device)  # our own context first, so that the process list can tell us apart
    else:
        print("kernel_bench: no CUDA/ROCm GPU on this machine; the kernel benchmark needs one (nothing measured)")
        return 0
    import rbench_kernels  # noqa: F401  (imported after TRITON_INTERPRET is settled)

    try:  # the roofline's peaks: the GPU's DEVICES entry, or the user's
        peaks, note = peaks_for(torch.cuda.get_device_name(0) if device == "cuda" else None, args.peak_tflops,
                                args.peak_gbs)
    except ValueError as e:
        print(f"kernel_bench: {e}")
        return 2
    query = busy_query or (other_gpu_processes if device == "cuda" else None)
    others = wait_until_alone(query, args.wait_idle, sleep, time.monotonic) if query else None
    if others and args.busy == "refuse":
        print(f"kernel_bench: other processes are using the GPU (pids {', '.join(map(str, others))}); nothing "
              f"measured. Wait for them, or pass --busy flag to measure anyway with the results flagged")
        return EXIT_BUSY
    torch.backends.cudnn.benchmark = True
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    layers = smoke_layers() if args.cpu_smoke else resnet50_layers()
    if args.layers:
        layers = [layer for layer in layers if args.layers in layer.name]
    batches = [1] if args.cpu_smoke else args.batch
    timer = Timer(device, min_replays=3 if args.cpu_smoke else (10 if args.quick else 30),
                  min_calls=1 if args.cpu_smoke else 20, graphs=not args.no_graphs)
    env = machine(device)
    timing = ("median per-call time of CUDA-graph replays, inputs rotated past L2" if device == "cuda"
              else "CPU interpreter smoke run: the figures mean nothing")
    gpu = env.get("gpu", "cpu-smoke").replace(" ", "_").replace("/", "_")
    path = Path(args.json) if args.json else Path(args.out) / f"kernels-{gpu}-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    try:
        out = ResultFile(path, env, timing, args.resume, Bounds(peaks, note, "smoke" if args.cpu_smoke else "resnet50"))
    except (ValueError, OSError) as e:
        print(f"kernel_bench: {e}")
        return 2
    if others:
        out.other_processes = sorted(set(out.other_processes) | set(others))
    done = out.done()
    todo = [item for item in plan(layers, batches, [dtypes[d] for d in args.dtype], args.no_add, args.cpu_smoke)
            if item[0] not in done]
    if done:
        print(f"kernel_bench: resuming {path}: {len(done)} measurements kept, {len(todo)} to go")
    start, longest = time.perf_counter(), 0.0
    for i, (key, what, a) in enumerate(todo):
        elapsed = time.perf_counter() - start
        if args.budget_s is not None and i and elapsed + longest > args.budget_s:
            left = ["/".join(map(str, k)) for k, _, _ in todo[i:]]
            out.write(False, left, elapsed)
            print(f"kernel_bench: --budget-s {args.budget_s:g} reached, {len(left)} measurements left in {path}; "
                  "run again with --resume to measure them")
            return EXIT_STOPPED
        t0 = time.perf_counter()
        if what == "layer":
            r = bench_layer(*a, device, timer)
            out.layers.append(r)
            out.roofline.annotate(r)
            ours = r["methods"]["ours"]
            pct = "" if peaks is None else f" = {fmt(ours.get('pct_of_bound'), '.1f')} % of bound"
            print(f"  {key[1]} batch {key[2]} {key[3]}: ours {fmt(ours.get('ms'), '.4f')} ms{pct}, "
                  f"unfused/ours {fmt(r['ratios']['unfused_over_ours'], '.2f')}", flush=True)
        else:
            r = bench_add(*a, device, timer)
            out.adds.append(r)
        if device == "cuda":
            torch.cuda.empty_cache()
        now_busy = query() if query else None
        if now_busy:
            r["other_processes"] = now_busy
            out.other_processes = sorted(set(out.other_processes) | set(now_busy))
        longest = max(longest, time.perf_counter() - t0)
        out.write(False, ["/".join(map(str, k)) for k, _, _ in todo[i + 1:]], time.perf_counter() - start)
    record = out.write(True, [], time.perf_counter() - start)
    print()
    print_tables(record["layers"], record["add_act"], record["summary"])
    print(f"\n{note}")
    if record["other_processes_seen"]:
        print(f"\nWARNING: other processes used the GPU during the benchmark (pids "
              f"{', '.join(map(str, record['other_processes_seen']))}): the figures are flagged")
    print(f"\nwrote {path} ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
