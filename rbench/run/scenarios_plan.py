"""How the parent runs one case of a suite: closed loops as they are, scenarios with their log directory and
time-out, max-batch searches as probe cases.

This runs in `rbench run`'s process, beside the run file: a scenario case is told where LoadGen's logs
go (a directory next to the run file, one folder per case) and gets a time-out that covers its LoadGen
runs (the policy's `timeout_s` is the slack beyond their minimum durations); a max-batch search
becomes probes (`rbench.run.maxbatch.search`). Everything else goes to the executor unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rbench import results, scenario_spec
from rbench.names import slug
from rbench.run import maxbatch
from rbench.scenario_spec import MAX_BATCH, SCENARIOS
from rbench.spec import Case, Policy


def log_dir(run_path: Path, case: Case) -> Path:
    """`<run file without .jsonl>.mlperf/<case id>/`: LoadGen's logs kept next to the run file."""
    name = run_path.name[: -len(results.RUN_SUFFIX)] if run_path.name.endswith(results.RUN_SUFFIX) else run_path.stem
    return run_path.with_name(f"{name}.mlperf") / slug(case.id)


def loadgen_runs(case: Case) -> tuple[int, float]:
    """(LoadGen runs at most, minimum seconds of each) for a scenario case: a server search runs up to max_probes."""
    s = scenario_spec.settings(case.scenario, case.scenario_settings)
    return (s.max_probes if case.scenario == "server" and not s.target_qps else 1), s.min_duration_s


def run(case: Case, policy: Policy, executor: Any, writer: results.RunWriter) -> dict[str, Any]:
    """The record of `case`; a max-batch search also writes its probes' records to `writer` as they end."""
    if case.scenario == MAX_BATCH and case.batch_size is None:
        return maxbatch.search(case, policy, executor, writer)
    if case.scenario in SCENARIOS:
        runs, seconds = loadgen_runs(case)
        given = {**(case.scenario_settings or {}), "log_dir": str(log_dir(writer.path, case))}
        case = dataclasses.replace(case, scenario_settings=given)
        policy = dataclasses.replace(policy, timeout_s=policy.timeout_s + runs * seconds)
    return executor.run(case, policy)
