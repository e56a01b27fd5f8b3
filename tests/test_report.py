"""`rbench report`: figures, the self-contained HTML file, PNGs, the vendor peak table."""

from __future__ import annotations

import base64
import io
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


def flagship_run(path: Path, device: str, kind: str, speed: float, statuses: dict | None = None,
                 suite: str = "resnet50_fp16", precision: str = "fp16") -> Path:
    """A run file shaped like the flagship suite's on `device`: ResNet-50 at batch 1 and 256, eager,
    compile and triton, inference (and an eager training case the headline must ignore). Test data only:
    the figures are made up (img/s = speed x batch x a per-backend factor)."""
    from rbench import spec

    statuses = statuses or {}
    w = results.RunWriter.create(path, {"name": suite}, {"device": {"kind": kind, "name": device},
                                                         "git": {"sha": "0123456789abcdef", "dirty": False}})
    for backend, factor in (("eager", 1.0), ("compile", 1.5), ("triton", 2.0)):
        for batch in (1, 256):
            for mode in ("inference", "training") if backend == "eager" else ("inference",):
                case = spec.Case("resnet50", batch, 224, precision, backend, mode, "channels_last", kind)
                status = statuses.get((backend, batch), "ok")
                ips = speed * batch * factor * (0.3 if mode == "training" else 1.0)
                metrics = dict(throughput_ips=ips, latency_ms={"p50": 1e3 * batch / ips, "p99": 1.1e3 * batch / ips},
                               samples_ms=[1e3 * batch / ips] * 5, tflops=ips * 8.2e-3) if status == "ok" else {}
                w.append(results.new_record(case, status, "" if status == "ok" else "made up", **metrics))
    w.mark("end", status="complete")
    return path


def kernel_json(path: Path, gpu: str | None, vs_cudnn: float, vs_unfused: float) -> Path:
    env = {"gpu": gpu} if gpu else {}
    path.write_text(json.dumps({"kind": "rbench_kernels.bench", "env": env, "complete": True, "summary": {
        "float16/batch256": {"layers": 24, "geomean_cudnn_conv_over_ours": vs_cudnn,
                             "geomean_unfused_over_ours": vs_unfused}}}))
    return path


def test_headline_per_gpu_from_runs_and_the_kernel_benchmark(tmp_path):
    from rbench.analysis import headline

    flagship_run(tmp_path / "h200.jsonl", "NVIDIA H200", "cuda", 10.0, {("triton", 1): "incorrect"})
    # the same case measured by another suite, slower: the flagship's figure is the headline
    flagship_run(tmp_path / "other.jsonl", "NVIDIA H200", "cuda", 1.0, suite="triton_vs_torch")
    flagship_run(tmp_path / "cpu.jsonl", "AMD EPYC 7763", "cpu", 0.1, {("triton", 1): "unsupported",
                                                                   ("triton", 256): "unsupported"}, precision="fp32")
    kernel_json(tmp_path / "kernels.json", "NVIDIA H200", 0.93, 1.21)
    kernel_json(tmp_path / "smoke.json", None, 99.0, 99.0)  # a CPU smoke run: its figures mean nothing
    runs = report.load_runs([tmp_path])
    hs = headline.headlines(runs, headline.kernel_benchmarks([tmp_path]))
    assert [h.device for h in hs] == ["NVIDIA H200", "AMD EPYC 7763"]  # GPUs first
    gpu, cpu = hs
    assert (gpu.precision, gpu.image_size, gpu.throughput_batch) == ("fp16", 224, 256)
    assert gpu.rows["eager"][0].value == pytest.approx(2560.0) and gpu.rows["compile"][0].value == pytest.approx(3840.0)
    assert gpu.rows["eager"][1].value == pytest.approx(100.0)  # p50 ms at batch 1: 1000 / 10
    assert gpu.rows["triton"][1] == headline.Cell(None, "incorrect")
    assert "0.93x geomean over 24 ResNet-50 layers" in gpu.kernel_line() and "1.21x" in gpu.kernel_line()
    assert cpu.precision == "fp32" and cpu.rows["triton"][0].text(",.1f") == "unsupported"
    assert "measured on GPUs only" in cpu.kernel_line()
    text = headline.to_text(hs)
    assert "img/s at batch 256" in text and "2,560.0" in text and "NVIDIA H200 (cuda)" in text


def test_headline_of_a_cpu_uses_its_largest_batch_and_says_no_gpu(tmp_path):
    from rbench.analysis import headline

    run = flagship_run(tmp_path / "cpu.jsonl", "AMD EPYC 7763", "cpu", 0.1, precision="fp32")
    lines = run.read_text().splitlines()
    run.write_text("\n".join(line for line in lines if '"batch_size": 256' not in line) + "\n")
    four = tmp_path / "bs4.jsonl"
    flagship_run(four, "AMD EPYC 7763", "cpu", 0.1, precision="fp32")
    four.write_text(four.read_text().replace('"batch_size": 256', '"batch_size": 4'))
    (h,) = headline.headlines(report.load_runs([tmp_path]))
    assert h.throughput_batch == 4 and headline.columns(h)[0] == "img/s at batch 4"
    out = tmp_path / "page.html"
    assert cli.main(["report", str(tmp_path), "--html", str(out)]) == 0
    page = out.read_text()
    assert "No GPU results yet" in page and "AMD EPYC 7763 (cpu): ResNet-50 fp32, 224 px (CPU example)" in page


def test_page_with_a_gpu_leads_with_its_headline(tmp_path):
    h200 = flagship_run(tmp_path / "h200.jsonl", "NVIDIA H200", "cuda", 10.0)
    h200.write_text(h200.read_text().replace('"warnings": []', '"warnings": ["another process used the GPU"]', 1))
    flagship_run(tmp_path / "cpu.jsonl", "AMD EPYC 7763", "cpu", 0.1, precision="fp32")
    kernel_json(tmp_path / "kernels.json", "NVIDIA H200", 0.93, 1.21)
    out = tmp_path / "page.html"
    assert cli.main(["report", str(tmp_path), "--html", str(out)]) == 0
    page = out.read_text()
    head = page[page.index("Headline"):page.index("<h2>Runs</h2>")]
    assert "No GPU results yet" not in page and "NVIDIA H200 (cuda): ResNet-50 fp16, 224 px" in head
    assert "AMD EPYC" not in head and "2,560.0" in head and "0.93x geomean" in head
    assert "another process used the GPU" in page[page.index("<h2>All cases</h2>"):]  # a case's warnings are shown


def test_pngs_keep_their_legends_inside(three_devices, tmp_path):
    import matplotlib.image
    import numpy as np

    built = report.build(report.load_runs(three_devices))
    for f in built.figures:
        a = matplotlib.image.imread(io.BytesIO(f.png), format="png")[..., :3]
        edge = np.concatenate([a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3),
                               a[:, -2:].reshape(-1, 3)])
        assert not (edge < 0.95).any(axis=1).any(), f"{f.name}: drawn up to the figure's edge (a legend cut off)"
