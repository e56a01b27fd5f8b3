"""One `rbench run`: open the run file (new, or resumed), pick the cases still to measure, run them.

The command line only parses and prints; this is where a suite becomes a run file. `open_session`
either creates the run file (header with the suite and the machine's environment) or resumes one,
in which case only the cases without a record are measured, with the suite as stored in the file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbench import results, spec
from rbench.hw import detect
from rbench.hw.base import Device
from rbench.run import distributed_launch, models, runner


class SessionError(ValueError):
    """Input that cannot start a run (a suite, a device, a run file to resume); one line, exit 2."""


@dataclass
class Session:
    """A run file being written and the cases it still needs."""

    path: Path
    writer: results.RunWriter
    suite: spec.Suite  # as loaded (or as stored in the resumed run file)
    profile: spec.Suite  # the suite with this device's overrides applied
    device: Device
    cases: list[spec.Case]  # every case of the profile
    todo: list[spec.Case]  # those without a record yet
    resumed: bool = False
    patterns: tuple[str, ...] = ()
    finished: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uses_profile(self) -> bool:
        return self.profile is not self.suite

    def selected(self, case: spec.Case) -> bool:
        """`--filter`: a case is measured only if its id contains every pattern."""
        return all(p in case.id for p in self.patterns)

    def run(self, executor: Any, on_start: Callable[[int, spec.Case], None] = lambda i, c: None,
            on_done: Callable[[int, dict[str, Any]], None] = lambda i, r: None) -> None:
        """Measure every case still to do, appending each record as soon as it exists."""
        def done(i: int, record: dict[str, Any]) -> None:
            self.finished.append(record)
            on_done(i, record)

        runner.run_cases(self.todo, self.profile.policy, executor, self.writer, self.selected,
                         on_start=on_start, on_done=done)

    def end(self, status: str, reason: str = "") -> None:
        self.writer.mark("end", status=status, **({"reason": reason} if reason else {}))

    def records(self) -> list[dict[str, Any]]:
        """The run file's records, one per case (the last measurement of each counts)."""
        return results.read_run(self.path).latest_records()


def _device(kind: str, where: str) -> Device:
    try:
        return detect.detect(kind)
    except (ValueError, RuntimeError) as e:
        raise SessionError(f"{where}: {e}") from None


def open_session(suite_path: str | None, out_dir: str | Path, device: str | None = None,
                 patterns: Sequence[str] = (), argv: Sequence[str] | None = None,
                 launch: distributed_launch.Launch | None = None) -> Session:
    """Start a new run of the suite at `suite_path` into a new run file under `out_dir`."""
    if not suite_path:
        raise SessionError("rbench run: give a suite file (e.g. suites/smoke.yaml) or --resume RUNFILE")
    suite = spec.load(suite_path, models.names())
    where = "--device" if device else f"{suite_path}: field 'device'"
    dev = _device(device or suite.device, where)
    profile = suite.for_device(dev.kind)
    ranks = distributed_launch.plan(profile.cases(dev.kind), dev, launch)  # nproc_per_node capped; every rank's device
    cases = ranks.cases
    path = results.default_path(out_dir, suite.name, dev.kind)
    writer = results.RunWriter.create(path, suite.to_dict(), {**detect.environment(dev), **ranks.env}, device_kind=dev.kind,
                                      suite_path=str(suite_path), argv=list(argv if argv is not None else sys.argv),
                                      filter=list(patterns), **ranks.header)
    return Session(path, writer, suite, profile, dev, cases, list(cases), patterns=tuple(patterns))


def resume_session(run_path: str | Path, patterns: Sequence[str] | None = None,
                   launch: distributed_launch.Launch | None = None) -> Session:
    """Continue the run file at `run_path`: the same suite, device kind and `--filter` as it started with."""
    try:
        previous = results.read_run(run_path)
    except results.RunFileError as e:
        raise SessionError(str(e)) from None
    suite = spec.from_dict(previous.suite)
    dev = _device(previous.header.get("device_kind", "auto"), f"{run_path}: device_kind")
    profile = suite.for_device(dev.kind)
    cases = distributed_launch.plan(profile.cases(dev.kind), dev, launch, identify=False).cases
    stored = tuple(previous.header.get("filter") or ())
    chosen = tuple(patterns) if patterns else stored
    # A new --filter on resume may select cases the first filter skipped: those are measured now.
    reconsider = {"skipped"} if chosen != stored else set()
    measured = {results.case_key(r) for r in previous.records if r.get("status") not in reconsider}
    todo = [c for c in cases if c.key() not in measured]
    writer = results.RunWriter(Path(run_path))
    writer.mark("resume", remaining=len(todo), filter=list(chosen))
    return Session(Path(run_path), writer, suite, profile, dev, cases, todo, resumed=True, patterns=chosen)
