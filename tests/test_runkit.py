"""runkit: atomic writes (including a real full disk), checkpoint loading and rotation."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from runkit.atomic import DiskFullError, atomic_open, atomic_torch_save, atomic_write_text
from runkit.checkpoint import CheckpointError, CheckpointManager, load_checkpoint


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "results.csv"
    atomic_write_text(target, "old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert leftovers(tmp_path) == []


def test_failure_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.csv"
    atomic_write_text(target, "complete old version\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target, "w") as handle:
            handle.write("half of the new")
            raise KeyboardInterrupt  # e.g. the job is killed while writing
    assert target.read_text() == "complete old version\n"
    assert leftovers(tmp_path) == []


def test_new_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.md", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 256 KiB filesystem (tmpfs), so ENOSPC comes from the kernel, not a mock."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full-disk test needs root to mount a small tmpfs")
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tiny_disk):
    manager = CheckpointManager(tiny_disk / "checkpoints", keep=3)
    small = {"step": 1, "weights": torch.arange(1000, dtype=torch.float32)}  # ~4 KB
    manager.save(small, step=1)
    too_big = {"step": 2, "weights": torch.zeros(200_000)}  # ~800 KB > the 256 KiB disk
    with pytest.raises(DiskFullError, match="ckpt_00000002.pt"):
        manager.save(too_big, step=2)
    assert manager.all_steps() == [1], "a partial checkpoint was left behind"
    assert leftovers(tiny_disk / "checkpoints") == []
    restored = manager.load_latest()
    assert restored["step"] == 1 and torch.equal(restored["weights"], small["weights"])


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


class NotAWeight:
    def __init__(self):
        self.payload = "arbitrary pickled object"


def test_checkpoints_load_with_weights_only(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"object": NotAWeight()}, path)  # loads fine with weights_only=False
    with pytest.raises(CheckpointError, match="foreign.pt"):
        load_checkpoint(path)


def test_manager_keeps_the_newest_and_falls_back_past_a_corrupt_one(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        manager.save({"step": step}, step)
    assert manager.all_steps() == [20, 30]
    manager.path_for(30).write_bytes(b"not a checkpoint")
    assert manager.load_latest()["step"] == 20
    manager.path_for(20).write_bytes(b"")
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        manager.load_latest()
