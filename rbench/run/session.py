"""One `rbench run`: open the run file (new, or resumed), pick the cases still to measure, run them.

The command line only parses and prints; this is where a suite becomes a run file. `open_session`
either creates the run file (header with the suite and the machine's environment) or resumes one,
in which case only the cases without a record are measured, with the suite as stored in the file.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbench import results, spec
from rbench.hw import detect
from rbench.hw.base import Device
from rbench.names import printable
from rbench.run import distributed_launch, models, runner
from rbench.scenario_spec import MAX_BATCH


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
    finished: list[dict[str, Any]] = field(default_factory=list)  # measured by this invocation
    notes: list[str] = field(default_factory=list)  # what opening the run file repaired, for the user
    already_complete: bool = False  # a resumed run with nothing left to measure (nothing was appended)

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
        """The run file's records, one per case (the last measurement of each counts), this and earlier invocations."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", results.TornLineWarning)  # said once, when the session opened
            return results.read_run(self.path).latest_records()


def _check_filter(patterns: Sequence[str], cases: Sequence[spec.Case], suite: spec.Suite) -> None:
    """A `--filter` that selects no case is a mistake, not a run of nothing but `skipped` records."""
    if patterns and not any(all(p in c.id for p in patterns) for c in cases):
        shown = " ".join(f"--filter {p!r}" for p in patterns)
        raise SessionError(f"{shown}: selects none of the {len(cases)} cases of suite {printable(suite.name)!r}; "
                           f"case ids look like {cases[0].id} (a case runs if its id contains every TEXT)")


def _device(kind: str, where: str) -> Device:
    try:
        return detect.detect(kind)
    except (ValueError, RuntimeError) as e:
        raise SessionError(f"{where}: {e}") from None


def _only_max_batch(cases: list[spec.Case]) -> list[spec.Case]:
    return [c for c in cases if c.scenario == MAX_BATCH]


def open_session(suite_path: str | None, out_dir: str | Path, device: str | None = None,
                 patterns: Sequence[str] = (), argv: Sequence[str] | None = None,
                 launch: distributed_launch.Launch | None = None, max_batch_only: bool = False) -> Session:
    """Start a new run of the suite at `suite_path` into a new run file under `out_dir`.

    `max_batch_only` (`rbench maxbatch`): only the suite's max-batch searches; the header says so, and the
    suite it stores is the one searched, so that `rbench run --resume` goes on with the searches alone."""
    if not suite_path:
        raise SessionError("give a suite file (e.g. suites/smoke.yaml) or --resume RUNFILE")
    suite = spec.load(suite_path, models.names())
    if max_batch_only:
        suite = dataclasses.replace(suite, max_batch=True, scenarios=())
    where = "--device" if device else f"{suite_path}: field 'device'"
    dev = _device(device or suite.device, where)
    profile = suite.for_device(dev.kind)
    ranks = distributed_launch.plan(profile.cases(dev.kind), dev, launch)  # nproc_per_node capped; every rank's device
    cases = _only_max_batch(ranks.cases) if max_batch_only else ranks.cases
    _check_filter(patterns, cases, suite)
    path = results.default_path(out_dir, suite.name, dev.kind)
    env = {**detect.environment(dev), **ranks.env}
    try:  # created exclusively: two runs started in the same second get two files
        writer = results.RunWriter.create(path, suite.to_dict(), env, device_kind=dev.kind, suite_path=str(suite_path),
                                          argv=list(argv if argv is not None else sys.argv), filter=list(patterns),
                                          **({"max_batch_only": True} if max_batch_only else {}), **ranks.header)
    except results.RunWriteError as e:
        raise SessionError(f"cannot start the run file: {e}") from None
    return Session(writer.path, writer, suite, profile, dev, cases, list(cases), patterns=tuple(patterns))


def resume_session(run_path: str | Path, patterns: Sequence[str] | None = None,
                   launch: distributed_launch.Launch | None = None) -> Session:
    """Continue the run file at `run_path`: the same suite, device kind and `--filter` as it started with."""
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", results.TornLineWarning)
            previous = results.read_run(run_path)
        notes = [str(w.message) for w in seen if issubclass(w.category, results.TornLineWarning)]
        cut = results.repair_tail(run_path)  # nothing is ever appended after a half line
        if cut:
            notes.append(f"cut the torn last line off {run_path} ({cut[1]} bytes, kept in {cut[0]})")
    except (results.RunFileError, results.RunWriteError) as e:
        raise SessionError(f"cannot resume: {e}") from None
    suite = spec.from_dict(previous.suite)
    dev = _device(previous.header.get("device_kind", "auto"), f"{run_path}: device_kind")
    profile = suite.for_device(dev.kind)
    cases = distributed_launch.plan(profile.cases(dev.kind), dev, launch, identify=False).cases
    if previous.header.get("max_batch_only"):  # an `rbench maxbatch` run: its searches, not the suite's loops
        cases = _only_max_batch(cases)
    stored = tuple(previous.header.get("filter") or ())
    chosen = tuple(patterns) if patterns else stored
    # A new --filter on resume may select cases the first filter skipped: those are measured now.
    reconsider = {"skipped"} if chosen != stored else set()
    measured = {results.case_key(r) for r in previous.records if r.get("status") not in reconsider}
    todo = [c for c in cases if c.key() not in measured]
    if chosen != stored:
        _check_filter(chosen, cases, suite)
    writer = results.RunWriter(Path(run_path))
    session = Session(Path(run_path), writer, suite, profile, dev, cases, todo, resumed=True, patterns=chosen,
                      notes=notes, already_complete=not todo)
    try:
        if todo:
            writer.mark("resume", remaining=len(todo), filter=list(chosen))
        elif previous.status != "complete":  # stopped after its last record: it is complete now
            session.end("complete", "every case already had a record when resumed")
            notes.append(f"{run_path} was {previous.status} but every case has a record: marked complete")
    except results.RunWriteError as e:  # a complete run stays as it was: nothing is appended to it
        raise SessionError(f"cannot resume: {e}") from None
    return session
