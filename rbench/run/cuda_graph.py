"""The whole forward pass in one CUDA graph: captured once after autotuning, replayed per iteration.

The triton backend launches about 55 kernels per ResNet-50 forward from Python; at batch 1 issuing
them can take longer than the GPU takes to run them. A CUDA graph issues the whole pass with one
call. `graphed_forward` captures it (on a side stream after a few warm-up calls, so that lazy
initialisation and Triton's autotuning are done and nothing is benchmarked inside the capture),
then checks the graph: one replay on the first input must give, bit for bit, what the same kernels
launched one by one give (the kernels reduce in a fixed order: no atomics). If the device has no
graphs, or capture or the check fails, the forward is timed with its launches from Python, and the
record says why (`cuda_graph: false`, `cuda_graph_reason`; a failure is also in `warnings`).

The graph reads a static input buffer: each replay first copies the iteration's input into it (one
device-to-device copy, as a server copies a request into its batch), so buffers still rotate past
L2. Replays allocate nothing, so the timed window's peak would miss the activations: the capture's
own peak, which holds them as eager launches would, is kept and merged into the record's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from rbench.names import one_line

GRAPH_KINDS = ("cuda", "rocm")  # torch.cuda.CUDAGraph: CUDA graphs, and HIP graphs under ROCm
WARMUP_CALLS = 3  # on the side stream before capture, as PyTorch's CUDA-graph notes ask


class GraphMismatch(RuntimeError):
    """The replayed graph's output is not the launched kernels' output."""


@dataclass
class Graphed:
    """`forward(x)` as a replay: copy x into the static input, replay, return the static output.

    The output is overwritten by the next replay; the timing loop never keeps it."""

    graph: Any
    static_input: torch.Tensor
    static_output: torch.Tensor
    capture_peak: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output


def unavailable(device: Any) -> str | None:
    """None when `device` can capture CUDA graphs, else why not (a CPU, MPS or XPU device)."""
    if device.kind not in GRAPH_KINDS:
        return f"no CUDA graphs on {device.kind}: the forward is timed with its kernel launches from Python"
    return None


def capture(forward: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, device: Any) -> Graphed:
    """Capture `forward` on a static copy of `example`; raises whatever capture raises."""
    static_input = example.clone()
    side = torch.cuda.Stream(device=example.device)
    side.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            forward(static_input)
    torch.cuda.current_stream(example.device).wait_stream(side)
    device.synchronize()
    device.reset_peak_memory()  # the capture allocates what one eager forward pass would
    graph = torch.cuda.CUDAGraph()
    # thread_local: only this thread's calls can break the capture (the telemetry sampler's NVML reads never do)
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        static_output = forward(static_input)
    device.synchronize()
    return Graphed(graph, static_input, static_output, capture_peak=dict(device.peak_memory()))


def check(graphed: Graphed, forward: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor,
          device: Any) -> None:
    """GraphMismatch unless one replay on `example` equals `forward(example)` bit for bit."""
    expected = forward(example).clone()
    got = graphed(example)
    device.synchronize()
    if got.shape != expected.shape or not torch.equal(got, expected):
        diff = "shapes differ" if got.shape != expected.shape else (
            f"max |difference| {(got.float() - expected.float()).abs().max().item():.3g}")
        raise GraphMismatch(f"the replayed graph's output differs from the launched kernels' ({diff})")


def graphed_forward(forward: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor,
                    device: Any) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """(the callable to time, the record's fields): a checked graph replay, or `forward` itself and why.

    An out-of-memory error is not a capture failure: it propagates, and the case is `oom`."""
    reason = unavailable(device)
    if reason:
        return forward, {"cuda_graph": False, "cuda_graph_reason": reason}
    try:
        graphed = capture(forward, example, device)
        check(graphed, forward, example, device)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - any capture failure falls back to launches, said in the record
        device.synchronize()
        why = f"CUDA graph capture failed, timed with kernel launches from Python instead: {one_line(e)}"
        return forward, {"cuda_graph": False, "cuda_graph_reason": why, "warnings": [why]}
    return graphed, {"cuda_graph": True, "cuda_graph_reason": None}


def merge_peak(window_peak: dict[str, Any], forward: Any) -> dict[str, Any]:
    """The timed window's peak memory, raised to the capture's where `forward` is a graph replay."""
    capture_peak = getattr(forward, "capture_peak", None) or {}
    merged = dict(window_peak)
    for key, value in capture_peak.items():
        if isinstance(value, int) and isinstance(merged.get(key), int):
            merged[key] = max(merged[key], value)
    return merged
