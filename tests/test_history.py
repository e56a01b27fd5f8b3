"""`rbench history`: change points in real CPU run series (a planted step is found, an A/A series has none),
commit order, what else changed at a step, the trend figures, and exit statuses.

The planted step is a real slowdown, not scaled numbers: the later runs time the same case at three
times the image size (nine times the FLOPs, about twice the time at 32 px) with the real harness, and
record it under the original case key, as a code change that made the case slower would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import realruns
from test_compare import ENV, case, lognormal, ok, write_run

from rbench import cli, results
from rbench.analysis import history

NORMAL, SLOW = 8, 4  # runs at the normal size and at the heavier one


@contextlib.contextmanager
def tiny_case() -> Iterator[tuple[Any, Any, Any]]:
    """(suite, device, case) of resnet18/bs1/32px on the CPU, with torch on one thread meanwhile (see realruns)."""
    import torch

    from rbench import spec
    from rbench.hw import detect

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        suite = spec.Suite(**{**realruns.SUITE, "batch_sizes": (1,)}, policy=spec.Policy(**realruns.WINDOW),
                           threshold=None)
        device = detect.detect("cpu")
        yield suite, device, suite.cases("cpu")[0]
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def measured() -> dict[str, Any]:
    """Per-run records of resnet18/bs1/32px: NORMAL runs measured in alternation, SLOW heavier runs."""
    from rbench.hw import detect

    with tiny_case() as (suite, device, c):
        normal = realruns._windows(c, device, [f"n{i}" for i in range(NORMAL)], rounds=10)
        heavier = dataclasses.replace(c, image_size=c.image_size * 3)
        slow = realruns._windows(heavier, device, [f"s{i}" for i in range(SLOW)], rounds=6)
        return {"suite": suite.to_dict(), "env": detect.environment(device),
                "records": [realruns._record(c, m) for m in [*normal.values(), *slow.values()]]}


def write_series(directory: Path, measured: dict[str, Any], order: list[int],
                 shas: list[str] | None = None) -> list[Path]:
    """One run file per record index in `order`, started a day apart in that order."""
    paths = []
    for day, i in enumerate(order):
        env = {**measured["env"], "git": {"sha": shas[day] if shas else f"{day + 1:02x}" * 20, "dirty": False}}
        w = results.RunWriter.create(directory / f"run{day:02d}.jsonl", measured["suite"], env, device_kind="cpu",
                                     started=f"2030-01-{day + 1:02d}T03:00:00+00:00")
        w.append(measured["records"][i])
        w.mark("end", status="complete")
        paths.append(w.path)
    return paths


def run_cli(*argv: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


STEP = [0, 1, 2, 3, 4, *range(NORMAL, NORMAL + SLOW)]  # five normal runs, then the slower ones


def test_planted_step_in_a_real_series_is_found_and_exits_1(measured, tmp_path, capsys):
    write_series(tmp_path / "runs", measured, STEP)
    out_json, out_html, pngs = tmp_path / "h.json", tmp_path / "h.html", tmp_path / "png"
    code, out, err = run_cli("history", str(tmp_path / "runs"), "--json", str(out_json), "--html", str(out_html),
                             "--png", str(pngs), capsys=capsys)
    assert code == 1, out + err
    data = json.loads(out_json.read_text())
    (s,) = data["series"]
    (change,) = s["changes"]
    assert change["index"] == 5 and change["verdict"] == "slower" and change["ratio"] > 1.5 and s["regression"]
    assert change["p_value"] < history.P_MAX and change["runs_before"] == 5 and change["runs_after"] == SLOW
    assert change["file"].endswith("run05.jsonl") and change["started"].startswith("2030-01-06")
    assert "resnet18/bs1/32px" in out and "slower (newest)" in out and f"{(change['ratio'] - 1) * 100:+.1f}%" in out
    assert "1 series whose newest change is a slowdown" in out
    page = out_html.read_text()
    assert "data:image/png;base64," in page and "resnet18/bs1/32px" in page and "run05.jsonl" in page
    (png,) = pngs.glob("*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_aa_series_has_no_change_point_and_exits_0(measured, tmp_path, capsys):
    write_series(tmp_path / "aa", measured, list(range(NORMAL)))
    h = history.history([tmp_path / "aa"])
    medians = [p.median_ms for p in h.series[0].points]
    assert len(medians) == NORMAL and not h.series[0].changes, medians
    code, out, _ = run_cli("history", str(tmp_path / "aa"), capsys=capsys)
    assert code == 0 and "no series whose newest change is a slowdown" in out


def test_a_speedup_is_a_change_point_but_no_regression(measured, tmp_path, capsys):
    write_series(tmp_path / "up", measured, [*range(NORMAL, NORMAL + SLOW), 0, 1, 2, 3])
    (s,) = history.history([tmp_path / "up"]).series
    assert [c.verdict for c in s.changes] == ["faster"] and s.regression is None
    assert run_cli("history", str(tmp_path / "up"), capsys=capsys)[0] == 0


def test_commit_order_follows_git_history_not_the_clock(measured, tmp_path, capsys):
    repo = tmp_path / "repo"
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True)  # noqa: E731
    repo.mkdir()
    git("init", "-q")
    shas = []
    for i in range(len(STEP)):
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", f"c{i}")
        shas.append(git("rev-parse", "HEAD").stdout.strip())
    # Measured in the reverse order of the commits: by time the step is a speed-up, by commit a slowdown.
    write_series(tmp_path / "runs", measured, STEP[::-1], shas=shas[::-1])
    assert [c.verdict for c in history.history([tmp_path / "runs"]).series[0].changes] == ["faster"]
    (s,) = history.history([tmp_path / "runs"], order="commit", repo=repo).series
    assert [c.verdict for c in s.changes] == ["slower"] and s.changes[0].point.commit == shas[5]
    code, _, err = run_cli("history", str(tmp_path / "runs"), "--order", "commit", "--repo", str(tmp_path), capsys=capsys)
    assert code == 2 and "not a git repository" in err


def test_step_with_a_software_change_names_it(tmp_path):
    rng = np.random.default_rng(3)
    for day in range(8):
        env = {**ENV, "software": {**ENV["software"], "torch": "2.5.1" if day < 4 else "2.6.0"}}
        path = write_run(tmp_path / f"r{day}.jsonl", [ok(case(1), lognormal(rng, 2.0 if day < 4 else 2.6))], env=env)
        lines = path.read_text().splitlines()
        header = json.loads(lines[0])
        header["started"] = f"2030-02-{day + 1:02d}T00:00:00+00:00"
        path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    (s,) = history.history([tmp_path]).series  # one series: the device did not change, the software did
    (c,) = s.changes
    assert c.index == 4 and "software.torch 2.5.1 → 2.6.0" in c.context and c.ratio == pytest.approx(1.3, rel=0.05)


def test_change_points_on_known_series():
    flat = [10.0, 10.4, 9.8, 10.1, 15.0, 10.2, 9.9, 10.3, 10.0, 10.1]  # one outlier run is not a step
    assert history.change_points(flat) == []
    step = [10.0, 10.4, 9.8, 10.1, 10.2, 12.0, 12.3, 11.9, 12.1]
    assert [i for i, _ in history.change_points(step)] == [5]
    assert history.change_points(step, threshold=0.25) == []  # a 20 % step below a 25 % threshold
    assert history.change_points(step[:5]) == []  # too few runs for a change point with 3 on each side


def test_too_few_runs_and_bad_input(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_run(tmp_path / "one.jsonl", [ok(case(1), lognormal(rng, 2.0))])
    code, out, _ = run_cli("history", str(tmp_path), capsys=capsys)
    assert code == 0 and "1 runs: a change point needs 3 on each side" in out
    assert run_cli("history", str(tmp_path / "nothing"), capsys=capsys)[0] == 2
    code, _, err = run_cli("history", str(tmp_path), "--min-runs", "1", capsys=capsys)
    assert code == 2 and "--min-runs" in err


def test_without_ruptures_history_says_how_to_install(tmp_path):
    code = f"""
import sys
sys.modules["ruptures"] = None  # as if it were not installed
from rbench import cli
sys.exit(cli.main(["history", {str(tmp_path)!r}]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2 and "pip install 'rbench[history]'" in proc.stderr, proc.stderr
