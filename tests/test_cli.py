"""The command line: known errors are one line on stderr with exit code 2, nothing half-written."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vibe3r.cli", *args], capture_output=True, text=True, timeout=120)


def test_unknown_motion_word_is_one_line_naming_it(tmp_path):
    r = run("video", "render", "--prompt", "dolly forward 1 then spin 90", "--out", str(tmp_path / "v"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'spin'" in lines[0] and "orbit" in lines[0]  # names the token and the valid words
    assert not (tmp_path / "v").exists()


def test_unknown_config_key_lists_valid_keys(tmp_path):
    r = run("video", "render", "--prompt", "pan left 10", "--out", str(tmp_path / "v"), "--set", "render.widht=32")
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "render.widht" in line and "width" in line and "height" in line
    assert "\n" not in line


def test_missing_config_file_is_a_clear_error(tmp_path):
    r = run("video", "render", "--prompt", "pan left 10", "--out", str(tmp_path / "v"), "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert "config file not found" in r.stderr
