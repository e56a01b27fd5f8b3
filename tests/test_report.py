"""`rbench report`: figures, the self-contained HTML file, PNGs, the vendor peak table."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import realruns

from rbench import cli, results
from rbench.analysis import peaks, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return realruns.measure_runs(tmp_path_factory.getbasetemp() / "real_runs")


def gpu_like(src: Path, dest: Path, name: str, speedup: float, watts: float) -> Path:
    """A run file with another device's identity and power readings, its numbers scaled from a real run.

    Test data only: it exercises the multi-device figures and the peak table, which a CPU-only test
    machine cannot produce for real.
    """
    lines = []
    for line in src.read_text().splitlines():
        o: dict[str, Any] = json.loads(line)
        if o["type"] == "run":
            o["env"] = {**o["env"], "device": {"kind": "cuda", "name": name}}
        elif o["type"] == "record" and o["status"] == "ok":
            o["throughput_ips"] *= speedup
            o["tflops"] *= speedup
            o["samples_ms"] = [x / speedup for x in o["samples_ms"]]
            o["latency_ms"] = {k: v / speedup for k, v in o["latency_ms"].items()}
            o["peak_memory_bytes"] = (300 + 40 * o["batch_size"]) * 2**20
            o["power"] = {"avg_w": watts, "peak_w": watts * 1.1, "energy_j": 1.0,
                          "j_per_image": watts / o["throughput_ips"], "source": "test"}
        lines.append(json.dumps(o))
    dest.write_text("\n".join(lines) + "\n")
    return dest


@pytest.fixture
def three_devices(real, tmp_path) -> list[Path]:
    return [real["a"], gpu_like(real["a"], tmp_path / "h100.jsonl", "NVIDIA H100 80GB HBM3", 400.0, 450.0),
            gpu_like(real["a"], tmp_path / "mi300x.jsonl", "AMD Instinct MI300X", 350.0, 600.0)]


def test_html_is_self_contained_with_every_figure(three_devices, tmp_path, capsys):
    out = tmp_path / "out" / "report.html"
    assert cli.main(["report", *map(str, three_devices), "--html", str(out), "--png", str(tmp_path / "png")]) == 0
    text = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 6  # throughput, latency, memory, energy, utilisation, complexity
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for b in images)
    assert not re.search(r'(src|href)="(https?:|/|file:)', text)  # nothing fetched from elsewhere
    for label in ("AMD EPYC", "NVIDIA H100 80GB HBM3", "AMD Instinct MI300X"):
        assert label in text or label.replace("AMD EPYC", "cpu") in text
    assert "vendor datasheet" in text and "NVIDIA H100 SXM" in text and "AMD Instinct MI300X" in text
    assert "resnet18/bs2/32px/fp32/eager/inference/channels_last" in text


def test_pngs_are_real_images(three_devices, tmp_path):
    import matplotlib.image

    built = report.build(report.load_runs(three_devices))
    paths = report.write_pngs(built, tmp_path / "png")
    assert sorted(p.stem for p in paths) == ["complexity", "energy", "latency", "memory", "throughput", "utilisation"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        height, width = matplotlib.image.imread(p).shape[:2]
        assert width >= 700 and height >= 400


def test_cpu_only_report_says_what_is_missing(real, tmp_path, capsys):
    built = report.build(report.load_runs([real["a"], real["a2"]]))
    names = {f.name for f in built.figures}
    assert "energy" not in names and any("no power measurement" in s for s in built.skipped)
    util = next(f for f in built.figures if f.name == "utilisation")
    assert "no vendor peak known for AMD EPYC" in util.caption or "no vendor peak known" in util.caption
    labels = [r.label for r in built.runs]
    assert len(set(labels)) == 2  # two runs of one device are told apart


def test_peaks_file_adds_a_device(real, tmp_path, capsys):
    name = report.load_runs([real["a"]])[0].device
    extra = tmp_path / "peaks.json"
    extra.write_text(json.dumps([{"name": "this CPU", "pattern": re.escape(name), "tflops": {"fp32": 0.5}}]))
    out = tmp_path / "r.html"
    assert cli.main(["report", str(real["a"]), "--html", str(out), "--peaks", str(extra)]) == 0
    assert "this CPU" in out.read_text() and "user-supplied" in out.read_text()


@pytest.mark.parametrize("device, expected", [
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"), ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
    ("NVIDIA H100 NVL", "NVIDIA H100 NVL"), ("NVIDIA H200", "NVIDIA H200 SXM"), ("NVIDIA GH200 480GB", "NVIDIA GH200"),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM 80GB"), ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 SXM 40GB"),
    ("NVIDIA A100 80GB PCIe", "NVIDIA A100 80GB PCIe"), ("NVIDIA L4", "NVIDIA L4"), ("NVIDIA L40S", "NVIDIA L40S"),
    ("AMD Instinct MI300X", "AMD Instinct MI300X"), ("AMD Instinct MI250X/MI250", "AMD Instinct MI250X"),
    ("Intel(R) Data Center GPU Max 1550", "Intel Data Center GPU Max 1550"), ("Tesla T4", "NVIDIA T4"),
    ("AMD EPYC 7763", None), ("NVIDIA L40", None),
])
def test_peak_lookup(device, expected):
    found = peaks.PeakTable().lookup(device)
    assert (found.name if found else None) == expected


def test_peak_by_precision():
    table = peaks.PeakTable()
    assert table.tflops("NVIDIA H100 80GB HBM3", "fp16") == table.tflops("NVIDIA H100 80GB HBM3", "amp_bf16") == 989.4
    assert table.tflops("NVIDIA H100 80GB HBM3", "tf32") == 494.7
    assert table.tflops("Tesla V100-SXM2-16GB", "tf32") is None  # no TF32 before Ampere
    run = report.RunInfo("x", Path("x"), "NVIDIA H100 80GB HBM3", "cuda", "s", "", "", "complete", "", [],
                         table.lookup("NVIDIA H100 80GB HBM3"))
    assert report.fraction_of_peak(run, {"precision": "fp16", "tflops": 98.94}) == pytest.approx(0.1)


def test_terminal_table_and_bad_input(real, tmp_path, capsys):
    assert cli.main(["report", str(real["a"]), str(real["slow"])]) == 0
    assert "side by side" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "missing.jsonl"), "--html", str(tmp_path / "r.html")]) == 2
    failed = tmp_path / "failed.jsonl"
    w = results.RunWriter.create(failed, {"name": "x"}, {"device": {"kind": "cpu", "name": "cpu"}})
    w.mark("end", status="complete")
    assert cli.main(["report", str(failed), "--png", str(tmp_path / "p")]) == 2
    assert "nothing to plot" in capsys.readouterr().err


def test_report_does_not_import_torch(real, tmp_path):
    code = f"""
import sys
sys.modules["torch"] = None
from rbench import cli
assert cli.main(["report", {str(real['a'])!r}, "--html", {str(tmp_path / 'r.html')!r}]) == 0
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
