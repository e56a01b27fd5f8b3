"""The pytest plugin: rbench's machine identity lands in a real pytest-benchmark file, and `rbench compare`
matches kernel micro-benchmark files by it (same device: judged; another GPU or driver: refused)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_compare import run_cli

from rbench.analysis import compare, sources

BENCH = """
def work(n):
    return sum(i * i for i in range(n))
def test_kernel(benchmark):
    benchmark(work, 500)
"""


def bench(directory: Path, name: str, *options: str) -> Path:
    """Run pytest-benchmark on a tiny benchmark in a fresh process started in `directory`, as a user would."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench_tiny.py").write_text(BENCH)
    out = directory / f"{name}.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench_tiny.py",
                           f"--benchmark-json={out}", "--benchmark-save-data", "--benchmark-max-time=0.05",
                           "--benchmark-min-rounds=5", "--rootdir", str(directory), *options],
                          cwd=directory, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def with_identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bench(tmp_path_factory.mktemp("plugin"), "kernels")


def test_identity_is_in_the_pytest_benchmark_file(with_identity):
    from rbench.hw import detect

    info = json.loads(with_identity.read_text())["machine_info"]
    env = info["rbench_env"]
    here = detect.environment(detect.detect("auto"))
    assert env["device"]["kind"] == here["device"]["kind"] and env["device"]["name"] == here["device"]["name"]
    assert env["software"]["torch"] == here["software"]["torch"] and env["rbench_version"] == here["rbench_version"]
    ident = sources.load(with_identity)[0].identity
    assert ident["device.name"] == here["device"]["name"] and ident["software.torch"] == here["software"]["torch"]


def test_compare_uses_it_on_kernel_benchmark_files(with_identity, tmp_path, capsys):
    # Judged, not refused: the same samples give a ratio of exactly 1. The verdict's interval still depends on this
    # machine's noise (a loaded CI runner can make a 5 % threshold inconclusive), so it is judged at a 50 % threshold.
    row = compare.compare_paths([with_identity], [with_identity], threshold=0.5).rows[0]
    assert row.estimate is not None and row.estimate.ratio == pytest.approx(1.0) and row.verdict == "unchanged"
    doc = json.loads(with_identity.read_text())
    doc["machine_info"]["rbench_env"]["device"]["name"] = "NVIDIA H100 80GB HBM3"  # same CPU and Python, other GPU
    other = tmp_path / "other-gpu.json"
    other.write_text(json.dumps(doc))
    code, _, err = run_cli("compare", str(with_identity), str(other), capsys=capsys)
    assert code == 2 and "device.name" in err and "NVIDIA H100 80GB HBM3" in err
    assert run_cli("compare", str(with_identity), str(other), "--across-machines", capsys=capsys)[0] in (0, 1)


def test_disabled_plugin_adds_nothing_and_a_conftest_identity_is_kept(tmp_path):
    off = bench(tmp_path / "off", "off", "-p", "no:rbench")
    assert "rbench_env" not in json.loads(off.read_text())["machine_info"]
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "conftest.py").write_text(
        "def pytest_benchmark_update_machine_info(config, machine_info):\n"
        "    machine_info['rbench_env'] = {'device': {'kind': 'cuda', 'name': 'from conftest'}}\n")
    own = bench(tmp_path / "own", "own")
    assert json.loads(own.read_text())["machine_info"]["rbench_env"]["device"]["name"] == "from conftest"
