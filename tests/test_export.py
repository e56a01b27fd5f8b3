"""`rbench export`: CSV, github-action-benchmark custom JSON and Bencher Metric Format, each validated
against the format's published shape, from a real CPU run and from records with memory and energy."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import realruns
from test_compare import case, run_cli, write_run
from test_compare_resources import GIB, counter_power, measured
from test_history import tiny_case

from rbench import results
from rbench.analysis import export

# github-action-benchmark reads a custom benchmark file as a list of its `BenchmarkResult`
# (src/extract.ts: `{name: string; value: number; range?: string; unit: string; extra?: string}`;
# README "Examples", customSmallerIsBetter / customBiggerIsBetter); an empty list is an error there
# ("No benchmark result was found").
GAB_SCHEMA = {
    "type": "array", "minItems": 1,
    "items": {"type": "object", "required": ["name", "unit", "value"], "additionalProperties": False,
              "properties": {"name": {"type": "string", "minLength": 1}, "unit": {"type": "string"},
                             "value": {"type": "number"}, "range": {"type": "string"}, "extra": {"type": "string"}}},
}
# The Bencher Metric Format JSON Schema as published (https://bencher.dev/bmf.json, draft-07, on
# bencher.dev/docs/reference/bencher-metric-format), with the documented length limits added: a
# benchmark name at most 1024 characters, a measure slug at most 64.
BMF_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema", "type": "object",
    "propertyNames": {"maxLength": 1024},
    "patternProperties": {".+": {
        "type": "object", "propertyNames": {"maxLength": 64, "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
        "patternProperties": {".+": {
            "type": "object", "required": ["value"],
            "properties": {"value": {"type": "number"}, "lower_value": {"type": "number"},
                           "upper_value": {"type": "number"}}}}}},
}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real CPU run of resnet18/bs1/32px (20 one-iteration windows, the harness's own timing)."""
    from rbench.hw import detect

    with tiny_case() as (suite, device, c):
        timed = realruns._windows(c, device, ["a"], rounds=20)["a"]
        w = results.RunWriter.create(tmp_path_factory.mktemp("export") / "real.jsonl", suite.to_dict(),
                                     detect.environment(device), device_kind="cpu")
        w.append(realruns._record(c, timed))
        w.append(results.new_record(c.__class__(**{**c.to_dict(), "batch_size": 4}), "oom", "out of memory"))
        w.mark("end", status="complete")
        return w.path


@pytest.fixture
def gpu_like(tmp_path: Path) -> Path:
    """Records with peak memory and a counter-measured energy figure, as a GPU run writes them."""
    return write_run(tmp_path / "gpu.jsonl", [measured(1, 1.5 * GIB, counter_power(0.8, bound=0.02)),
                                              measured(8, 3 * GIB, None)])


def test_csv_has_the_documented_columns_and_one_row_per_record(real_run, capsys):
    code, out, _ = run_cli("export", str(real_run), "--format", "csv", capsys=capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and list(rows[0]) == list(export.CSV_COLUMNS) and len(rows) == 2
    (record,) = [r for r in results.read_run(real_run).latest_records() if r["status"] == "ok"]
    ok, oom = rows
    assert ok["case_id"] == record["case_id"] and ok["status"] == "ok" and oom["status"] == "oom"
    assert float(ok["throughput_ips"]) == pytest.approx(record["throughput_ips"])
    assert float(ok["latency_ms.p50"]) == pytest.approx(record["latency_ms"]["p50"]) and ok["device_kind"] == "cpu"
    assert oom["reason"] == "out of memory" and oom["throughput_ips"] == ""
    assert "samples_ms" not in ok
    code, out, _ = run_cli("export", str(real_run), "--format", "csv", "--samples", capsys=capsys)
    ok = next(csv.DictReader(io.StringIO(out)))
    assert [float(x) for x in ok["samples_ms"].split()] == pytest.approx(record["samples_ms"])


def test_gab_latency_and_throughput_validate(real_run, tmp_path, capsys):
    out = tmp_path / "gab.json"
    code, _, err = run_cli("export", str(real_run), "--format", "gab", "-o", str(out), capsys=capsys)
    data = json.loads(out.read_text())
    jsonschema.validate(data, GAB_SCHEMA)
    assert code == 0 and "customSmallerIsBetter" in err and "not exported" in err  # the oom case is noted
    (record,) = [r for r in results.read_run(real_run).latest_records() if r["status"] == "ok"]
    p50, p99 = data
    assert p50["name"] == f"{record['case_id']} latency p50" and p50["unit"] == "ms"
    assert p50["value"] == record["latency_ms"]["p50"] and p99["value"] == record["latency_ms"]["p99"]
    assert p50["range"].startswith("± ") and float(p50["range"][2:]) > 0 and "n = 20 iterations" in p50["extra"]
    code, text, err = run_cli("export", str(real_run), "--format", "gab", "--metric", "throughput", capsys=capsys)
    (tp,) = json.loads(text)
    jsonschema.validate([tp], GAB_SCHEMA)
    assert "customBiggerIsBetter" in err and tp["unit"] == "images/s" and tp["value"] == record["throughput_ips"]


def test_gab_memory_and_energy(gpu_like, capsys):
    code, text, err = run_cli("export", str(gpu_like), "--format", "gab", "--metric", "memory", capsys=capsys)
    data = json.loads(text)
    jsonschema.validate(data, GAB_SCHEMA)
    assert [d["value"] for d in data] == [1.5 * 1024, 3 * 1024] and data[0]["unit"] == "MiB" and "range" not in data[0]
    code, text, _ = run_cli("export", str(gpu_like), "--format", "gab", "--metric", "energy", capsys=capsys)
    (energy,) = json.loads(text)  # the case without an energy figure is left out, not given 0
    assert energy["value"] == 0.8 and energy["range"] == f"± {0.8 * 0.02:.4g}" and energy["unit"] == "J/image"


def test_bmf_validates_with_intervals_from_the_samples(real_run, gpu_like, capsys):
    code, text, _ = run_cli("export", str(real_run), "--format", "bmf", capsys=capsys)
    data = json.loads(text)
    jsonschema.validate(data, BMF_SCHEMA)
    (record,) = [r for r in results.read_run(real_run).latest_records() if r["status"] == "ok"]
    m = data[record["case_id"]]
    assert set(m) == {"throughput", "latency", "latency-p99"}  # no memory or energy recorded by this run
    assert m["latency"]["value"] == pytest.approx(record["latency_ms"]["p50"] * 1e6)  # Bencher's latency is ns
    for measure in m.values():
        assert measure["lower_value"] <= measure["value"] <= measure["upper_value"]
    assert m["latency-p99"]["upper_value"] == pytest.approx(max(record["samples_ms"]) * 1e6)  # 20 samples: p99 ≤ max
    code, text, _ = run_cli("export", str(gpu_like), "--format", "bmf", capsys=capsys)
    data = json.loads(text)
    jsonschema.validate(data, BMF_SCHEMA)
    one = data["resnet50/bs1/224px/fp16/eager/inference/channels_last"]
    assert one["peak-memory"] == {"value": 1.5 * GIB}
    assert one["energy-per-image"] == pytest.approx({"value": 0.8, "lower_value": 0.8 * 0.98, "upper_value": 0.8 * 1.02})
    assert "energy-per-image" not in data["resnet50/bs8/224px/fp16/eager/inference/channels_last"]


def test_schemas_reject_what_the_tools_reject(real_run):
    """The checks above can fail: the schemas refuse malformed documents."""
    text, _ = export.export([real_run], "bmf")
    bad: dict[str, Any] = json.loads(text)
    next(iter(bad.values()))["latency"]["value"] = "12 ms"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, BMF_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"name": "x", "value": 1.0}], GAB_SCHEMA)  # unit missing
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([], GAB_SCHEMA)


def test_several_devices_are_named_and_repeated_cases_take_the_latest(tmp_path):
    from test_compare import ENV

    write_run(tmp_path / "h100.jsonl", [measured(1, GIB, None)])
    write_run(tmp_path / "a100.jsonl", [measured(1, GIB, None)],
              env={**ENV, "device": {"kind": "cuda", "name": "NVIDIA A100-SXM4-80GB"}})
    data = json.loads(export.export([tmp_path], "bmf")[0])
    assert sorted(data) == ["NVIDIA A100-SXM4-80GB resnet50/bs1/224px/fp16/eager/inference/channels_last",
                            "NVIDIA H100 80GB HBM3 resnet50/bs1/224px/fp16/eager/inference/channels_last"]
    write_run(tmp_path / "later" / "h100b.jsonl", [measured(1, 2 * GIB, None)])
    cases, notes = export.measured_cases(list(results.iter_runs(tmp_path / "later")) + list(results.iter_runs(tmp_path / "h100.jsonl")))
    assert len(cases) == 1 and any("measured again" in n for n in notes)


def test_bad_input_exits_2(tmp_path, capsys):
    bench = tmp_path / "kernels.json"
    bench.write_text(json.dumps({"machine_info": {}, "benchmarks": []}))
    code, _, err = run_cli("export", str(bench), "--format", "gab", capsys=capsys)
    assert code == 2 and "tool: pytest" in err and "python_pytest" in err
    assert run_cli("export", str(tmp_path / "nothing"), "--format", "csv", capsys=capsys)[0] == 2
    failed = write_run(tmp_path / "f.jsonl", [results.new_record(case(1), "oom", "out of memory")])
    code, _, err = run_cli("export", str(failed), "--format", "bmf", capsys=capsys)
    assert code == 2 and "nothing to export" in err
    with pytest.raises(SystemExit) as e:
        run_cli("export", str(failed), "--format", "xml", capsys=capsys)
    assert e.value.code == 2
