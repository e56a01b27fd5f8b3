"""Whole-file writes: a reader finds the old file or the new one; a write that fails leaves the old one and no litter."""

from __future__ import annotations

import errno
import os

import pytest

from rbench import files
from rbench.analysis import report


def test_replace_writes_text_and_bytes_whole(tmp_path):
    page = tmp_path / "index.html"
    assert files.replace(page, "<p>é</p>") == page and page.read_text(encoding="utf-8") == "<p>é</p>"
    files.replace(page, b"\x89PNG")
    assert page.read_bytes() == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["index.html"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    page = tmp_path / "index.html"
    page.write_text("the old report")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        report.write_html(report.Report(runs=[], figures=[]), page)
    assert page.read_text() == "the old report" and [p.name for p in tmp_path.iterdir()] == ["index.html"]
