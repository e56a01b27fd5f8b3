"""The kernel benchmark (benchmarks/kernel_bench.py) runs end to end: its code paths on tiny shapes under
the interpreter here, one real layer on a GPU.  Its figures are not checked: speed is not a test."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from kernel_cases import ON_GPU

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


@pytest.mark.skipif(not interpreting(), reason="the CPU smoke run needs TRITON_INTERPRET=1")
def test_bench_cpu_smoke(tmp_path: Path) -> None:
    assert _load().main(["--cpu-smoke", "--dtype", "bf16", "--out", str(tmp_path)]) == 0
    record = _check_record(tmp_path)
    assert {r["shape"]["name"] for r in record["layers"]} == {"smoke.3x3", "smoke.conv3", "smoke.downsample"}
    assert record["add_act"] and "bfloat16/batch1" in record["summary"]


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
