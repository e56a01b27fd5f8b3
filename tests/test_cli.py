"""`rbench` end to end through its command line, as a user runs it.

Every command names `--device cpu` (or a suite with `device: cpu`): with `device: auto` a GPU host
would run these on its GPU, and what they assert (tf32 unsupported, the CPU's identity) is the CPU's.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rbench import results

ROOT = Path(__file__).resolve().parent.parent


def rbench(*args, cwd=ROOT, timeout=600):
    return subprocess.run([sys.executable, "-m", "rbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_smoke_suite_end_to_end(tmp_path):
    out = rbench("run", "suites/smoke.yaml", "--device", "cpu", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1
    assert f"results: {files[0]}" in out.stdout
    assert "resnet18" in out.stdout and "img/s" in out.stdout  # the final table
    df = results.load(tmp_path)
    assert len(df) == 8  # 1 model x 2 batches x 2 precisions x 1 backend x 2 modes: every case accounted for
    ok = df[df.status == "ok"]
    assert set(ok.precision) == {"fp32"} and len(ok) >= 2
    assert (ok["throughput_ips"] > 0).all() and (ok["latency_ms.p50"] > 0).all()
    assert set(df[df.precision == "tf32"].status) == {"unsupported"}
    run = results.read_run(files[0])
    assert run.status == "complete"
    env = run.env
    assert env["software"]["torch"] and env["device"]["kind"] == "cpu" and "sha" in env["git"]


def test_bad_suite_exits_2_with_one_line_and_measures_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "suites/smoke.yaml").read_text().replace("precisions: [fp32, tf32]", "precisions: [fp32, int4]"))
    out = rbench("run", str(bad), "--out", str(tmp_path / "res"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert f"{bad}:" in out.stderr and "precisions[1]" in out.stderr and "int4" in out.stderr and "allowed:" in out.stderr
    assert not (tmp_path / "res").exists()


def test_missing_suite_file_exits_2(tmp_path):
    out = rbench("run", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "nope.yaml: no such suite file" in out.stderr


def test_interrupted_run_keeps_records_and_resume_measures_only_the_rest(tmp_path):
    suite = tmp_path / "four.yaml"
    suite.write_text(
        "name: four\ndevice: cpu\nmodels: [resnet18]\nbatch_sizes: [1, 2, 3, 4]\nimage_size: 32\nprecisions: [fp32]\n"
        "backends: [eager]\nmodes: [inference]\npolicy: {warmup_iters: 1, warmup_s: 0, min_iters: 3, min_s: 1.5}\n")
    proc = subprocess.Popen([sys.executable, "-m", "rbench.cli", "run", str(suite), "--out", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    run_file = None
    while time.time() < deadline:
        files = list(tmp_path.glob("*.jsonl"))
        if files and '"type": "record"' in files[0].read_text():
            run_file = files[0]
            break
        time.sleep(0.2)
    assert run_file is not None, "no record appeared"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    run = results.read_run(run_file)
    assert run.status == "interrupted"
    first = run.records
    assert 1 <= len(first) < 4
    assert f"rbench run --resume {run_file}" in stderr

    out = rbench("run", "--resume", str(run_file))
    assert out.returncode == 0, out.stderr
    run = results.read_run(run_file)
    assert run.status == "complete"
    assert sorted(r["batch_size"] for r in run.records) == [1, 2, 3, 4]  # none measured twice
    assert run.records[: len(first)] == first


def test_list_and_env(tmp_path):
    out = rbench("list", "--device", "cpu")
    assert out.returncode == 0
    assert "resnet50" in out.stdout and "tf32" in out.stdout and "unsupported" in out.stdout
    out = rbench("env", "--device", "cpu")
    assert out.returncode == 0
    env = json.loads(out.stdout)
    assert env["device"]["kind"] == "cpu" and env["software"]["python"]


SIMULATED_GPU_HOST = textwrap.dedent("""
    from rbench.hw import detect, host

    class SimulatedGpu(host.CpuDevice):
        \"\"\"What `device: auto` finds on a GPU host (its work still runs on the CPU).\"\"\"

        kind = "cuda"

        @property
        def name(self):
            return "Simulated GPU"

        def unsupported_precision(self, precision):
            return None

    available = detect._available
    detect._available = lambda kind: kind == "cuda" or available(kind)
    detect.DEVICES["cuda"] = SimulatedGpu
    detect.MONITORS["cuda"] = detect.MONITORS["cpu"]
""")


@pytest.fixture
def gpu_host(tmp_path, monkeypatch):
    """Every rbench process of the test (the CLI and its worker) sees a CUDA GPU, as on a GPU host."""
    hook = tmp_path / "gpu_host"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SIMULATED_GPU_HOST)
    monkeypatch.setenv("PYTHONPATH", f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def test_these_tests_hold_on_a_gpu_host(tmp_path, gpu_host):
    """On a GPU host `device: auto` is the GPU, so a test that asserts the CPU's figures must say
    `--device cpu` (issue 18, item 7); the smoke suite's first case shows the run does."""
    env = json.loads(rbench("env").stdout)
    assert env["device"]["kind"] == "cuda"  # the simulation works: without --device, the GPU
    out = rbench("run", "suites/smoke.yaml", "--device", "cpu", "--out", str(tmp_path),
                 "--filter", "resnet18/bs1/64px/fp32/eager/inference")
    assert out.returncode == 0, out.stderr
    run = results.read_run(next(tmp_path.glob("*.jsonl")))
    assert run.env["device"]["kind"] == "cpu"
    assert {r["status"] for r in run.records} == {"ok", "skipped"}
    assert [r["status"] for r in run.records if r["precision"] == "fp32"].count("ok") == 1
    assert json.loads(rbench("env", "--device", "cpu").stdout)["device"]["kind"] == "cpu"
    assert "unsupported: tf32" in rbench("list", "--device", "cpu").stdout.replace("\n", " ")
