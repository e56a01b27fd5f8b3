"""pytest-benchmark timings of the fused kernels and PyTorch's unfused sequence per ResNet-50 layer (GPU).

    pytest benchmarks --benchmark-json=results/kernels-bench.json
    rbench compare OLD.json NEW.json        # pytest-benchmark files compare like runs

Each round replays a CUDA graph of `calls` calls that cycle through input sets larger than L2
(benchmark.extra_info has calls_per_round, GFLOP per call and the layer); the full comparison with
ratios, cuDNN alone, matmul and add_act is `python benchmarks/kernel_bench.py`.  Skipped without a GPU.
"""

import kernel_bench as kb
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="kernel benchmarks need a CUDA/ROCm GPU")

LAYERS = kb.resnet50_layers()
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("method", ["ours", "unfused"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layer", LAYERS, ids=[layer.name for layer in LAYERS])
def test_resnet50_layer_batch256(benchmark, layer: kb.Layer, dtype: str, method: str) -> None:
    torch.backends.cudnn.benchmark = True
    record, methods = kb.make_case(layer, 256, DTYPES[dtype], "cuda")
    fn, n_sets = methods[method]
    replay, calls, mode = kb.Timer("cuda", min_replays=1, min_calls=10, graphs=True).capture(fn, n_sets)

    def run() -> None:
        replay()
        torch.cuda.synchronize()

    benchmark.group = f"{layer.name} {dtype}"
    benchmark.extra_info.update(calls_per_round=calls, timing=mode, gflop_per_call=record["flops"] / 1e9,
                                min_bytes_per_call=record["min_bytes"], layer=record["shape"])
    benchmark.pedantic(run, rounds=20, warmup_rounds=2)
