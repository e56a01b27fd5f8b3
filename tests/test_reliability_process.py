"""No measured result is lost or hidden by signals and dying processes: a double Ctrl-C, SIGTERM after a
case finished, a killed `rbench run`, the kernel's OOM killer (issue 10, items 5, 6 and 7; issue 18, item 10).

Real processes and real signals throughout. The OOM killer is real where the test may create a memory
cgroup (root, cgroup v1 or v2 with the memory controller); its twins stand in for the kernel's
evidence files and run everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import realruns
from test_reliability import partial_run  # runs of a 3-case suite (batch 1, 2, 3), 2 or 3 recorded

from rbench import cli, results
from rbench.run import isolation
from rbench.spec import Case, Policy

QUICK = Policy(warmup_iters=1, warmup_s=0.0, min_iters=2, min_s=0.0, max_s=60.0, timeout_s=120.0)
LONG = Policy(warmup_iters=1, warmup_s=0.0, min_iters=3, min_s=120.0, max_s=600.0, timeout_s=900.0)


def case(batch: int = 1) -> Case:
    return Case("resnet18", batch, 32, "fp32", "eager", "inference", "channels_last", "cpu")


def kill_if_alive(pid: int | None) -> None:
    """Clean up after a failed assertion: only the process this test started, by its pid."""
    if pid and realruns.alive(pid):
        os.kill(pid, signal.SIGKILL)


# 5. Two Ctrl-C in a row.

def test_two_ctrl_c_in_a_row_end_cleanly_and_count_the_whole_file(tmp_path):
    path = partial_run(tmp_path, tear=False)  # 2 of 3 cases recorded; --resume measures the third
    proc = realruns.start_rbench("run", "--resume", str(path))
    worker = None
    try:
        worker = realruns.wait_for(lambda: realruns.worker_of(proc.pid), 120, "the worker process")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)  # what a user does when the first seems to do nothing
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        run = results.read_run(path)
        assert run.status == "interrupted" and run.events[-1]["type"] == "end"
        assert f"interrupted (SIGINT): {len(run.latest_records())} finished records are in {path}" in err
        assert len(run.latest_records()) >= 2  # the whole file counts, not only this invocation
        realruns.wait_for(lambda: not realruns.alive(worker), 10, "the worker to end")
    finally:
        proc.kill()
        kill_if_alive(worker)


# SIGTERM just after a case finished: the case is recorded, then the run stops.

REPLY_THEN_TERMINATE_PARENT = """
import json, os, signal, sys
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    record = dict(req["case"], status="ok", reason="", throughput_ips=1.0, samples_ms=[1.0])
    print(json.dumps({"record": record}), flush=True)
    os.kill(os.getppid(), signal.SIGTERM)
"""


def test_sigterm_after_a_case_finished_records_it_then_stops(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(REPLY_THEN_TERMINATE_PARENT)
    worker = isolation.Worker("cpu", tmp_path / "w.log", command=[sys.executable, str(script)])
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: worker.interrupt("SIGTERM"))
    try:
        first = worker.run(case(1), QUICK)
        assert first["status"] == "ok" and first["batch_size"] == 1  # finished before the signal: kept
        pid = worker.proc.pid if worker.proc else None
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            worker.run(case(2), QUICK)
        realruns.wait_for(lambda: pid is None or not realruns.alive(pid), 10, "the worker to be killed")
    finally:
        signal.signal(signal.SIGTERM, previous)
        worker.abort()


# 7. The worker dies with its parent.

SAY_WHEN_A_CASE_STARTS = """
import sys
import rbench.run.runner as runner
_execute = runner.execute
def execute(*args, **kwargs):
    print("rbench-test: case started", file=sys.stderr, flush=True)
    return _execute(*args, **kwargs)
runner.execute = execute
"""


def test_killing_rbench_ends_the_worker_in_the_middle_of_a_case(tmp_path, monkeypatch):
    """SIGKILL to `rbench run` (a job's time limit) while its worker measures: the worker goes too, at once.

    The case (50 iterations of 256 images) would keep the worker busy for a minute or more; a
    sitecustomize in the worker says in its log when the case has started.
    """
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SAY_WHEN_A_CASE_STARTS)
    monkeypatch.setenv("PYTHONPATH", f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    suite = realruns.write_suite(tmp_path, batches="[256]",
                                 policy="{warmup_iters: 1, warmup_s: 0, min_iters: 50, min_s: 0, max_s: 3600}")
    proc = realruns.start_rbench("run", str(suite), "--out", str(tmp_path / "out"))
    worker = None
    try:
        worker = realruns.wait_for(lambda: realruns.worker_of(proc.pid), 120, "the worker process")
        realruns.wait_for(lambda: "case started" in "".join(p.read_text() for p in (tmp_path / "out").glob("*.log")),
                          120, "the worker to start the case")
        proc.kill()
        proc.wait(timeout=30)
        realruns.wait_for(lambda: not realruns.alive(worker), 5, "the worker to die with its parent")
    finally:
        proc.kill()
        kill_if_alive(worker)


def test_worker_ends_when_its_parent_pipe_closes_mid_case(tmp_path):
    """The watchdog that ends the worker where PR_SET_PDEATHSIG does not exist: end-of-file on its stdin."""
    worker = isolation.Worker("cpu", tmp_path / "w.log")
    worker._start()
    proc = worker.proc
    try:
        request = {"case": case(8).to_dict(), "policy": dataclasses.asdict(LONG)}
        proc.stdin.write((json.dumps(request) + "\n").encode())
        proc.stdin.flush()
        proc.stdin.close()  # as the pipe looks from the worker's side when its parent is gone
        code = proc.wait(timeout=15)  # the case alone would take 120 s
        assert code == -signal.SIGKILL
    finally:
        kill_if_alive(proc.pid)
        worker.proc = None


# 6. The kernel's OOM killer.

def fake_worker(tmp_path: Path, on_request: str) -> list[str]:
    """A worker that speaks the protocol and, asked for a case, runs `on_request` (then SIGKILLs itself)."""
    script = tmp_path / "fake_worker.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, signal, sys
        from pathlib import Path
        print(json.dumps({{"ready": True}}), flush=True)
        sys.stdin.readline()
        {on_request}
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    return [sys.executable, str(script)]


@pytest.fixture
def evidence(tmp_path):
    """Stand-ins for the kernel's files: a cgroup memory.events and a /proc/meminfo with memory to spare."""
    events, meminfo = tmp_path / "memory.events", tmp_path / "meminfo"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:         9000000 kB\nMemAvailable:   12000000 kB\n")
    return isolation.MemoryWatch(counters=[events], meminfo=meminfo, interval_s=0.05), events, meminfo


def test_sigkill_with_a_rising_oom_kill_count_is_oom(tmp_path, evidence):
    watch, events, _ = evidence
    command = fake_worker(tmp_path, f"Path({str(events)!r}).write_text('max 9\\noom 2\\noom_kill 2\\n')")
    record = isolation.Worker("cpu", tmp_path / "w.log", command=command, memory=watch).run(case(), QUICK)
    assert record["status"] == "oom", record["reason"]
    assert f"oom_kill in {events} rose 1 -> 2" in record["reason"] and "SIGKILL" in record["reason"]


def test_sigkill_while_memory_ran_out_is_oom(tmp_path, evidence):
    watch, _, meminfo = evidence
    command = fake_worker(tmp_path, f"Path({str(meminfo)!r}).write_text('MemTotal: 16000000 kB\\nMemAvailable: 40960 kB\\n')")
    record = isolation.Worker("cpu", tmp_path / "w.log", command=command, memory=watch).run(case(), QUICK)
    assert record["status"] == "oom", record["reason"]
    assert "available memory fell to 40 MiB of 15.3 GiB" in record["reason"]


def test_sigkill_without_evidence_stays_an_error(tmp_path, evidence):
    watch, _, _ = evidence
    record = isolation.Worker("cpu", tmp_path / "w.log", command=fake_worker(tmp_path, "pass"), memory=watch).run(
        case(), QUICK)
    assert record["status"] == "error"
    assert record["reason"].startswith("worker process died (signal SIGKILL)")


ALLOCATE_IN_CGROUP = """
import json, os, sys
Path = __import__("pathlib").Path
Path(sys.argv[1], "cgroup.procs").write_text(str(os.getpid()))
print(json.dumps({"ready": True}), flush=True)
sys.stdin.readline()
hog = []
while True:
    hog.append(b"\\x01" * (4 << 20))  # written, so resident: the cgroup's limit is reached for real
"""


@pytest.fixture
def memory_cgroup(tmp_path):
    """A fresh memory cgroup limited to 64 MiB below this process's own; skipped where one cannot be made."""
    limit = str(64 << 20)
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            parent, files = Path("/sys/fs/cgroup/memory") / path.lstrip("/"), {"memory.limit_in_bytes": limit}
            break
    else:
        path = Path("/proc/self/cgroup").read_text().splitlines()[0].split(":", 2)[2]
        parent, files = Path("/sys/fs/cgroup") / path.lstrip("/"), {"memory.max": limit, "memory.swap.max": "0"}
    group = parent / f"rbench-oom-test-{os.getpid()}"
    try:
        group.mkdir()
        for name, value in files.items():
            (group / name).write_text(value)
    except OSError as e:
        if group.exists():
            group.rmdir()
        pytest.skip(f"cannot make a memory cgroup under {parent}: {e.strerror} (the evidence twins still run)")
    yield group
    group.rmdir()


def test_the_kernels_oom_killer_is_recorded_oom(tmp_path, memory_cgroup):
    script = tmp_path / "allocate.py"
    script.write_text(ALLOCATE_IN_CGROUP)
    worker = isolation.Worker("cpu", tmp_path / "w.log", command=[sys.executable, str(script), str(memory_cgroup)])
    record = worker.run(case(), QUICK)
    assert record["status"] == "oom", record["reason"]
    assert "by the kernel's OOM killer" in record["reason"] and str(memory_cgroup) in record["reason"]


# The smaller items: a complete run resumed, names from a hostile suite, the --device blame.

def test_resuming_a_complete_run_says_so_and_appends_nothing(tmp_path, capsys):
    path = partial_run(tmp_path, batches=(1, 2, 3), tear=False)
    results.RunWriter(path).mark("end", status="complete")
    before = path.read_bytes()
    assert cli.main(["run", "--resume", str(path)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert path.read_bytes() == before


def test_hostile_names_make_no_hidden_file_and_reach_the_terminal_escaped(tmp_path, capsys):
    suite = realruns.write_suite(tmp_path)
    suite.write_text(suite.read_text().replace("name: tiny", 'name: "..evil\\u202e\\0\\e[2J"')
                     .replace("[fp32]", "[tf32]"))  # tf32 is unsupported on a CPU: recorded at once
    assert cli.main(["run", str(suite), "--out", str(tmp_path / "out"), "--isolation", "none"]) == 0
    out = capsys.readouterr().out
    (path,) = (tmp_path / "out").glob("*.jsonl")
    assert not path.name.startswith(".") and path.name.startswith("evil_")
    assert "..evil\\u202e\\u0000\\u001b[2J" in out
    assert not {"\u202e", "\0", "\x1b"} & set(out)


def test_device_errors_blame_the_device_option(tmp_path, capsys):
    suite = realruns.write_suite(tmp_path)
    assert cli.main(["run", str(suite), "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rbench run: --device: ") and "field 'device'" not in err
    assert not (tmp_path / "out").exists()


def test_a_filter_or_exclude_that_selects_no_case_is_an_error(tmp_path, capsys):
    suite = realruns.write_suite(tmp_path)
    assert cli.main(["run", str(suite), "--filter", "resnet50/", "--out", str(tmp_path / "out")]) == 2
    assert "selects none of the 1 cases" in capsys.readouterr().err
    excluded = tmp_path / "x.yaml"
    excluded.write_text(suite.read_text() + "exclude: [{model: resnet18}]\n")
    assert cli.main(["run", str(excluded), "--out", str(tmp_path / "out")]) == 2
    assert f"{excluded}:9: field 'exclude': selects no case" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

