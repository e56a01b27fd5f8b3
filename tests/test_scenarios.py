"""MLPerf scenarios through the real LoadGen: suite fields, records (metric, validity, early stopping, logs),
the server's QPS search, INVALID runs, SUT failures, a missing LoadGen, and compare on scenario records.

The LoadGen runs use ResNet-18 at 32 px on one CPU thread with durations of about a second; they test
the wiring (LoadGen's own verdicts reach the records), not the speed of anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rbench import console, results, scenario_spec, spec
from rbench.analysis import compare, sources

BASE = """
name: mlperf_test
models: [resnet18]
batch_sizes: [16]
image_size: 32
precisions: [fp32]
backends: [eager]
modes: [inference]
policy: {warmup_iters: 2, warmup_s: 0.0, timeout_s: 300}
"""


def suite(extra: str) -> spec.Suite:
    return spec.parse(BASE + extra, "test.yaml")


def test_scenario_fields_expand_into_keyed_cases_and_old_records_keep_matching():
    s = suite("scenarios: [single_stream, server]\nscenario_settings: {server: {latency_bound_ms: 50}}\n")
    cases = s.cases("cpu")
    assert [(c.scenario, c.batch_size) for c in cases] == [("single_stream", 1), ("server", 16)]
    assert cases[1].id.endswith("/server") and dict(zip(spec.KEY_FIELDS, cases[1].key()))["scenario"] == "server"
    assert cases[1].scenario_settings == {"latency_bound_ms": 50}
    plain = suite("").cases("cpu")[0]
    old_record = {k: v for k, v in plain.to_dict().items() if k not in ("scenario", "scenario_settings")}
    assert spec.record_key(old_record) == plain.key()  # a run file from before `scenario` existed
    assert spec.from_dict(s.to_dict()) == s  # --resume rebuilds the same suite
    server = scenario_spec.settings("server", cases[1].scenario_settings)
    assert (server.latency_bound_ms, server.min_duration_s, server.min_query_count) == (50, 600, 100)
    assert scenario_spec.settings("multi_stream").samples_per_query == 8
    assert scenario_spec.mlperf_length("server", server)


@pytest.mark.parametrize("extra, where", [
    ("scenarios: [serverr]", "field 'scenarios[0]': unknown scenario 'serverr'; allowed: offline"),
    ("scenario_settings: {server: {qps: 5}}", "field 'scenario_settings.server.qps': unknown key; allowed: target_qps"),
    ("scenario_settings: {offline: {min_query_count: 1.5}}", "expected an integer"),
    ("scenario_settings: {server: {search_tolerance: 1.5}}", "out of range: 1.5; allowed: a fraction in (0, 1)"),
    ("max_batch: yes please", "field 'max_batch': expected true or false"),
])
def test_bad_scenario_fields_are_one_line_errors(extra, where):
    with pytest.raises(spec.SpecError) as e:
        suite(extra)
    assert where in str(e.value) and str(e.value).startswith("test.yaml:") and "\n" not in str(e.value)


@pytest.fixture(scope="module")
def executor():
    """Cases in this process, on one intra-op thread: on a small shared machine two threads spinning against
    other processes cost 10x, and LoadGen's latencies would measure that."""
    import torch

    from rbench.run import isolation

    threads, ex = torch.get_num_threads(), isolation.InProcess("cpu")
    torch.set_num_threads(1)
    yield ex
    ex.close()
    torch.set_num_threads(threads)


def run(tmp_path: Path, extra: str, executor: Any) -> tuple[list[dict[str, Any]], Path]:
    from rbench.run import runner

    s = suite(extra)
    writer = results.RunWriter.create(tmp_path / "run.jsonl", s.to_dict(), {}, device_kind="cpu")
    return runner.run_cases(s.cases("cpu"), s.policy, executor, writer), writer.path


def test_single_stream_record_carries_loadgen_metric_validity_and_logs(tmp_path, executor):
    records, path = run(tmp_path, """
scenarios: [single_stream, multi_stream]
scenario_settings:
  single_stream: {min_duration_s: 0.5, min_query_count: 80}
  multi_stream: {min_duration_s: 0.2, min_query_count: 10}
""", executor)
    ss, ms = records
    assert ss["status"] == "ok", ss["reason"]
    assert (ss["scenario"], ss["metric"], ss["metric_unit"], ss["better"]) == ("single_stream", "p90_latency_ms", "ms", "lower")
    assert ss["loadgen_result"] == "VALID" and ss["valid"] is True and ss["mlperf_length"] is False
    # MLPerf's single-stream figure is LoadGen's early-stopping estimate of the p90, as its summary states it.
    summary = Path(ss["loadgen_logs"]["summary"]).read_text()
    assert "Result is : VALID" in summary
    assert ss["metric_value"] == pytest.approx(ss["early_stopping"]["estimates_ms"]["p90"])
    assert f"Early stopping 90.0th percentile estimate: {round(ss['metric_value'] * 1e6)}" in summary
    assert ss["latency_ms"]["p50"] <= ss["latency_ms"]["p90"] <= ss["metric_value"] <= ss["latency_ms"]["max"]
    assert Path(ss["loadgen_logs"]["detail"]).is_file()
    assert Path(ss["loadgen_logs"]["dir"]).parent == path.with_name("run.mlperf")  # kept next to the run file
    assert ss["scenario_settings"]["min_query_count"] == 80 and ss["sut"]["samples"] >= 80
    # Too few queries for multi-stream's early stopping (662): LoadGen says INVALID and the record says so.
    assert ms["status"] == "ok" and ms["loadgen_result"] == "INVALID" and ms["valid"] is False
    assert ms["metric_value"] is None and ms["early_stopping"]["met"] is False
    assert ms["sut"]["mean_batch"] == 8  # each query's 8 samples in one batch (batch size 16 >= 8)
    assert [r["case_id"] for r in results.read_run(path).records] == [r["case_id"] for r in records]


def test_server_search_converges_and_brackets_its_answer(tmp_path, executor):
    (r,), _ = run(tmp_path, """
scenarios: [server]
scenario_settings:
  server: {min_duration_s: 0.5, min_query_count: 480, latency_bound_ms: 500, search_tolerance: 0.15, max_probes: 8}
""", executor)
    assert r["status"] == "ok", r["reason"]
    search, probes = r["search"], r["probes"]
    assert search["converged"] and search["probes"] == len(probes) >= 2
    assert search["passing_qps"] < search["failing_qps"] <= search["passing_qps"] * 1.15
    by_rate = {p["target_qps"]: p for p in probes}
    assert by_rate[search["passing_qps"]]["valid"] is True and by_rate[search["failing_qps"]]["valid"] is False
    assert r["valid"] is True and r["target_qps"] == search["passing_qps"]
    assert r["metric"] == "qps" and r["metric_value"] == by_rate[search["passing_qps"]]["qps"] > 0
    assert len({p["log_dir"] for p in probes}) == len(probes)  # every probe's logs are kept
    assert all((Path(p["log_dir"]) / "mlperf_log_summary.txt").is_file() for p in probes)


def test_impossible_latency_bound_gives_invalid_not_a_crash(tmp_path, executor):
    (r,), _ = run(tmp_path, """
scenarios: [server]
scenario_settings: {server: {target_qps: 50, latency_bound_ms: 0.001, min_duration_s: 0.3, min_query_count: 20}}
""", executor)
    assert r["status"] == "ok", r["reason"]
    assert r["loadgen_result"] == "INVALID" and r["valid"] is False
    assert r["loadgen"]["perf_constraints_met"] is False and r["target_qps"] == 50
    assert "search" not in r  # a fixed target_qps is one run


def test_injected_sut_failure_is_an_error_and_the_next_scenario_runs(tmp_path, executor, monkeypatch):
    from rbench.run import scenarios

    build, failed = scenarios._inference, []

    def failing_once(*args: Any) -> Any:
        infer, calls = build(*args), []

        def wrapped(indices: list[int]) -> Any:
            calls.append(1)
            if len(calls) == 6 and not failed:  # after the warm-up: inside LoadGen's run
                failed.append(True)
                raise RuntimeError("injected SUT failure")
            return infer(indices)
        return wrapped

    monkeypatch.setattr(scenarios, "_inference", failing_once)
    records, _ = run(tmp_path, """
scenarios: [single_stream, offline]
scenario_settings:
  single_stream: {min_duration_s: 0.3, min_query_count: 20}
  offline: {min_duration_s: 0.3, min_query_count: 64}
""", executor)
    assert [r["status"] for r in records] == ["error", "ok"], [r["reason"] for r in records]
    assert records[0]["reason"] == "RuntimeError: injected SUT failure"
    offline = records[1]  # LoadGen was shut down cleanly: the next scenario runs its own test
    assert offline["metric"] == "samples_per_second" and offline["metric_value"] > 0
    assert offline["sut"]["samples"] >= 64 and offline["loadgen_result"] in ("VALID", "INVALID")


def test_without_loadgen_scenario_cases_are_unsupported(monkeypatch, executor):
    from rbench.run import scenarios

    monkeypatch.setattr(scenarios, "loadgen", lambda: None)
    case = suite("scenarios: [offline]").cases("cpu")[0]
    record = executor.run(case, spec.Policy())
    assert record["status"] == "unsupported" and "pip install 'rbench[mlperf]'" in record["reason"]


def _scenario_record(name: str, value: float | None, better: str, valid: bool = True) -> dict[str, Any]:
    case = spec.Case("resnet50", 8, 224, "fp16", "eager", "inference", "channels_last", "cuda", scenario=name)
    return results.new_record(case, "ok", "", metric_value=value, metric_unit="x", better=better, valid=valid,
                              scenario_settings={})


@pytest.mark.parametrize("base, new, verdict", [
    (("server", 1000.0, "higher"), ("server", 1200.0, "higher"), "faster"),  # more QPS is better
    (("server", 1000.0, "higher"), ("server", 800.0, "higher"), "slower"),
    (("single_stream", 2.0, "lower"), ("single_stream", 1.5, "lower"), "faster"),  # a lower p90 is better
    (("single_stream", 2.0, "lower"), ("single_stream", 2.02, "lower"), "unchanged"),
])
def test_compare_judges_scenario_metrics_by_their_direction(base, new, verdict):
    def source(record: dict[str, Any]) -> sources.ResultFile:
        src = sources.ResultFile(Path("x.jsonl"), sources.RBENCH, {}, "m")
        src.items[results.case_key(record)] = sources.from_run(
            results.Run(Path("x.jsonl"), {"env": {}}, [record])).items[results.case_key(record)]
        return src

    cmp = compare.compare([source(_scenario_record(*base))], [source(_scenario_record(*new))])
    assert [r.verdict for r in cmp.rows] == [verdict]


def test_valid_to_invalid_is_a_regression_and_the_table_shows_the_metric():
    base, new = _scenario_record("server", 1000.0, "higher"), _scenario_record("server", 1100.0, "higher", valid=False)
    rows = [compare._judge(results.case_key(base), *(sources.from_run(results.Run(Path("x"), {}, [r])).items[
        results.case_key(r)] for r in (base, new)), 0.05)]
    assert rows[0].verdict == "regressed" and "VALID → INVALID" in rows[0].reason
    base["mlperf_length"] = False
    assert console.metric_cell(base) == "server 1000 x [green]VALID[/green] (short run)"
    assert console.metric_cell({"scenario": None}) == "-"
    assert console.metric_cell(base, markup=False) == "server 1000 x VALID (short run)"  # the HTML report's cell
