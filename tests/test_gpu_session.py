"""scripts/gpu_session.sh proven on a CPU, and what it relies on.

The dry run (`GPU_SESSION_DRY=1`) runs every stage's CPU form from a fresh checkout (a clone of this
repository with the working tree's files laid over it: no install, no egg-info, no results) and must
leave ONE archive that a lent GPU can return (<= 16 MiB), holding each stage's output, every run file
loading with `rbench.results.load`. A fresh machine resumes from that archive; an interrupted call still
writes it. `rbench results import` files it under results/ and refuses archives it cannot trust.
kernel_bench writes its JSON as each layer finishes, stops at its time budget, resumes, and refuses (or
flags) a GPU that another process is using.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from rbench import cli, results
from rbench.names import slug

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/gpu_session.sh"
MAX_BYTES = 16 * 1024 * 1024
LATER_SUITES = {"scenarios": "suites/resnet50_mlperf.yaml", "lowprec": "suites/resnet50_int8.yaml",
                "ddp": "suites/resnet50_ddp.yaml"}
needs_tools = pytest.mark.skipif(
    not (shutil.which("bash") and shutil.which("git") and shutil.which("timeout") and (ROOT / ".git").exists()),
    reason="the dry run needs bash, coreutils' timeout and a git checkout of rbench")


def fresh_checkout(dest: Path) -> Path:
    """A clone of HEAD with this working tree's tracked and not-ignored files laid over it.

    So the script is tested with the code as it stands, from a tree that holds nothing a clone would
    not (no installed package, no build output, no results).
    """
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src, dst = ROOT / rel, dest / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.exists() and not src.exists():
            dst.unlink()  # deleted in the working tree
    return dest


def script_env(out: Path, runs: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH", "RUNS", "OUT")}
    # A generous SESSION_S: on a busy shared CPU the dry run can take several times its usual 2-3 minutes,
    # and this checks that every stage works, not how long a loaded machine needs.
    env.update(GPU_SESSION_DRY="1", OUT=str(out), RUNS=str(runs), PYTHON=sys.executable, SESSION_S="1800", **extra)
    return env


def run_script(checkout: Path, env: dict[str, str], *stages: str, timeout: float = 1900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, *stages], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=timeout)


def extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def dry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("gpu_session")
    checkout = fresh_checkout(base / "checkout")
    out = base / "out"
    t0 = time.monotonic()
    proc = run_script(checkout, script_env(out, base / "runs"), "all")
    seconds = time.monotonic() - t0
    print(f"dry run: {seconds:.0f} s, archive {(out / 'gpu-results.tar.gz').stat().st_size / 1024:.0f} KiB"
          if (out / "gpu-results.tar.gz").exists() else "dry run: no archive")
    return {"checkout": checkout, "out": out, "proc": proc, "archive": out / "gpu-results.tar.gz", "base": base,
            "seconds": seconds}


@needs_tools
def test_dry_run_from_a_fresh_checkout_leaves_one_archive_with_every_stage(dry, tmp_path):
    proc = dry["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in dry["out"].iterdir()) == ["gpu-results.tar.gz"]  # one file comes back
    assert dry["archive"].stat().st_size <= MAX_BYTES
    files = members(dry["archive"])
    assert all(name.startswith("gpu-results/") for name in files)
    manifest = json.loads(files["gpu-results/manifest.json"])
    assert manifest["dry"] is True and manifest["call"] == 1
    for stage, state in manifest["stages"].items():
        wanted = "absent" if stage in LATER_SUITES and not (dry["checkout"] / LATER_SUITES[stage]).exists() else "done"
        assert state.startswith(wanted), (stage, state)
    for stage in ("tests", "flagship", "kernels", "triton", "family", "pybench", "fulltests"):
        assert f"gpu-results/logs/{stage}.log" in files, stage
    for stage in ("flagship", "triton", "family"):
        assert any(n.startswith(f"gpu-results/{stage}/") and n.endswith(".jsonl") for n in files), stage
    assert json.loads(files["gpu-results/kernel_bench.json"])["complete"] is True
    assert b"passed" in files["gpu-results/logs/tests.log"]
    assert json.loads(files["gpu-results/env.json"])["device"]["kind"] == "cpu"
    for name in ("smi.txt", "report.html", "summary.txt"):
        assert files[f"gpu-results/{name}"], name
    # every run file loads, measured something, and ran the checkout's own code (nothing installed)
    extract(dry["archive"], tmp_path)
    for run_file in (tmp_path / "gpu-results").rglob("*.jsonl"):
        frame = results.load(run_file)
        chosen = frame[frame["status"] != "skipped"]
        assert len(chosen), f"{run_file.name}: the dry run's --filter selected no case"
        assert not chosen["status"].isin(["error", "timeout"]).any(), chosen[["case_id", "status", "reason"]]
        if run_file.parent.name in ("flagship", "triton", "family"):
            assert (frame["status"] == "ok").any(), run_file  # their CPU profiles time something
        run = results.read_run(run_file)
        assert run.header["argv"][0].startswith(str(dry["checkout"])), run.header["argv"]
        assert run.env["git"]["sha"]
    assert "suite not present yet" in proc.stdout or all((dry["checkout"] / s).exists() for s in LATER_SUITES.values())
    assert "==== gpu_session: call 1" in proc.stdout and "left: nothing" in proc.stdout
    assert "ResNet-50" in proc.stdout and "archive:" in proc.stdout.splitlines()[-1]


@needs_tools
def test_a_fresh_machine_resumes_a_stopped_stage_from_the_archive(dry, tmp_path):
    """The archive as a call stopped inside the triton stage would leave it, brought to a new machine."""
    extract(dry["archive"], tmp_path / "x")
    unpacked = tmp_path / "x" / "gpu-results"
    run_file = next((unpacked / "triton").glob("*.jsonl"))
    run_file.write_text(run_file.read_text().splitlines()[0] + "\n")  # only the header: stopped before a record
    (unpacked / "state" / "triton").write_text("stopped\n")
    previous = tmp_path / "previous.tar.gz"
    with tarfile.open(previous, "w:gz") as tar:
        tar.add(unpacked, arcname="gpu-results")
    out = tmp_path / "out"
    proc = run_script(dry["checkout"], script_env(out, tmp_path / "new-runs", GPU_SESSION_RESUME=str(previous)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "restored the session" in proc.stdout and "== flagship: done in an earlier call" in proc.stdout
    files = members(out / "gpu-results.tar.gz")
    manifest = json.loads(files["gpu-results/manifest.json"])
    assert manifest["call"] == 2 and manifest["stages"]["triton"] == "done"
    assert b"run --resume" in files["gpu-results/logs/triton.log"]
    resumed = files[f"gpu-results/triton/{run_file.name}"].decode().splitlines()
    records = [json.loads(line) for line in resumed if '"type": "record"' in line]
    # the dry run's --filter is kept: the one eager case measured, triton unsupported on a CPU, the rest skipped
    assert sorted(r["status"] for r in records) == ["ok", *["skipped"] * (len(records) - 2), "unsupported"]
    assert json.loads(resumed[-1])["status"] == "complete"


@needs_tools
def test_an_interrupted_call_still_writes_the_archive(dry, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    proc = subprocess.Popen(["bash", SCRIPT, "kernels"], cwd=dry["checkout"], env=script_env(out, runs),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = runs / "state" / "kernels"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state.exists() and state.read_text().strip() == "running"):
        time.sleep(0.2)  # polling for the stage to begin, not waiting for work
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, text[-3000:]
    files = members(out / "gpu-results.tar.gz")
    assert json.loads(files["gpu-results/manifest.json"])["stages"]["kernels"].startswith("stopped")
    assert "interrupted" in text and "archive:" in text


@needs_tools
def test_a_session_continues_only_on_the_device_it_started_on(dry, tmp_path):
    runs = tmp_path / "runs"
    (runs / "state").mkdir(parents=True)
    (runs / "session").write_text("an earlier session\n")
    (runs / "env.json").write_text(json.dumps({"device": {"kind": "cuda", "name": "NVIDIA H200"}}))
    proc = run_script(dry["checkout"], script_env(tmp_path / "out", runs), "tests")
    assert proc.returncode == 2 and "was measured on 'NVIDIA H200'" in proc.stdout, proc.stdout[-2000:]
    assert not (runs / "state" / "tests").exists()  # nothing was measured into it


def test_results_import_files_an_archive_by_device_day_and_commit(dry, tmp_path, capsys):
    if not dry["archive"].exists():
        pytest.skip("the dry run did not run here (see test_dry_run_from_a_fresh_checkout_...)")
    into = tmp_path / "results"
    assert cli.main(["results", "import", str(dry["archive"]), "--into", str(into)]) == 0
    dest = Path(capsys.readouterr().out.strip().splitlines()[-1])
    runs = list(results.iter_runs(dest))
    first = min(runs, key=lambda r: r.header["started"])
    sha = first.env["git"]["sha"][:12]
    assert dest.parent == into / slug(first.env["device"]["name"])
    assert dest.name.startswith(f"{first.header['started'][:10]}-{sha}")
    assert (dest / "manifest.json").exists() and (dest / "kernel_bench.json").exists()
    assert len(results.load(dest)) == sum(len(r.latest_records()) for r in runs)
    # the same session again (a later call's archive) replaces it; another session goes beside it
    assert cli.main(["results", "import", str(dry["archive"]), "--into", str(into)]) == 0
    again = capsys.readouterr()
    assert Path(again.out.strip()) == dest and "replaced the earlier import" in again.err
    other = tmp_path / "other.tar.gz"
    with tarfile.open(dry["archive"]) as src, tarfile.open(other, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name.endswith("manifest.json"):
                data = json.dumps({**json.loads(data), "session": "another"}).encode()
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    assert cli.main(["results", "import", str(other), "--into", str(into)]) == 0
    assert Path(capsys.readouterr().out.strip()) == dest.with_name(dest.name + "-2")
    assert cli.main(["results", "summary", str(dry["archive"])]) == 0
    assert "ResNet-50" in capsys.readouterr().out


def _tar(path: Path, entries: dict[str, bytes | None], link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_bytes(b"not an archive") and p, "not a tar archive"),
    (lambda p: _tar(p, {"gpu-results/env.json": b"{}"}), "holds no run files"),
    (lambda p: _tar(p, {"gpu-results/flagship/x.jsonl": b'{"type": "record"}\n'}), "x.jsonl does not load"),
    (lambda p: _tar(p, {"gpu-results/x.jsonl": b"{}"}, link="gpu-results/evil.jsonl"), "not a regular file"),
    (lambda p: _tar(p, {"../outside.jsonl": b"{}"}), "a path outside the archive"),
])
def test_results_import_refuses_what_it_cannot_trust(tmp_path, capsys, make, says):
    archive = make(tmp_path / "a.tar.gz")
    assert cli.main(["results", "import", str(archive), "--into", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.jsonl"))


def _kernel_bench() -> Any:
    spec = importlib.util.spec_from_file_location("kernel_bench", ROOT / "benchmarks" / "kernel_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("kernel_bench", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_kernel_bench_writes_each_layer_stops_at_its_budget_and_resumes(tmp_path):
    kb, out = _kernel_bench(), tmp_path / "k.json"
    args = ["--cpu-smoke", "--dtype", "fp16", "--json", str(out)]
    assert kb.main([*args, "--budget-s", "0"]) == kb.EXIT_STOPPED
    first = json.loads(out.read_text())
    assert first["complete"] is False and len(first["layers"]) == 1 and len(first["left"]) == 3
    assert kb.main([*args, "--resume"]) == 0
    done = json.loads(out.read_text())
    assert done["complete"] is True and not done["left"]
    assert [r["layer"] for r in done["layers"]] == ["smoke.3x3", "smoke.conv3", "smoke.downsample"]
    assert done["layers"][0] == first["layers"][0] and len(done["add_act"]) == 1  # kept, not measured again
    assert kb.main(["--cpu-smoke", "--resume"]) == 2  # --resume needs the file it continues


def test_kernel_bench_refuses_a_busy_gpu_or_flags_it(tmp_path, capsys):
    kb = _kernel_bench()
    args = ["--cpu-smoke", "--dtype", "fp16", "--layers", "smoke.3x3", "--no-add", "--wait-idle", "0"]
    busy = tmp_path / "busy.json"
    assert kb.main([*args, "--json", str(busy)], busy_query=lambda: [4242]) == kb.EXIT_BUSY
    assert "pids 4242" in capsys.readouterr().out and not busy.exists()
    assert kb.main([*args, "--json", str(busy), "--busy", "flag"], busy_query=lambda: [4242]) == 0
    record = json.loads(busy.read_text())
    assert record["other_processes_seen"] == [4242] and record["layers"][0]["other_processes"] == [4242]
    assert "WARNING: other processes" in capsys.readouterr().out


def test_kernel_bench_waits_for_the_gpu_to_be_free():
    wait_until_alone = _kernel_bench().wait_until_alone
    answers, now = iter([[7], [7], []]), [0.0]
    got = wait_until_alone(lambda: next(answers), 30.0, lambda s: now.__setitem__(0, now[0] + s), lambda: now[0])
    assert got == [] and now[0] == 4.0
    assert wait_until_alone(lambda: [7], 5.0, lambda s: now.__setitem__(0, now[0] + s), lambda: now[0]) == [7]
