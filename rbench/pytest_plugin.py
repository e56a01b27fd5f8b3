"""A pytest plugin: rbench's machine identity in pytest-benchmark's `machine_info`, under `rbench_env`.

pytest-benchmark records the CPU and Python but not the GPU, its driver or the torch/CUDA/Triton
versions, so `rbench compare` could not tell two kernel micro-benchmark files from different GPUs
apart. Installed with rbench (a `pytest11` entry point), this plugin adds the environment record
every run file carries (`rbench.hw.detect.environment` of the detected device) whenever
pytest-benchmark writes or compares machine info; `rbench.analysis.sources` reads it from there.
It does nothing without pytest-benchmark, keeps an `rbench_env` a conftest already put there, and
never fails a benchmark session: if the device cannot be read, `rbench_env_unavailable` says why.
Disable it with `-p no:rbench`; choose the device with `--rbench-device` (default: auto).
"""

from __future__ import annotations

import json
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rbench")
    group.addoption("--rbench-device", default="auto", metavar="KIND",
                    help="device whose identity rbench adds to pytest-benchmark's machine_info "
                         "(auto, cuda, rocm, xpu, mps, cpu; default auto)")


def environment(requested: str = "auto") -> dict[str, Any]:
    """The environment record of the device, as plain JSON data (what a run file's header holds)."""
    from rbench.hw import detect

    return json.loads(json.dumps(detect.environment(detect.detect(requested)), default=str))


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    if "rbench_env" in machine_info:
        return
    try:
        machine_info["rbench_env"] = environment(config.getoption("rbench_device"))
    except Exception as e:  # noqa: BLE001 - identity must never stop a benchmark session
        machine_info["rbench_env_unavailable"] = f"{type(e).__name__}: {e}"
