"""The max-batch search: doubling then bisection, every probe recorded, the answer a record of its own, a
probe that fails otherwise than by OOM stopping the search; and on a CPU under a memory limit, for real,
through `rbench maxbatch` and the worker process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rbench import cli, results, scenario_spec, spec
from rbench.run import maxbatch

CASE = spec.Case("resnet18", None, 32, "fp32", "eager", "inference", "channels_last", "cpu",  # type: ignore[arg-type]
                 scenario=scenario_spec.MAX_BATCH, scenario_settings={"tolerance": 0.05})


class FakeExecutor:
    """Runs out of memory above `fits`; `fail` maps a batch size to another status."""

    def __init__(self, fits: int, fail: dict[int, str] | None = None):
        self.fits, self.fail, self.batches = fits, fail or {}, []

    def run(self, case: spec.Case, policy: spec.Policy) -> dict[str, Any]:
        self.batches.append(case.batch_size)
        assert policy.min_iters == 1 and policy.warmup_iters == 1  # a probe, not a measurement
        status = self.fail.get(case.batch_size) or ("ok" if case.batch_size <= self.fits else "oom")
        return results.new_record(case, status, "" if status == "ok" else f"{status} at {case.batch_size}")


def search(tmp_path: Path, executor: FakeExecutor, case: spec.Case = CASE) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    writer = results.RunWriter.create(tmp_path / "mb.jsonl", {"name": "mb"}, {})
    answer = maxbatch.search(case, spec.Policy(), executor, writer)
    return answer, results.read_run(writer.path).records


def test_doubling_then_bisection_finds_the_largest_batch_and_records_every_probe(tmp_path):
    ex = FakeExecutor(fits=300)
    answer, probes = search(tmp_path, ex)
    assert ex.batches[:10] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]  # doubling until the first OOM
    assert answer["status"] == "ok" and answer["first_oom_batch"] - answer["max_batch"] <= 0.05 * answer["max_batch"]
    assert 286 <= answer["max_batch"] <= 300 < answer["first_oom_batch"]
    assert [p["batch_size"] for p in probes] == ex.batches and all(p["max_batch_probe"] for p in probes)
    assert {p["scenario"] for p in probes} == {"max_batch"} and answer["batch_size"] is None
    assert answer["case_id"].startswith("resnet18/bsmax/") and answer["metric_value"] == answer["max_batch"]
    keys = {results.case_key(r) for r in probes + [answer]}
    assert len(keys) == len(probes) + 1  # probes and answer never replace one another in a run file


@pytest.mark.parametrize("fail, status, reason", [
    ({1: "oom"}, "oom", "batch 1 already runs out of memory"),
    ({32: "error"}, "error", "probe at batch 32 ended error: error at 32; largest batch that ran: 16"),
    ({384: "timeout"}, "timeout", "probe at batch 384 ended timeout"),
])
def test_a_probe_that_cannot_answer_ends_the_search_with_its_status(tmp_path, fail, status, reason):
    answer, probes = search(tmp_path, FakeExecutor(fits=500, fail=fail))
    assert answer["status"] == status and reason in answer["reason"]
    assert probes[-1]["status"] == status  # never a silent fallback to a smaller batch


def test_the_upper_bound_is_said_when_every_batch_fits(tmp_path):
    case = spec.Case(**{**CASE.to_dict(), "scenario_settings": {"largest": 48}})
    answer, probes = search(tmp_path, FakeExecutor(fits=10**6), case)
    assert [p["batch_size"] for p in probes] == [1, 2, 4, 8, 16, 32, 48]
    assert answer["status"] == "ok" and answer["max_batch"] == 48 and answer["bounded"] and "largest=48" in answer["reason"]


def test_maxbatch_on_a_cpu_with_a_memory_limit_finds_a_batch_whose_next_doubling_is_oom(tmp_path, monkeypatch):
    """For real: every probe in the worker process under a 64 MiB cap (RLIMIT_AS) on the timed steps."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the worker's torch: one thread on a small shared machine
    (tmp_path / "mb.yaml").write_text(
        "{name: mb, models: [resnet18], batch_sizes: [1], image_size: 32, precisions: [fp32], backends: [eager], "
        "modes: [inference], policy: {timeout_s: 120},\n"
        " scenario_settings: {max_batch: {memory_limit_mb: 64, start: 128, tolerance: 0.9}}}\n")
    code = cli.main(["maxbatch", str(tmp_path / "mb.yaml"), "--out", str(tmp_path / "out")])
    (path,) = (tmp_path / "out").glob("*.jsonl")
    run = results.read_run(path)
    answer = [r for r in run.records if r["batch_size"] is None][0]
    probes = {r["batch_size"]: r for r in run.records if r.get("max_batch_probe")}
    assert code == 0 and answer["status"] == "ok", json.dumps(answer)[:500]
    top = answer["max_batch"]
    doubled = max(b for b in probes if b & (b - 1) == 0 and probes[b]["status"] == "ok") * 2
    assert probes[doubled]["status"] == "oom" and "can't allocate memory" in probes[doubled]["reason"]
    assert probes[top]["status"] == "ok" and doubled // 2 <= top < answer["first_oom_batch"] <= doubled
    assert probes[answer["first_oom_batch"]]["status"] == "oom"
    assert [p["batch_size"] for p in answer["probes"]] == [r["batch_size"] for r in run.records[:-1]]


def test_a_maxbatch_run_file_resumes_with_its_searches_alone(tmp_path):
    """`rbench run --resume` of an `rbench maxbatch` file must not start the suite's closed loops."""
    from rbench.run import session

    suite = tmp_path / "mb.yaml"
    suite.write_text("{name: mb, models: [resnet18, resnet34], batch_sizes: [1, 2], image_size: 32, precisions: [fp32], "
                     "backends: [eager], modes: [inference]}\n")
    opened = session.open_session(str(suite), tmp_path / "out", "cpu", max_batch_only=True, argv=[])
    searches = {c.id for c in opened.todo}
    assert len(searches) == 2 and all(c.scenario == "max_batch" and c.batch_size is None for c in opened.todo)
    assert results.read_run(opened.path).header["max_batch_only"] is True
    resumed = session.resume_session(opened.path)
    assert {c.id for c in resumed.todo} == searches  # not the 4 closed-loop cases of the suite
    plain = session.open_session(str(suite), tmp_path / "out", "cpu", argv=[])
    assert len(plain.todo) == 4 and "max_batch_only" not in results.read_run(plain.path).header


def test_strict_does_not_count_the_probes_that_ran_out_of_memory(monkeypatch):
    from rbench.cli import run_commands

    probe_oom = {"status": "oom", "max_batch_probe": True}
    loop_oom = {"status": "oom"}
    assert not run_commands.strict_failures([probe_oom, {"status": "ok"}])
    assert run_commands.strict_failures([probe_oom, loop_oom]) == [loop_oom]
