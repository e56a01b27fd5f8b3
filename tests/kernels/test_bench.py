"""The kernel benchmark (benchmarks/kernel_bench.py) runs end to end: its code paths on tiny shapes under
the interpreter here, one real layer on a GPU.  Its figures are not checked: speed is not a test; that its
roofline columns agree with the times and with rbench_kernels.roofline is."""

import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from kernel_cases import ON_GPU

from rbench_kernels import roofline
from rbench_kernels._common import interpreting

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "kernel_bench.py"


def _load():
    spec = importlib.util.spec_from_file_location("kernel_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("kernel_bench", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _check_record(out: Path) -> dict:
    files = list(out.glob("kernels-*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["env"]["torch"] and record["env"]["triton"]
    for r in record["layers"]:
        assert {"ours", "unfused", "cudnn_conv"} <= set(r["methods"])
        assert all("ms" in m for m in r["methods"].values()), r["methods"]
    return record


def _check_roofline(record: dict, flops: float, bandwidth: float) -> None:
    """Every layer's bound is roofline's at these peaks, % of bound is bound / achieved, and each network
    summary's bound is the sum of its layers' count-weighted bounds (of those measured, in a partial run)."""
    assert (record["roofline"]["flops"], record["roofline"]["bandwidth"]) == (flops, bandwidth)
    for r in record["layers"]:
        b = r["roofline"]
        assert b["compute_us"] == pytest.approx(b["flops"] / flops * 1e6)
        assert b["memory_us"] == pytest.approx(b["bytes"] / bandwidth * 1e6)
        assert b["bound_us"] == max(b["compute_us"], b["memory_us"]) > 0
        for name in ("ours", "unfused"):
            m = r["methods"][name]
            assert m["pct_of_bound"] == pytest.approx(100 * b["bound_us"] / (m["ms"] * 1e3))
        assert "pct_of_bound" not in r["methods"]["cudnn_conv"]  # it does less than the layer's whole work
    for key, s in record["summary"].items():
        if key == "add_act":
            continue
        net, rows = s["roofline"], [r for r in record["layers"] if f"{r['dtype']}/batch{r['batch']}" == key]
        assert net["convolutions_measured"] == sum(r["count"] for r in rows) <= net["convolutions"]
        assert net["measured_bound_us"] == pytest.approx(sum(r["count"] * r["roofline"]["bound_us"] for r in rows))
        if net["convolutions_measured"] == net["convolutions"]:
            assert net["network_bound_us"] == pytest.approx(net["measured_bound_us"])
        assert net["ours_us"] == pytest.approx(sum(r["count"] * r["methods"]["ours"]["ms"] * 1e3 for r in rows))
        assert net["ours_pct_of_bound"] == pytest.approx(100 * net["measured_bound_us"] / net["ours_us"])


@pytest.mark.skipif(not interpreting(), reason="the CPU smoke run needs TRITON_INTERPRET=1")
def test_bench_cpu_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--cpu-smoke", "--dtype", "bf16", "--out", str(tmp_path), "--peak-tflops", "2", "--peak-gbs", "3"]
    assert _load().main(args) == 0
    record = _check_record(tmp_path)
    assert {r["shape"]["name"] for r in record["layers"]} == {"smoke.3x3", "smoke.conv3", "smoke.downsample"}
    assert record["add_act"] and "bfloat16/batch1" in record["summary"]
    _check_roofline(record, 2e12, 3e9)
    assert record["summary"]["bfloat16/batch1"]["roofline"]["convolutions_measured"] == 3  # the whole "network"
    printed = capsys.readouterr().out
    assert "bound us" in printed and "% bound" in printed and "% of bound" in printed
    assert "from --peak-tflops and --peak-gbs" in printed


def test_peaks_from_the_gpu_name_or_the_command_line() -> None:
    kb = _load()
    h200, note = kb.peaks_for("NVIDIA H200")
    assert (h200.flops, h200.bandwidth, h200.device) == (989e12, 4.8e12, "h200") and "DEVICES['h200']" in note
    mixed, _ = kb.peaks_for("NVIDIA H100 80GB HBM3", gbs=3000)  # one peak overridden, the other the table's
    assert (mixed.flops, mixed.bandwidth, mixed.device) == (989e12, 3e12, "h100-sxm")
    none, note = kb.peaks_for("NVIDIA H100 PCIe")
    assert none is None and "NVIDIA H100 PCIe" in note and "--peak-tflops" in note and "GPU_NAMES" in note
    given, _ = kb.peaks_for("NVIDIA H100 PCIe", 756, 2000)
    assert (given.flops, given.bandwidth, given.device) == (756e12, 2e12, None)
    with pytest.raises(ValueError, match="give both --peak-tflops and --peak-gbs"):
        kb.peaks_for("NVIDIA H100 PCIe", tflops=756)
    with pytest.raises(ValueError, match="--peak-gbs must be a positive number"):
        kb.peaks_for("NVIDIA H200", gbs=0)


def _fake_records(kb, layers, batch: int, dtype: str) -> list[dict]:
    return [{"layer": x.name, "count": x.count, "batch": batch, "dtype": dtype, "shape": asdict(x),
             "methods": {"ours": {"ms": 0.01}, "unfused": {"ms": 0.02}, "cudnn_conv": {"ms": 0.005}}} for x in layers]


def test_network_summary_is_resnet50s_bound() -> None:
    """The bench's 24 distinct layers, count-weighted, add up to roofline's 53 convolutions; a --layers run
    compares its own layers' bound with their times."""
    kb = _load()
    bounds = kb.Bounds(kb.peaks_for("NVIDIA H200")[0], "", "resnet50")
    records = _fake_records(kb, kb.resnet50_layers(), 256, "bfloat16")
    for r in records:
        bounds.annotate(r)
    net = bounds.summary(records)["bfloat16/batch256"]
    expected = roofline.network_bound(roofline.resnet_layers("resnet50", 256, dtype="bf16"), device="h200")
    assert net["network_bound_us"] == pytest.approx(expected.seconds * 1e6)
    assert net["network_bound_us"] == pytest.approx(sum(r["count"] * r["roofline"]["bound_us"] for r in records))
    assert net["convolutions"] == net["convolutions_measured"] == 53
    assert net["ours_us"] == pytest.approx(53 * 10.0) and net["unfused_us"] == pytest.approx(53 * 20.0)
    assert net["ours_pct_of_bound"] == pytest.approx(100 * net["network_bound_us"] / net["ours_us"])
    part = bounds.summary(records[:2])["bfloat16/batch256"]
    assert part["convolutions_measured"] == records[0]["count"] + records[1]["count"] < 53
    assert part["network_bound_us"] == net["network_bound_us"] > part["measured_bound_us"]
    assert part["ours_pct_of_bound"] == pytest.approx(100 * part["measured_bound_us"] / part["ours_us"])


def test_no_peaks_no_roofline_fields() -> None:
    """Without peaks a record carries no bound, also one resumed from a file that had them."""
    kb = _load()
    record = _fake_records(kb, kb.smoke_layers(), 1, "float16")[0]
    kb.Bounds(kb.peaks_for(None, 1, 1)[0], "", "smoke").annotate(record)
    assert "roofline" in record and "pct_of_bound" in record["methods"]["ours"]
    unbounded = kb.Bounds(None, "no peaks", "smoke")
    unbounded.annotate(record)
    assert "roofline" not in record and not any("pct_of_bound" in m for m in record["methods"].values())
    assert unbounded.summary([record]) == {} and unbounded.describe() == {"network": "smoke", "note": "no peaks"}


def test_resnet50_layer_list() -> None:
    layers = _load().resnet50_layers()
    assert len(layers) == 24 and sum(layer.count for layer in layers) == 53  # ResNet-50 has 53 convolutions
    assert sum(layer.residual for layer in layers) == 4 and sum(not layer.relu for layer in layers) == 4


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU; test_bench_cpu_smoke is its CPU twin")
def test_bench_one_layer_on_gpu(tmp_path: Path) -> None:
    args = ["--quick", "--layers", "layer4.0.conv3", "--batch", "8", "--dtype", "bf16", "--out", str(tmp_path)]
    assert _load().main(args) == 0
    record = _check_record(tmp_path)
    assert record["env"]["gpu"]
    device = roofline.device_for(record["env"]["gpu"])
    if device is None:  # an unlisted GPU: no bound, and a note that names it
        assert "roofline" not in record["layers"][0] and record["env"]["gpu"] in record["roofline"]["note"]
    else:
        _check_roofline(record, roofline.DEVICES[device].flops, roofline.DEVICES[device].bandwidth)
