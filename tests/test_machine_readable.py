"""Output for programs and pipes: `rbench list --json`, `rbench env` as plain JSON when stdout is not a
terminal, and `rbench run` with its live progress on stderr and the results table on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rbench import cli

TINY = """name: tiny
device: cpu
models: [resnet18]
batch_sizes: [1]
image_size: 32
precisions: [fp32]
backends: [eager]
modes: [inference]
policy: {warmup_iters: 1, warmup_s: 0.0, min_iters: 3, min_s: 0.0, max_s: 10.0}
"""


def test_list_json(capsys):
    assert cli.main(["list", "--json", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["device"]["kind"] == "cpu" and "resnet50" in data["models"] and data["models"][0].startswith("resnet")
    assert data["backends"]["eager"] == {"unsupported": None} and "fp32" in data["precisions"]
    assert "max-autotune" in data["compile_modes"] and "channels_last" in data["memory_formats"]


def test_env_is_plain_json_when_piped(capsys):
    assert cli.main(["env", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    env = json.loads(out)  # one document, nothing folded at a console width
    assert env["device"]["kind"] == "cpu" and env["software"]["torch"] and "\x1b[" not in out


def test_run_progress_on_stderr_table_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    assert cli.main(["run", str(suite), "--out", str(tmp_path / "out"), "--isolation", "none"]) == 0
    out, err = capsys.readouterr()
    assert "img/s" in out and "resnet18" in out and "results: " in out  # `rbench run ... > table.txt` keeps this
    assert "case" in err and "1/1" in err and "resnet18/bs1/32px" in err
    assert "1/1" not in out
