"""The triton backend's CUDA graph: skipped with its reason where there are none, checked against the launched
kernels, and a failed capture falls back to launches with a warning in the record (CPU stand-ins for the graph;
the real capture of a ResNet on the kernels runs on a CUDA GPU)."""

from __future__ import annotations

import pytest
import torch

from rbench import spec
from rbench.hw import host
from rbench.run import backends, cuda_graph, isolation
from rbench.spec import Case, Policy

FAST = Policy(warmup_iters=1, warmup_s=0.0, min_iters=3, min_s=0.0, max_s=20.0, timeout_s=120)


class GraphDevice(host.CpuDevice):
    """The CPU, passing for a device that can capture graphs (the capture itself is a stand-in)."""

    kind = "cuda"


class FakeGraph:
    """Replays `fn` from the static input into the static output, as a captured graph would; `wrong` adds 1."""

    def __init__(self, fn, static_input, wrong=False):
        self.fn, self.static_input, self.wrong, self.replays = fn, static_input, wrong, 0
        self.static_output = fn(static_input).clone()

    def replay(self):
        self.replays += 1
        self.static_output.copy_(self.fn(self.static_input) + (1 if self.wrong else 0))


def fake_capture(wrong=False):
    def capture(forward, example, device):
        graph = FakeGraph(forward, example.clone(), wrong)
        return cuda_graph.Graphed(graph, graph.static_input, graph.static_output, {"allocated": 10**9})
    return capture


def forward(x):
    return torch.relu(x * 2.0 - 1.0)


def test_no_graph_on_a_cpu_and_the_reason_says_so():
    timed, fields = cuda_graph.graphed_forward(forward, torch.ones(2, 3), host.CpuDevice())
    assert timed is forward
    assert fields["cuda_graph"] is False and "no CUDA graphs on cpu" in fields["cuda_graph_reason"]
    assert "warnings" not in fields  # expected on a CPU, nothing to warn about


def test_a_checked_graph_is_replayed_with_each_input_copied_in(monkeypatch):
    monkeypatch.setattr(cuda_graph, "capture", fake_capture())
    timed, fields = cuda_graph.graphed_forward(forward, torch.zeros(2, 3), GraphDevice())
    assert fields == {"cuda_graph": True, "cuda_graph_reason": None}
    x = torch.randn(2, 3)
    assert torch.equal(timed(x), forward(x))  # the static input took x's values before the replay
    assert timed.graph.replays == 2  # the check's replay, then this one


@pytest.mark.parametrize("capture, why", [
    (fake_capture(wrong=True), "differs from the launched kernels'"),
    (lambda *a: (_ for _ in ()).throw(RuntimeError("operation not permitted when stream is capturing")),
     "operation not permitted when stream is capturing"),
])
def test_a_graph_that_fails_falls_back_to_launches_and_warns(monkeypatch, capture, why):
    monkeypatch.setattr(cuda_graph, "capture", capture)
    timed, fields = cuda_graph.graphed_forward(forward, torch.zeros(2, 3), GraphDevice())
    assert timed is forward and fields["cuda_graph"] is False
    assert why in fields["cuda_graph_reason"] and fields["warnings"] == [fields["cuda_graph_reason"]]
    assert fields["cuda_graph_reason"].startswith("CUDA graph capture failed, timed with kernel launches")


def test_out_of_memory_in_the_capture_is_the_case_running_out_of_memory(monkeypatch):
    def capture(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cuda_graph, "capture", capture)
    with pytest.raises(torch.OutOfMemoryError):
        cuda_graph.graphed_forward(forward, torch.zeros(2, 3), GraphDevice())


def test_the_capture_peak_holds_the_activations_a_replay_does_not_allocate(monkeypatch):
    monkeypatch.setattr(cuda_graph, "capture", fake_capture())
    timed, _ = cuda_graph.graphed_forward(forward, torch.zeros(2, 3), GraphDevice())
    window = {"allocated": 5, "reserved": 2 * 10**9, "source": "torch.cuda"}
    assert cuda_graph.merge_peak(window, timed) == {"allocated": 10**9, "reserved": 2 * 10**9, "source": "torch.cuda"}
    assert cuda_graph.merge_peak(window, forward) == window  # launches: the window's own peak


def case(backend):
    return Case("resnet18", 1, 32, "fp32", backend, "inference", "channels_last", "cpu")


def test_triton_no_graph_is_a_backend_of_its_own_and_says_why_it_launches():
    assert spec.allowed_backend("triton:no-graph") and not spec.allowed_backend("triton:fast")
    assert case("triton:no-graph").backend_name == "triton" and case("triton:no-graph").backend_mode == "no-graph"
    assert case("compile:max-autotune").compile_mode == "max-autotune" and case("triton").backend_mode == "default"
    assert case("triton:no-graph").key() != case("triton").key()  # compared as a different measurement
    info: dict = {}
    timed = backends.REGISTRY["triton"].graph(forward, torch.zeros(1), case("triton:no-graph"), GraphDevice(), info)
    assert timed is forward and info["cuda_graph"] is False and "no-graph" in info["cuda_graph_reason"]


def test_an_unknown_triton_mode_is_refused_with_the_allowed_names(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nmodels: [resnet18]\nbatch_sizes: [1]\nprecisions: [fp16]\nbackends: [triton:fast]\n"
                     "modes: [inference]\n")
    with pytest.raises(spec.SpecError) as e:
        spec.load(suite)
    assert "backends" in str(e.value) and "triton:no-graph" in str(e.value) and "compile:max-autotune" in str(e.value)


def test_the_record_carries_the_graphs_warning_beside_the_telemetrys(monkeypatch):
    """Through the runner: what the backend's graph step says reaches the record's warnings."""
    def graph(self, forward, example, case, device, info):
        info.update(cuda_graph=False, cuda_graph_reason="stand-in")
        info.setdefault("warnings", []).append("CUDA graph capture failed (stand-in)")
        return forward

    monkeypatch.setattr(backends.Backend, "graph", graph)
    record = isolation.InProcess("cpu").run(case("eager"), FAST)
    assert record["status"] == "ok", record["reason"]
    assert "CUDA graph capture failed (stand-in)" in record["warnings"]
    assert record["cuda_graph"] is False and record["host_ms_per_iter"] > 0


@pytest.mark.quick  # in the GPU session's first stage: the capture is proven before anything is timed with it
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; the CPU twins above stand in for the "
                    "capture (test_a_checked_graph_is_replayed_with_each_input_copied_in)")
def test_a_resnet_on_the_kernels_captures_and_replays_bit_for_bit_on_a_gpu():
    from rbench.hw import detect
    from rbench.run import models, triton_zoo

    device = detect.detect("cuda")
    c = Case("resnet18", 2, 224, "fp16", "triton", "inference", "channels_last", "cuda")
    workload = models.build(c, device.torch_device)
    module = triton_zoo.convert(workload.model)
    step_info: dict = {}
    step = backends.make_step(module, workload, c, device, step_info)
    assert step_info["cuda_graph"] is True, step_info.get("cuda_graph_reason")
    x = workload.inputs[-1]
    with torch.inference_mode():
        expected = module(x).clone()
    assert torch.equal(step.forward(x), expected)
