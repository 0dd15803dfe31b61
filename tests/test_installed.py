"""Installed, not cloned: a non-editable install resolves relative paths against the working
directory (or $VGANBENCH_ROOT), never against the installed package, and its entry points work
as `python -m ...` from another folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    # the project alone (its dependencies are this environment's), built with this setuptools
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    if done.returncode:
        pytest.fail(f"pip install failed: {done.stderr[-2000:]}")
    assert (target / "transfer" / "conf" / "recipe" / "demo.yaml").is_file()  # package data installed
    assert (target / "transfer" / "conf" / "canonical" / "ucf101" / "split3" / "f0.1-draw4.txt").is_file()
    return target


def run(installed: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "VGANBENCH_ROOT"}
    environ.update(PYTHONPATH=str(installed), **env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def test_relative_paths_resolve_against_the_working_directory(installed, tmp_path):
    where = run(installed, tmp_path, "-c", "import runkit.paths as p; print(p.resolve_path('outputs'), p.REPO_ROOT)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(tmp_path.resolve() / "outputs"), str(tmp_path.resolve())]
    elsewhere = tmp_path / "root"
    given = run(installed, tmp_path, "-c", "import runkit.paths as p; print(p.resolve_path('outputs'))",
                VGANBENCH_ROOT=str(elsewhere))
    assert given.stdout.strip() == str(elsewhere.resolve() / "outputs")
    # the checkout keeps its own root, wherever a command starts
    here = subprocess.run([sys.executable, "-c", "import runkit.paths as p; print(p.REPO_ROOT)"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert here.stdout.strip() == str(REPO)


def test_a_command_writes_under_the_working_directory_only(installed, tmp_path):
    before = sorted(p.relative_to(installed) for p in installed.rglob("*"))
    done = run(installed, tmp_path, "-m", "videodata.prepare", "--root", "data/synth", "--num-classes", "2",
               "--clips-per-group", "1", "--unlabeled-videos", "2", "--size", "16", "--max-frames", "4",
               "--cache-root", "cache", "--workers", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "data" / "synth" / "UCF-101").is_dir() and any((tmp_path / "cache").iterdir())
    after = sorted(p.relative_to(installed) for p in installed.rglob("*") if "__pycache__" not in p.parts)
    assert after == [p for p in before if "__pycache__" not in p.parts]
    bad = run(installed, tmp_path, "-m", "transfer.sweep", "--recipe", "nope", "--dry-run")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "nope" in bad.stderr
