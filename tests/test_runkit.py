"""runkit: atomic writes (including a real full disk), checkpoint loading and rotation, RNG state,
the logging window and the metrics log a resume truncates."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from runkit.atomic import DiskFullError, atomic_open, atomic_torch_save, atomic_write_text
from runkit.checkpoint import (CheckpointError, CheckpointManager, capture_rng_state, load_checkpoint,
                               restore_rng_state, seed_everything)
from runkit.logging import MetricLogger, WindowMeans


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


# ------------------------------------------------------------------ checkpoints: the details a resume needs

def test_load_checkpoint_names_the_error_type_and_refuses_code_even_when_torch_is_told_otherwise(
        tmp_path, monkeypatch):
    path = tmp_path / "foreign.pt"
    torch.save({"object": NotAWeight()}, path)
    # an environment that asks torch to unpickle anything when a caller does not say otherwise
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match=r"^cannot load checkpoint .*foreign\.pt: UnpicklingError: "):
        load_checkpoint(path)


def test_load_checkpoint_maps_to_the_requested_device_and_defaults_to_the_cpu(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"w": torch.arange(4.0)}, path)
    default = load_checkpoint(path)
    assert default["w"].device.type == "cpu" and torch.equal(default["w"], torch.arange(4.0))
    assert load_checkpoint(path, map_location="meta")["w"].is_meta
    manager = CheckpointManager(tmp_path / "run")
    manager.save({"w": torch.ones(2)}, step=5)
    assert manager.load_latest(map_location="meta")["w"].is_meta
    assert manager.load_latest()["w"].device.type == "cpu"


def test_manager_keeps_three_by_default_and_at_least_one(tmp_path):
    default = CheckpointManager(tmp_path / "default")
    for step in range(1, 6):
        default.save({"step": step}, step)
    assert default.all_steps() == [3, 4, 5]
    for keep in (0, 1):
        manager = CheckpointManager(tmp_path / f"keep{keep}", keep=keep)
        for step in (1, 2, 3):
            manager.save({"step": step}, step)
        assert manager.all_steps() == [3]


def test_latest_is_the_newest_step_not_the_newest_file(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    assert manager.latest() is None and manager.load_latest() is None
    for step in (30, 200, 1000, 40):  # written out of order; names sort by step (zero padded)
        manager.save({"step": step}, step)
    assert manager.latest() == tmp_path / "ckpt_00001000.pt"
    assert manager.load_latest()["step"] == 1000


def test_rotation_tolerates_an_old_checkpoint_already_gone(tmp_path, monkeypatch):
    # e.g. a requeued attempt's predecessor, still finishing, rotated the same file away meanwhile
    manager = CheckpointManager(tmp_path, keep=1)
    manager.save({"step": 1}, 1)
    listed = manager.all_steps
    monkeypatch.setattr(manager, "all_steps", lambda: [0] + listed())  # step 0: listed, not on disk
    manager.save({"step": 2}, 2)
    assert listed() == [2]


def test_no_loadable_checkpoint_names_every_file_that_failed(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2):
        manager.save({"step": step}, step)
        manager.path_for(step).write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as info:
        manager.load_latest()
    message = str(info.value)
    assert message.startswith(f"no loadable checkpoint in {tmp_path}: cannot load checkpoint ")
    newest, older = message.split("; ")
    assert "ckpt_00000002.pt" in newest and "ckpt_00000001.pt" in older
    assert older.startswith(f"cannot load checkpoint {tmp_path / 'ckpt_00000001.pt'}: ")


def _draws() -> tuple:
    return random.random(), float(np.random.standard_normal()), float(np.random.random()), torch.rand(3)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    seed_everything(3)
    np.random.standard_normal()  # leaves numpy's cached second gaussian in the state
    state = capture_rng_state()
    assert "cuda" not in state or torch.cuda.is_available()
    atomic_torch_save({"rng": state}, tmp_path / "ckpt.pt")
    expected = _draws()
    seed_everything(99)
    restore_rng_state(load_checkpoint(tmp_path / "ckpt.pt")["rng"])
    again = _draws()
    assert again[:3] == expected[:3] and torch.equal(again[3], expected[3])


def test_seed_everything_seeds_every_generator_numpy_modulo_2_32():
    seed = 2**32 + 100
    seed_everything(seed)
    got = _draws()
    ref_np = np.random.RandomState(100)
    assert got[0] == random.Random(seed).random()
    assert got[1] == float(ref_np.standard_normal()) and got[2] == float(ref_np.random())
    assert torch.equal(got[3], torch.rand(3, generator=torch.Generator().manual_seed(seed)))


def test_cuda_rng_is_captured_and_restored_when_cuda_is_there(monkeypatch):
    calls = []
    gpu_state = [torch.arange(8, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: gpu_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(list(states)))
    state = capture_rng_state()
    assert state["cuda"] is gpu_state
    restore_rng_state(state)
    assert len(calls) == 1 and torch.equal(calls[0][0], gpu_state[0])
    del state["cuda"]  # a checkpoint written on a CPU machine, resumed on a GPU one
    restore_rng_state(state)
    assert len(calls) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restore_rng_state({**state, "cuda": gpu_state})  # written on a GPU, resumed on a CPU
    assert len(calls) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_rng_state_restores_from_a_checkpoint_mapped_onto_the_gpu(tmp_path):
    seed_everything(5)
    atomic_torch_save({"rng": capture_rng_state()}, tmp_path / "ckpt.pt")
    expected = _draws()
    restore_rng_state(load_checkpoint(tmp_path / "ckpt.pt", map_location="cuda")["rng"])
    again = _draws()
    assert again[:3] == expected[:3] and torch.equal(again[3], expected[3])


@pytest.mark.parametrize("code,says", [(__import__("errno").ENOSPC, "no space left on the device holding"),
                                       (__import__("errno").EACCES, "no permission to write or read")])
def test_a_full_disk_or_a_permission_is_one_line_naming_the_file(capsys, code, says):
    from runkit.cli import run

    def main():
        raise OSError(code, os.strerror(code), "/results/sweep/results.jsonl.tmp")
    assert run(main, []) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and says in line and "/results/sweep/results.jsonl.tmp" in line
    with pytest.raises(OSError):  # a bug's OSError (a file the code should have made) keeps its traceback
        run(lambda: open("/nonexistent/file/of/ours"), [])


# ------------------------------------------------------------------ the logging window and the resumed log

def test_window_means_sum_in_float64_per_step_and_reset():
    window = WindowMeans()
    assert window.means() == {} and window.count == 0
    window.add(loss_d=torch.tensor(16777216.0), loss_g=2)  # 2**24: float32 cannot add 1 to it
    window.add(loss_d=torch.tensor(1.0), acc=0.5)
    assert window.count == 2
    means = window.means()
    assert list(means) == ["acc", "loss_d", "loss_g"]  # sorted, whatever order the keys came in
    assert means == {"acc": 0.25, "loss_d": 8388608.5, "loss_g": 1.0}  # divided by the steps, not the keys
    assert all(type(v) is float for v in means.values())
    assert window.means() == {} and window.count == 0 and window.sums == {}


def test_window_adds_device_tensors_without_reading_them():
    # a meta tensor has no values: reading one (float(), .item()) raises, as a per-step host sync would show
    window = WindowMeans()
    window.add(loss=torch.ones((), device="meta"))
    window.add(loss=torch.ones((), device="meta"))
    total = window.sums["loss"]
    assert isinstance(total, torch.Tensor) and total.is_meta and total.dtype == torch.float64 and window.count == 2


def test_window_state_round_trips_as_plain_numbers():
    window = WindowMeans()
    window.add(a=torch.tensor([1.5], dtype=torch.float32).squeeze(), b=1)
    window.add(a=0.5, b=torch.tensor(2))
    state = window.state_dict()
    assert state == {"sums": {"a": 2.0, "b": 3.0}, "count": 2}
    assert all(type(v) is float for v in state["sums"].values())
    resumed = WindowMeans()
    resumed.load_state_dict({"sums": state["sums"], "count": 2.0})
    state["sums"]["a"] = 100.0  # the checkpoint's dict is not shared
    assert resumed.count == 2 and type(resumed.count) is int
    resumed.add(a=1.0, b=0.0)
    assert resumed.means() == {"a": 1.0, "b": 1.0}


def test_truncate_from_drops_the_rows_a_resume_will_log_again(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False)
    logger.truncate_from(3)  # no log yet: nothing to do, nothing written
    assert not logger.path.exists()
    for step in (1, 2, 3, 4):
        logger.log(step, {"loss": step / 10, "lr": 0.5})
    logger.truncate_from(3)
    assert logger.path.read_text() == "step,loss,lr\n1,0.1,0.5\n2,0.2,0.5\n"
    logger.log(3, {"loss": 0.7, "lr": 0.5})
    assert [row["step"] for row in logger.read()] == [1.0, 2.0, 3.0]
    logger.path.write_text("step,loss\n1.0,0.5\n2.0,0.25\n")  # steps written as floats by another tool
    logger.truncate_from(2)
    assert logger.path.read_text() == "step,loss\n1.0,0.5\n"
    logger.truncate_from(1)
    assert logger.path.read_text() == "step,loss\n"
    logger.truncate_from(1)  # a header without rows stays as it is
    assert logger.path.read_text() == "step,loss\n"
