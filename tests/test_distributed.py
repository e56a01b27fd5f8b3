"""Multi-process cases through torchrun, on the CPU with gloo: DDP training and inference replicas, every
rank's figures, scaling efficiency against the 1-process case, faults (a killed rank, a hang), and the
pieces (nproc_per_node in suites, capping, the launch options, the records, the machine identity).

The end-to-end tests start real torchrun jobs of two ranks with one thread each (OMP_NUM_THREADS=1);
faults are injected by a sitecustomize on the ranks' PYTHONPATH, so the code under test is unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pytest
import torch

from rbench import results, spec
from rbench.analysis import sources
from rbench.cli import main
from rbench.run import distributed_launch, distributed_record
from rbench.run.distributed_launch import Launch, LaunchError
from rbench.spec import Case, Policy

ROOT = Path(__file__).resolve().parent.parent
TINY = """
name: ddp_faults
device: cpu
models: [resnet18]
image_size: 32
precisions: [fp32]
backends: [eager]
"""


def case(nproc: int = 2, mode: str = "training", batch: int = 2) -> Case:
    return Case("resnet18", batch, 32, "fp32", "eager", mode, "channels_last", "cpu", nproc_per_node=nproc)


@pytest.fixture
def one_thread(monkeypatch):
    """Every rank and the in-process 1-process cases on one thread: the machine is small and shared."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hook(tmp_path: Path, monkeypatch, body: str) -> Path:
    """A sitecustomize that every Python process of the run imports (torchrun's agent and the ranks);
    it notes its pid under `pids/`, then runs `body`."""
    site, pids = tmp_path / "site", tmp_path / "pids"
    site.mkdir()
    pids.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import os, signal, threading
        open(os.path.join(os.environ["RBENCH_TEST_PIDS"], str(os.getpid())), "w").close()
    """) + textwrap.dedent(body))
    monkeypatch.setenv("RBENCH_TEST_PIDS", str(pids))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    return pids


def run_suite(tmp_path: Path, suite: Path, *extra: str) -> tuple[int, results.Run]:
    code = main(["run", str(suite), "--device", "cpu", "--isolation", "none", "--out", str(tmp_path / "out"), *extra])
    (path,) = results.run_files(tmp_path / "out")
    return code, results.read_run(path)


def left_alive(pids: Path) -> list[int]:
    return [int(p.name) for p in pids.iterdir() if distributed_launch.alive(int(p.name))]


# End to end: the suite's CPU profile (2 gloo ranks, training and inference) ---------------------------------


def test_two_ranks_train_and_infer_with_scaling_against_one_process(tmp_path, one_thread):
    code, run = run_suite(tmp_path, ROOT / "suites" / "resnet50_ddp.yaml")
    records = {r["case_id"]: r for r in run.latest_records()}
    assert code == 0 and [r["status"] for r in records.values()] == ["ok"] * 4, records
    assert [r["rank"] for r in run.env["ranks"]] == [0, 1] and run.env["ranks"][0]["device"]["kind"] == "cpu"
    for mode in ("training", "inference"):
        single = records[f"resnet18/bs2/32px/fp32/eager/{mode}/channels_last"]
        multi = records[f"resnet18/bs2/32px/fp32/eager/{mode}/channels_last/np2"]
        assert multi["nproc_per_node"] == 2 and multi["world_size"] == 2 and "world_size" not in single
        ranks = multi["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1] and len({r["iters"] for r in ranks}) == 1
        for r in ranks:
            assert r["throughput_ips"] > 0 and r["peak_memory_bytes"] > 0 and r["device"]["name"] and r["host"]
            assert set(r["latency_ms"]) == {"p50", "p90", "p95", "p99", "min", "max", "mean", "stdev"}
            assert len(r["samples_ms"]) == r["iters"] >= 3
            assert r["host_ms_per_iter"] > 0  # on a CPU rank the step is the work: about its iteration time
        assert multi["host_ms_per_iter"] == max(r["host_ms_per_iter"] for r in ranks)
        slowest = max(r["window_s"] for r in ranks)
        assert multi["throughput_ips"] == pytest.approx(2 * ranks[0]["iters"] * 2 / slowest)
        assert multi["scaling_efficiency"] == pytest.approx(multi["throughput_ips"] / (2 * single["throughput_ips"]))
        assert multi["scaling_reference"]["case_id"] == single["case_id"]
        spread = multi["rank_spread"]
        assert spread["slowest_ips"] <= spread["fastest_ips"] and 0 <= spread["spread"] < 1
    train = records["resnet18/bs2/32px/fp32/eager/training/channels_last/np2"]
    assert 0 < train["allreduce_share"] < 1
    assert all(r["allreduce_buckets"] > 0 and 0 < r["allreduce_share"] < 1 for r in train["ranks"])
    assert records["resnet18/bs2/32px/fp32/eager/inference/channels_last/np2"]["allreduce_share"] == 0.0


# Faults ----------------------------------------------------------------------------------------------------


def test_a_rank_killed_mid_case_is_an_error_naming_it_and_the_next_case_runs(tmp_path, monkeypatch, one_thread):
    pids = hook(tmp_path, monkeypatch, """
        if os.environ.get("RANK") == "1":
            import rbench.run.backends as backends
            _make_step = backends.make_step
            def make_step(module, workload, case, device):
                step = _make_step(module, workload, case, device)
                def step_or_die(i):
                    if case.batch_size == 3 and i == 1:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return step(i)
                return step_or_die
            backends.make_step = make_step
    """)
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY + """batch_sizes: [3, 2]
modes: [training]
nproc_per_node: [1, 2]
exclude: [{batch_size: 3, nproc_per_node: 1}, {batch_size: 2, nproc_per_node: 2}]
policy: {warmup_iters: 2, warmup_s: 0.0, min_iters: 3, min_s: 0.0, max_s: 30.0, timeout_s: 240}
""")
    code, run = run_suite(tmp_path, suite)
    killed, after = run.latest_records()
    assert killed["case_id"].endswith("/np2") and killed["status"] == "error", killed
    assert "rank 1 of 2" in killed["reason"] and "SIGKILL" in killed["reason"]
    assert after["status"] == "ok" and after["batch_size"] == 2
    assert len(list(pids.iterdir())) >= 3 and left_alive(pids) == []  # torchrun's agent and both ranks are gone


def test_a_hang_is_a_timeout_and_no_process_is_left_behind(tmp_path, monkeypatch, one_thread):
    pids = hook(tmp_path, monkeypatch, """
        if os.environ.get("RANK") == "1":
            threading.Event().wait()  # rank 1 never arrives; rank 0 waits for it in the process group
    """)
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY + """batch_sizes: [1]
modes: [inference]
nproc_per_node: [2]
policy: {warmup_iters: 1, warmup_s: 0.0, min_iters: 3, min_s: 0.0, max_s: 30.0, timeout_s: 20}
""")
    code, run = run_suite(tmp_path, suite)
    (record,) = run.latest_records()
    assert record["status"] == "timeout" and "timeout_s=20" in record["reason"] and "every rank killed" in record["reason"]
    assert len(list(pids.iterdir())) >= 2, "torchrun and at least one rank had started"
    assert "ranks that never reported: 1" in record["reason"]
    assert left_alive(pids) == []
    assert run.status == "complete"


# The pieces ------------------------------------------------------------------------------------------------


def test_nproc_per_node_is_a_key_field_that_old_records_default_to_one(tmp_path):
    suite = spec.parse(TINY + "batch_sizes: [1]\nmodes: [training]\nnproc_per_node: [1, 4]\n")
    one, four = suite.cases("cpu")
    assert (one.nproc_per_node, four.nproc_per_node) == (1, 4) and one.id + "/np4" == four.id
    old = {k: v for k, v in one.to_dict().items() if k != "nproc_per_node"}  # a record from before the field
    assert results.case_key(old) == one.key() != four.key()
    assert spec.parse(TINY + "batch_sizes: [1]\nmodes: [training]\nnproc_per_node: 8\n").nproc_per_node == (8,)
    for bad, says in (("0", "out of range: 0"), ("[2, 2]", "duplicate"), ("two", "expected an integer")):
        with pytest.raises(spec.SpecError, match=f"field 'nproc_per_node.*{says}"):
            spec.parse(TINY + f"batch_sizes: [1]\nmodes: [training]\nnproc_per_node: {bad}\n", "s.yaml")


def test_plan_caps_at_the_devices_present_and_puts_one_process_first(monkeypatch):
    from rbench.hw import detect

    monkeypatch.setattr(distributed_launch, "_usable_cores", lambda: 4)
    suite = spec.parse(TINY + "batch_sizes: [1, 2]\nmodes: [training]\nnproc_per_node: [8, 2, 1]\n")
    plan = distributed_launch.plan(suite.cases("cpu"), detect.detect("cpu"))
    assert [(c.batch_size, c.nproc_per_node) for c in plan.cases] == [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4)]
    assert plan.header["nproc_cap"] == {"devices": 4, "asked": [1, 2, 8], "ran": [1, 2, 4]}
    assert [r["rank"] for r in plan.env["ranks"]] == [0, 1, 2, 3]
    single = distributed_launch.plan(spec.parse(TINY + "batch_sizes: [1]\nmodes: [training]\n").cases("cpu"),
                                     detect.detect("cpu"))
    assert single.env == {} and single.header == {}, "a suite without multi-process cases writes what it always did"


def test_torchrun_options_pass_multi_node_flags_through():
    assert Launch().options("c") == ["--standalone"]
    cmd = distributed_launch.command(case(4), Policy(), "cuda", Path("/tmp/x"), Launch(2, 1, "node001:29500", "job7"),
                                     "tag")
    joined = " ".join(cmd)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "-m rbench.run.distributed" in joined
    assert ("--nproc-per-node 4 --nnodes 2 --rdzv-backend c10d --rdzv-endpoint node001:29500 --rdzv-id job7-tag "
            "--node-rank 1 --max-restarts 0") in joined


@pytest.mark.parametrize("argv, says", [
    (["--nnodes", "2"], "give --rdzv-endpoint HOST:PORT"),
    (["--nnodes", "2", "--rdzv-endpoint", "a:1", "--node-rank", "2"], "--node-rank 2: must be 0 to 1"),
    (["--nnodes", "2", "--rdzv-endpoint", "no port"], "expected HOST:PORT"),
])
def test_bad_torchrun_flags_are_one_line_and_exit_2(argv, says, tmp_path, capsys):
    assert main(["run", str(ROOT / "suites" / "smoke.yaml"), "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    with pytest.raises(LaunchError):
        Launch.from_args(type("Args", (), {"nnodes": 0})())


def _rank(rank: int, window_s: float, **extra) -> dict:
    return {"rank": rank, "local_rank": rank, "node": 0, "host": "h", "device": {"name": "GPU", "uuid": f"u{rank}"},
            "status": "ok", "reason": "", "throughput_ips": 10 * 2 / window_s, "iters": 10, "window_s": window_s,
            "warmup_iters": 3, "warmup_s": 0.1, "latency_ms": {"p50": window_s * 100}, "samples_ms": [window_s * 100] * 10,
            "peak_memory_bytes": 100 + rank, "peak_memory": {}, "flops_per_image": 1e9, "params": 5,
            "allreduce_share": 0.2 + 0.1 * rank, "power": {"avg_w": 100.0, "energy_j": 50.0, "source": "nvml"},
            "warnings": [], "flags": {}, **extra}


def test_combine_takes_global_images_over_the_slowest_window_and_sums_power():
    record = distributed_record.combine(case(2), {"ranks": [_rank(1, 2.0), _rank(0, 1.0)], "nnodes": 1})
    assert record["throughput_ips"] == pytest.approx(40 / 2.0) and record["latency_ms"] == {"p50": 200.0}
    assert record["rank_spread"] == {"fastest_rank": 0, "fastest_ips": 20.0, "slowest_rank": 1, "slowest_ips": 10.0,
                                     "spread": 0.5}
    assert record["allreduce_share"] == pytest.approx(0.25) and record["peak_memory_bytes"] == 101
    assert record["power"]["energy_j"] == 100.0 and record["power"]["j_per_image"] == pytest.approx(100 / 40)
    shared = [_rank(0, 1.0, device={"name": "cpu"}), _rank(1, 1.0, device={"name": "cpu"})]
    assert "share a power domain" in distributed_record.combine(case(2), {"ranks": shared})["power"]["reason"]
    over = distributed_record.combine(case(2), {"ranks": [_rank(0, 1, status="over_budget", reason="too slow")] * 2})
    assert (over["status"], over["reason"]) == ("over_budget", "too slow")
    elsewhere = distributed_record.combine(case(2), {"ranks": [_rank(0, 1.0)], "holds_rank0": False, "rank0_host": "n1"})
    assert elsewhere["status"] == "skipped" and "n1" in elsewhere["reason"]


def test_scaling_efficiency_needs_an_ok_one_process_record_of_the_same_key():
    multi = results.new_record(case(2), "ok", throughput_ips=30.0, world_size=2)
    single = results.new_record(case(1), "ok", throughput_ips=20.0)
    other = results.new_record(case(1, batch=4), "ok", throughput_ips=99.0)
    assert distributed_record.with_scaling(multi, [other, single])["scaling_efficiency"] == pytest.approx(0.75)
    missing = distributed_record.with_scaling(multi, [other])
    assert missing["scaling_efficiency"] is None and "no 1-process record" in missing["scaling_reference"]["reason"]
    failed = distributed_record.with_scaling(multi, [results.new_record(case(1), "oom", "out of memory")])
    assert "ended oom" in failed["scaling_reference"]["reason"]


SUMMARY = """Failures:
[1]:
  time      : 2026-12-01_14:09:22
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 19089)  (SIGTERM)
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 19090)  (SIGKILL)
"""


def test_failure_names_the_rank_that_ended_the_case():
    exits = distributed_record.torchrun_failures("noise\n" + SUMMARY)
    assert exits == {0: -15, 1: -9}
    state = {"host": "h", "state": "running"}
    died = distributed_record.failure(case(2), {0: {**state, "rank": 0}, 1: {**state, "rank": 1}}, exits, 1, "", 2)
    assert died["status"] == "error" and died["reason"].startswith("rank 1 of 2 (h) died (signal SIGKILL)")
    # The same SIGKILL while the OOM killer ran (MemoryWatch's evidence, as for a single worker) is the case's oom.
    evidence = "oom_kill in /sys/fs/cgroup/memory.events rose 1 -> 2"
    oom_killed = distributed_record.failure(case(2), {0: {**state, "rank": 0}, 1: {**state, "rank": 1}}, exits, 1, "", 2,
                                            oom_evidence=evidence)
    assert oom_killed["status"] == "oom" and oom_killed["reason"].startswith("rank 1 of 2 (h) was killed (signal SIGKILL)")
    assert evidence in oom_killed["reason"]
    term = distributed_record.failure(case(2), {0: {**state, "rank": 0}}, {0: -signal.SIGSEGV}, 1, "", 2,
                                      oom_evidence=evidence)
    assert term["status"] == "error"  # a crash is not the OOM killer's, whatever memory did meanwhile
    raised = {0: {**state, "rank": 0, "state": "failed", "status": "error", "reason": "RuntimeError: peer gone", "time": 2},
              1: {**state, "rank": 1, "state": "failed", "status": "oom", "reason": "OutOfMemoryError: 2 GiB", "time": 1}}
    oom = distributed_record.failure(case(2), raised, {0: 1, 1: 1}, 1, "", 2)
    assert (oom["status"], oom["reason"]) == ("oom", "rank 1 of 2 (h): OutOfMemoryError: 2 GiB")
    silent = distributed_record.failure(case(2), {}, {}, -signal.SIGKILL, "Segmentation fault", 2)
    assert "torchrun ended with signal SIGKILL" in silent["reason"] and "Segmentation fault" in silent["reason"]


def test_machine_identity_counts_every_ranks_device_not_host_names():
    def env(n: int, name: str = "NVIDIA H100", driver: str = "550.54", hosts: int = 1, site: str = "a") -> dict:
        return {"device": {"kind": "cuda", "name": name},
                "ranks": [{"rank": i, "host": f"{site}-node{i % hosts}", "device": {"name": name},
                           "driver": {"version": driver}} for i in range(n)]}

    assert sources.run_identity(env(4))["ranks"] == "4 x NVIDIA H100 (driver 550.54) on 1 host"
    assert sources.run_identity(env(4)) == sources.run_identity(env(4, site="b")), "host names are not hardware"
    for other in (env(2), env(4, driver="560.1"), env(4, hosts=2), env(4, name="NVIDIA A100")):
        assert sources.run_identity(other)["ranks"] != sources.run_identity(env(4))["ranks"]
    assert "ranks" not in sources.run_identity({"device": {"kind": "cuda", "name": "x"}})


def test_a_device_without_a_process_group_backend_is_unsupported(tmp_path):
    record = distributed_launch.Torchrun("mps", tmp_path / "log").run(case(2), Policy())
    assert record["status"] == "unsupported" and "mps has none" in record["reason"]
    assert json.dumps(record)


def test_ranks_warm_up_by_the_single_process_rule_and_never_plan_from_compilation(tmp_path, monkeypatch):
    """A 60 s first iteration (torch.compile inside warm-up) then 0.1 s ones, on a one-rank gloo group: the
    estimate is 0.1 s and warm-up runs its 10 iterations, as `measure.run` does (issue 18's rule, for ranks)."""
    import types

    import torch.distributed as dist

    from rbench.hw import host
    from rbench.run import distributed

    clock = [0.0]
    monkeypatch.setattr(distributed, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def step(i):
        clock[0] += 60.0 if i == 0 else 0.1

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        iters, _, iter_s, host_ms = distributed.agreed_warmup(step, host.CpuDevice(), Policy(
            warmup_iters=10, warmup_s=1.0, min_iters=20, min_s=2.0, max_s=30.0))
    finally:
        dist.destroy_process_group()
    assert iters == 10 and iter_s == pytest.approx(0.1) and host_ms == pytest.approx(100.0)


def test_a_ranks_peak_memory_is_the_timed_windows(tmp_path):
    """The window restarts the peak counters after the barrier, as the single-process TimedWindow does."""
    import torch.distributed as dist

    from rbench.hw import host
    from rbench.run import distributed

    calls = []

    class Device(host.CpuDevice):
        def reset_peak_memory(self):
            calls.append("reset")

    class Monitor:
        def start(self):
            calls.append("monitor")

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        distributed.Window(Device(), Monitor(), None).start()
    finally:
        dist.destroy_process_group()
    assert calls == ["reset", "monitor"]
