"""No measured result is lost or hidden by the file system: torn run files, concurrent runs, full disks,
paths that cannot be written, run files of an unknown schema (issue 10, items 1, 2, 4 and 8).

Full disks are real where the test can make one (a 64 KiB tmpfs, as root); the simulated-ENOSPC twins
run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import realruns

from rbench import cli, results
from rbench.run import session
from rbench.spec import Case

SUITE = {"name": "tiny", "models": ["resnet18"], "batch_sizes": [1, 2, 3], "precisions": ["fp32"],
         "backends": ["eager"], "modes": ["inference"], "image_size": 32,
         "policy": {"warmup_iters": 1, "warmup_s": 0, "min_iters": 2, "min_s": 0}}
ENV = {"device": {"kind": "cpu", "name": "test cpu"}, "software": {"torch": "2.14.1"}}


def case(batch: int) -> Case:
    return Case("resnet18", batch, 32, "fp32", "eager", "inference", "channels_last", "cpu")


def record(batch: int) -> dict:
    return results.new_record(case(batch), "ok", samples_ms=[1.0, 1.1, 0.9], throughput_ips=1000.0 * batch)


def partial_run(directory: Path, batches=(1, 2), tear: bool = True) -> Path:
    """A run of SUITE with records for `batches`, the last of them torn in half as a crash leaves it."""
    w = results.RunWriter.create(directory / "run.jsonl", SUITE, ENV, device_kind="cpu")
    for b in batches:
        w.append(record(b))
    if tear:
        data = w.path.read_bytes()
        last = data.rstrip(b"\n").rfind(b"\n") + 1
        w.path.write_bytes(data[: last + (len(data) - last) // 2])
    return w.path


def one_line_error(err: str) -> str:
    """The error line of a command's stderr (which may also hold warnings and notes): exactly one, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("rbench ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# 1. Torn last lines.

def test_readers_skip_a_torn_last_line_with_a_warning_and_keep_the_rest(tmp_path, capsys):
    path = partial_run(tmp_path)
    with pytest.warns(results.TornLineWarning, match=r"skipped 1 torn line\(s\) \(line 3"):
        run = results.read_run(path)
    assert [r["batch_size"] for r in run.records] == [1] and run.torn == [3]
    with pytest.warns(results.TornLineWarning):
        assert list(results.load(tmp_path).batch_size) == [1]
    other = results.RunWriter.create(tmp_path / "other" / "b.jsonl", SUITE, ENV, device_kind="cpu")
    other.append(record(1))
    assert cli.main(["compare", str(path), str(other.path)]) == 0
    assert "warning: " in capsys.readouterr().err
    assert cli.main(["report", str(path)]) == 0
    assert "torn line" in capsys.readouterr().err


def test_a_half_line_that_an_old_resume_appended_onto_loses_only_itself(tmp_path):
    """rbench before this fix appended its resume marker onto the torn line: the marker and every later line count."""
    path = partial_run(tmp_path)
    with open(path, "ab") as f:
        f.write(json.dumps({"type": "resume", "time": "t", "remaining": 2}).encode() + b"\n")
        f.write(json.dumps({"type": "record", **record(3)}).encode() + b"\n")
    with pytest.warns(results.TornLineWarning):
        run = results.read_run(path)
    assert [r["batch_size"] for r in run.records] == [1, 3]
    assert [e["type"] for e in run.events] == ["resume"]


def test_resume_cuts_the_torn_line_keeps_its_bytes_and_appends_whole_lines(tmp_path, capsys):
    path = partial_run(tmp_path)
    torn_bytes = path.read_bytes()[path.read_bytes().rfind(b"\n") + 1:]
    assert cli.main(["run", "--resume", str(path), "--isolation", "none"]) == 0
    assert "cut the torn last line" in capsys.readouterr().err
    assert Path(f"{path}.torn").read_bytes() == torn_bytes
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])  # every line whole
    run = results.read_run(path)
    assert run.status == "complete" and run.torn == []
    assert sorted(r["batch_size"] for r in run.records) == [1, 2, 3]


def test_a_last_line_missing_only_its_newline_is_kept():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = partial_run(Path(d), tear=False)
        path.write_bytes(path.read_bytes().rstrip(b"\n"))
        assert results.repair_tail(path) is None
        assert path.read_bytes().endswith(b"}\n") and len(results.read_run(path).records) == 2


# 2. Concurrent runs never share a run file.

RACE = """
import sys, time
from rbench import results
start = float(sys.argv[2])
while time.time() < start:
    pass
w = results.RunWriter.create(sys.argv[1], {"name": "race"}, {"device": {"kind": "cpu"}}, device_kind="cpu")
w.append({"status": "ok", "model": "m", "batch_size": 1})
print(w.path)
"""


def test_runs_started_at_the_same_instant_get_a_file_each(tmp_path):
    """Four processes create the same run-file name at the same moment: four files, one header each."""
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path / "same-name.jsonl"), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    paths = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        paths.append(out.strip())
    assert len(set(paths)) == 4
    for p in paths:
        lines = Path(p).read_text().splitlines()
        assert [json.loads(line)["type"] for line in lines] == ["run", "record"]


# 4. File-system errors: one line naming the path and the cause, exit 2, nothing written is lost.

@pytest.fixture
def small_fs(tmp_path):
    """A real 64 KiB tmpfs, which the tests fill up; skipped (with the reason) where it cannot be mounted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; test_simulated_* cover a full disk without one")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; delete it to make room again."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_before_the_header_leaves_no_empty_run_file(small_fs, capsys):
    suite = realruns.write_suite(small_fs)
    (small_fs / "out").mkdir()
    fill(small_fs)
    assert cli.main(["run", str(suite), "--out", str(small_fs / "out"), "--isolation", "none"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(small_fs / "out") in line and "No space left on device" in line
    assert list((small_fs / "out").iterdir()) == []


def test_full_disk_during_a_run_stops_it_whole_and_resume_finishes_it(small_fs, capsys, monkeypatch):
    suite = realruns.write_suite(small_fs, batches="[1, 2]")
    measure = session.Session.run
    filler: list[Path] = []

    def run_on_a_disk_that_fills(self, *args, **kwargs):
        filler.append(fill(small_fs))  # after the header, before the first record
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(session.Session, "run", run_on_a_disk_that_fills)
    assert cli.main(["run", str(suite), "--out", str(small_fs / "out"), "--isolation", "none"]) == 2
    line = one_line_error(capsys.readouterr().err)
    (path,) = (small_fs / "out").glob("*.jsonl")
    assert "No space left on device" in line and f"rbench run --resume {path}" in line
    kept = [json.loads(x) for x in path.read_bytes().split(b"\n")[:-1]]  # whole lines only, nothing torn
    # What fitted in the header's last page stays: the records before the one that did not fit.
    assert f"{sum(k['type'] == 'record' for k in kept)} finished records are in" in line
    monkeypatch.setattr(session.Session, "run", measure)
    filler[0].unlink()
    assert cli.main(["run", "--resume", str(path), "--isolation", "none"]) == 0
    run = results.read_run(path)
    assert run.status == "complete" and sorted(r["batch_size"] for r in run.records) == [1, 2]


def test_simulated_short_write_is_cut_back_and_reported(tmp_path, monkeypatch):
    """Without a small file system: the kernel's answer to a full disk (a short write, then ENOSPC) by hand."""
    w = results.RunWriter.create(tmp_path / "r.jsonl", SUITE, ENV, device_kind="cpu")
    w.append(record(1))
    before = w.path.read_bytes()
    real_write = os.write
    calls = []

    def full_after_a_third(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_write(fd, data[: len(data) // 3])

    monkeypatch.setattr(results.os, "write", full_after_a_third)
    with pytest.raises(results.RunWriteError, match=r"r\.jsonl: cannot write: No space left on device"):
        w.append(record(2))
    assert w.path.read_bytes() == before


def test_simulated_enospc_on_the_header_removes_the_new_file(tmp_path, monkeypatch):
    def no_space(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "write", no_space)
    with pytest.raises(results.RunWriteError, match="No space left on device"):
        results.RunWriter.create(tmp_path / "r.jsonl", SUITE, ENV)
    assert list(tmp_path.iterdir()) == []


def test_out_under_a_regular_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    suite = realruns.write_suite(tmp_path)
    assert cli.main(["run", str(suite), "--out", str(tmp_path / "file" / "results")]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"{tmp_path / 'file'}" in line and "Not a directory" in line


def test_readers_tolerate_an_empty_run_file_in_a_directory(tmp_path, capsys):
    """A run killed before its header (or by an older rbench on a full disk) leaves a 0-byte file."""
    good = partial_run(tmp_path, tear=False)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert cli.main(["compare", str(tmp_path), str(good)]) == 0
    assert "empty.jsonl" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path)]) == 0
    assert cli.main(["compare", str(tmp_path / "empty.jsonl"), str(good)]) == 2  # named explicitly: an error


def test_report_and_baseline_write_errors_are_one_line(tmp_path, capsys):
    good = partial_run(tmp_path, tear=False)
    results.RunWriter(good).mark("end", status="complete")
    (tmp_path / "file").write_text("x")
    assert cli.main(["report", str(good), "--html", str(tmp_path / "file" / "r.html")]) == 2
    assert "Not a directory" in one_line_error(capsys.readouterr().err)
    assert cli.main(["baseline", "update", str(good), "--into", str(tmp_path / "file" / "b")]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(tmp_path / "file" / "b") in line and "Not a directory" in line


def test_baseline_on_a_full_disk_keeps_the_previous_baseline(small_fs, tmp_path, capsys):
    good = partial_run(tmp_path, tear=False)
    results.RunWriter(good).mark("end", status="complete")
    assert cli.main(["baseline", "update", str(good), "--into", str(small_fs / "b")]) == 0
    (dest,) = (small_fs / "b").glob("*.jsonl")
    kept = dest.read_bytes()
    capsys.readouterr()
    fill(small_fs)
    assert cli.main(["baseline", "update", str(good), "--into", str(small_fs / "b")]) == 2
    assert "No space left on device" in one_line_error(capsys.readouterr().err)
    assert dest.read_bytes() == kept and sorted(p.name for p in (small_fs / "b").iterdir()) == [dest.name]


# 8. Run files and benchmark files that readers must refuse.

def test_an_unknown_schema_version_is_an_error_for_every_reader(tmp_path, capsys):
    path = partial_run(tmp_path, tear=False)
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"schema": 1', '"schema": 7')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(results.RunFileError, match=r"run\.jsonl:1: run file schema 7 is not one this rbench reads"):
        results.load(path)
    for argv in (["report", str(path)], ["compare", str(path), str(path)], ["run", "--resume", str(path)]):
        assert cli.main(argv) == 2, argv
        assert "schema 7" in one_line_error(capsys.readouterr().err)


def test_baseline_refuses_a_pytest_benchmark_file_without_benchmarks(tmp_path, capsys):
    empty = tmp_path / "bench.json"
    empty.write_text(json.dumps({"machine_info": {"cpu": {"brand_raw": "x"}}, "benchmarks": []}))
    assert cli.main(["baseline", "update", str(empty), "--into", str(tmp_path / "b")]) == 2
    assert "no benchmarks" in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "b").exists()
