"""`rbench compare` on peak memory and J/image: planted memory growth and energy rises, their noise rule,
`--fail-on memory|energy`, and the table, markdown and JSON (also written to files in one call)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_compare import case, lognormal, ok, run_cli, write_run

from rbench.analysis import compare, render, stats

GIB = 1 << 30


def counter_power(j_per_image: float, bound: float = 0.02, **extra: Any) -> dict[str, Any]:
    """A `power` as rbench.hw.sampling writes it when the energy counter was read."""
    return {"avg_w": 300.0, "peak_w": 320.0, "energy_j": j_per_image * 1000, "j_per_image": j_per_image,
            "source": "nvml total energy counter", "method": "counter", "window_s": 5.0,
            "counter_update_s": bound * 5.0 / 2, "counter_error_bound": bound, **extra}


def measured(batch: int, memory: float | None, power: dict[str, Any] | None, seed: int = 0,
             flags: dict[str, Any] | None = None) -> dict[str, Any]:
    r = ok(case(batch), lognormal(np.random.default_rng(seed + batch), 2.0))
    r.update(peak_memory_bytes=memory, power=power or {"unavailable": True, "reason": "no NVML"},
             flags=flags or {})
    return r


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """Base and new with the same timings; new has planted memory growth and energy rises."""
    base = write_run(tmp_path / "base.jsonl", [
        measured(1, 1.00 * GIB, counter_power(1.00)), measured(2, 1.00 * GIB, counter_power(1.00)),
        measured(4, 1.00 * GIB, counter_power(1.00)), measured(8, 1.00 * GIB, counter_power(1.00)),
        measured(16, 2.00 * GIB, None)])
    new = write_run(tmp_path / "new.jsonl", [
        measured(1, 1.12 * GIB, counter_power(1.00), seed=100),   # 12 % more memory, same energy
        measured(2, 1.03 * GIB, counter_power(1.25), seed=100),   # 3 % more memory (below 5 %), 25 % more energy
        measured(4, 0.80 * GIB, counter_power(0.70), seed=100),   # less of both
        measured(8, 1.00 * GIB, counter_power(1.04), seed=100),   # energy within its error bound and threshold
        measured(16, 2.00 * GIB, counter_power(1.00), seed=100)])  # base measured no energy: not judged
    return base, new


def test_planted_memory_growth_and_energy_rise_are_flagged(planted):
    cmp = compare.compare_paths([planted[0]], [planted[1]])
    rows = {r.key[1]: r for r in cmp.rows}
    assert {b: r.verdict for b, r in rows.items()} == dict.fromkeys((1, 2, 4, 8, 16), "unchanged")  # timings
    assert {b: r.memory.verdict for b, r in rows.items()} == {
        1: "more_memory", 2: "same_memory", 4: "less_memory", 8: "same_memory", 16: "same_memory"}
    assert rows[1].memory.ratio == pytest.approx(1.12)
    assert {b: r.energy and r.energy.verdict for b, r in rows.items()} == {
        1: "same_energy", 2: "more_energy", 4: "less_energy", 8: "same_energy", 16: None}
    assert rows[2].energy.low == pytest.approx(1.25 * 0.98 / 1.02)
    assert {r.key[1] for r in cmp.regressions("memory")} == {1}
    assert {r.key[1] for r in cmp.regressions("energy")} == {2}
    assert {r.key[1] for r in cmp.regressions(["memory", "energy"])} == {1, 2} == {r.key[1] for r in cmp.regressions("all")}
    assert not cmp.regressions("any")  # the default judges time and status only, as it always did
    assert [r.key[1] for r in cmp.rows][:2] == [1, 2]  # memory and energy regressions come first


@pytest.mark.parametrize("fail_on, code", [((), 0), (("any",), 0), (("memory",), 1), (("energy",), 1),
                                           (("slower", "memory"), 1), (("all",), 1)])
def test_fail_on_memory_and_energy(planted, capsys, fail_on, code):
    args = [a for f in fail_on for a in ("--fail-on", f)]
    assert run_cli("compare", str(planted[0]), str(planted[1]), *args, capsys=capsys)[0] == code


def test_thresholds_from_flags(planted, capsys):
    cmp = compare.compare_paths([planted[0]], [planted[1]], memory_threshold=0.15, energy_threshold=0.30)
    assert not cmp.regressions("all")
    code, _, _ = run_cli("compare", str(planted[0]), str(planted[1]), "--fail-on", "memory",
                         "--memory-threshold", "15%", capsys=capsys)
    assert code == 0
    code, _, err = run_cli("compare", str(planted[0]), str(planted[1]), "--energy-threshold", "abc", capsys=capsys)
    assert code == 2 and "--energy-threshold" in err


def test_energy_noise_rule():
    """The ratio must clear half the threshold even at the worst error the two figures' bounds allow."""
    judge = lambda b, n, **kw: stats.energy_verdict(b, n, 0.10, **kw).verdict  # noqa: E731
    assert judge(counter_power(1.0), counter_power(1.2)) == "more_energy"
    assert judge(counter_power(1.0, bound=0.10), counter_power(1.2, bound=0.10)) == "energy_uncertain"
    sampled = lambda j: {"j_per_image": j, "method": "samples"}  # noqa: E731  no bound recorded: 15 % assumed
    assert stats.energy_bound(sampled(1.0)) == stats.SAMPLED_ENERGY_BOUND
    assert judge(sampled(1.0), sampled(1.3)) == "energy_uncertain"
    assert judge(sampled(1.0), sampled(1.6)) == "more_energy"
    disagree = counter_power(1.0, cross_check={"relative_difference": 0.3, "tolerance": 0.16})
    assert stats.energy_bound(disagree) == 0.3  # a counter that disagrees with the samples is trusted less
    assert judge(counter_power(1.0), counter_power(1.2), uncertain="window too short") == "energy_uncertain"
    assert stats.energy_verdict(counter_power(1.0), None) is None
    assert stats.memory_verdict(None, GIB) is None and stats.memory_verdict(GIB, 1.06 * GIB).verdict == "more_memory"


def test_short_energy_window_is_uncertain(tmp_path):
    base = write_run(tmp_path / "b.jsonl", [measured(1, GIB, counter_power(1.0))])
    new = write_run(tmp_path / "n.jsonl", [measured(1, GIB, counter_power(1.5), flags={"window_too_short": True})])
    (row,) = compare.compare_paths([base], [new]).rows
    assert row.energy.verdict == "energy_uncertain" and "too short" in row.energy.reason and not row.regression_kinds


def test_outputs_show_memory_and_energy_and_several_formats_in_one_call(planted, tmp_path, capsys):
    md_file, json_file = tmp_path / "out" / "c.md", tmp_path / "c.json"
    md_file.parent.mkdir()
    code, table, _ = run_cli("compare", str(planted[0]), str(planted[1]), "--fail-on", "all",
                             "--markdown", str(md_file), "--json", str(json_file), capsys=capsys)
    assert code == 1
    assert "peak mem Δ" in table and "J/img Δ" in table and "+12.0% more" in table and "+25.0% more" in table
    assert "2 regressions (1 more memory, 1 more energy)" in table and "fail on: all" in table
    md = md_file.read_text()
    assert md.startswith("### ❌ rbench compare: 2 regressions (1 more memory, 1 more energy)")
    loud = md.split("<details>")[0]  # cases with a memory or energy change are not folded away
    assert "resnet50/bs1/" in loud and "❌ more memory" in loud and "❌ more energy" in loud
    assert "resnet50/bs8/" not in loud
    data = json.loads(json_file.read_text())
    row = next(c for c in data["cases"] if c["batch_size"] == 1)
    assert row["memory"]["verdict"] == "more_memory" and row["regressions"] == ["memory"]
    assert data["resource_counts"]["more_energy"] == 1 and data["regressed"] is True and data["fail_on"] == "all"
    assert render.to_json(compare.compare_paths([planted[0]], [planted[1]]), "all") == json_file.read_text().rstrip("\n")
    code, _, err = run_cli("compare", str(planted[0]), str(planted[1]), "--json", str(tmp_path / "no" / "x.json"),
                           capsys=capsys)
    assert code == 2 and "cannot write" in err and "x.json" in err
