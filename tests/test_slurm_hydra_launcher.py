"""`python pretrain/run.py -m hydra/launcher=local_slurm` on the real local SLURM cluster: the
Hydra submitit launcher route, with timeouts that requeue.

A time limit of 2 minutes makes submitit count every SIGUSR2 as a *timeout* (it only calls a
signal a preemption before min(80 % of the limit, limit - 10 min)), so `max_num_timeout` decides
whether the job comes back. With pretrain/conf/hydra/launcher/local_slurm.yaml (max_num_timeout 3)
a run that times out twice is requeued, resumes from its checkpoint, and ends with the same
discriminator as a plain uninterrupted `python pretrain/run.py`; with the stock `submitit_slurm`
launcher (max_num_timeout 0) the same signal ends the run unrequeued.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
import torch

from _timing import REFERENCE_STEP_S, scaled, steps_for
from slurm.jobs import queue_info
from test_slurm_cluster import local_cluster, progress_of_attempts, wait_until  # noqa: F401  (fixture)
from test_slurm_pretrain import logged_steps

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
STEPS = steps_for(400 * REFERENCE_STEP_S, at_least=400)  # long enough to interrupt twice (tests/_timing.py)
TIMEOUTS = 2


def tiny_overrides(tmp_path: Path, run_name: str) -> list[str]:
    """A tiny deterministic CPU run on a tiny synthetic set (cf. tests/test_pretrain_run.py)."""
    return ["experiment=cpu_demo", f"run_name={run_name}", f"output_root={tmp_path / 'pretrain'}",
            f"data.synthetic.root={tmp_path / 'synthetic'}", "data.synthetic.num_classes=2",
            "data.synthetic.clips_per_group=1", "data.synthetic.unlabeled_videos=8",
            "data.synthetic.frames=20", "data.synthetic.frame_width=32", "data.synthetic.frame_height=32",
            "data.synthetic.workers=1", "data.synthetic.progress=false", "data.max_frames=20",
            f"data.cache_root={tmp_path / 'cache'}", "data.decode_workers=1",
            "model.width=4", "model.size=16", f"trainer.steps={STEPS}", "trainer.batch_size=4",
            "trainer.log_every=1", "trainer.ckpt_every=1000", "trainer.num_samples=2",
            "trainer.threads=1", "trainer.deterministic=true", "trainer.time_limit_min=0"]


# 2 min: every signal counts as a timeout; SIGUSR2 10 s before the limit (we send ours earlier).
SHORT_LIMIT = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=10"]


def start_run(args: list[str], log: Path, multirun: bool = True) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VGANBENCH_NO_PROGRESS": "1"}
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, "pretrain/run.py", *(["-m"] if multirun else []), *args],
                            cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout_s: float) -> tuple[int, str]:
    timeout_s = scaled(timeout_s)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"pretrain/run.py did not finish in {timeout_s:.0f} s:\n"
                             f"{log.read_text()[-3000:]}")
    return proc.returncode, log.read_text()


def submitted_job(sweep_dir: Path, proc: subprocess.Popen, log: Path) -> submitit.SlurmJob:
    """The launcher's one job, from its submitit folder (<sweep dir>/.submitit/<job id>)."""
    folder = sweep_dir / ".submitit"

    def submitted() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pretrain/run.py -m exited early ({proc.returncode}):\n"
                                 f"{log.read_text()[-3000:]}")
        return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())

    wait_until(submitted, 90, f"a job folder under {folder}")
    [job_id] = [p.name for p in folder.iterdir() if p.name.isdigit()]
    return submitit.SlurmJob(folder=folder / "%j", job_id=job_id)


def attempt_progress(job: submitit.SlurmJob, run_dir: Path, baseline: dict[int, int] | None = None):
    return progress_of_attempts(job, lambda: (logged_steps(run_dir) or [0])[-1], STEPS - 20,
                                "training", baseline)


def test_hydra_launcher_requeues_timeouts_and_matches_plain_run(local_cluster, tmp_path):  # noqa: F811
    from pretrain.export import load_export

    # The reference: a plain local run (it also writes the synthetic set and the clip cache the
    # SLURM job then reuses).
    ref_log = tmp_path / "reference.log"
    rc, text = finish(start_run(tiny_overrides(tmp_path, "reference"), ref_log, multirun=False),
                      ref_log, 300)
    assert rc == 0, text[-3000:]

    log = tmp_path / "multirun.log"
    began = time.monotonic()
    proc = start_run(["hydra/launcher=local_slurm", *SHORT_LIMIT, *tiny_overrides(tmp_path, "tiny")], log)
    run_dir = tmp_path / "pretrain" / "tiny"
    job = submitted_job(tmp_path / "pretrain" / "multirun" / "cpu_demo", proc, log)
    has_progress = attempt_progress(job, run_dir)
    for attempt in range(TIMEOUTS):
        wait_until(lambda: has_progress(attempt), 120,
                   f"progress of attempt {attempt} of job {job.job_id}",
                   describe=lambda: str(queue_info(job.job_id)))
        job._interrupt(timeout=True)  # SIGUSR2 alone: what SLURM sends signal_delay_s before the limit
    rc, text = finish(proc, log, 240)
    assert rc == 0, text[-3000:]
    elapsed = time.monotonic() - began

    restarts = int(queue_info(job.job_id).get("Restarts", "0"))
    # SLURM's own warning (10 s before the 2 min limit) could add one more timeout under heavy load
    assert TIMEOUTS <= restarts <= 3, f"{restarts} restarts"
    err = "".join(p.read_text() for p in job.paths.folder.glob("*_log.err"))
    out = "".join(p.read_text() for p in job.paths.folder.glob("*_log.out"))  # Hydra logs INFO here
    assert err.count("this job is timed-out") == restarts
    assert len({line.split(" - ", 1)[-1] for line in out.splitlines() if "resumed from" in line}) == restarts
    assert logged_steps(run_dir) == list(range(1, STEPS + 1)), "repeated or missing steps"

    export_path = run_dir / "discriminator.pt"
    got, want = load_export(export_path), load_export(tmp_path / "pretrain" / "reference" / "discriminator.pt")
    assert got.step == want.step == STEPS
    assert got.state_dict.keys() == want.state_dict.keys()
    for key in want.state_dict:
        assert torch.equal(got.state_dict[key], want.state_dict[key]), f"{key} differs from the plain run"
    # Hydra's own files go to the sweep dir; the run directory is the config's, never the clock's
    assert (tmp_path / "pretrain" / "multirun" / "cpu_demo" / "0" / ".hydra" / "config.yaml").is_file()
    print(f"hydra launcher: {restarts} timeouts requeued, {elapsed:.0f} s end to end")


def test_stock_launcher_does_not_requeue_a_timeout(local_cluster, tmp_path):  # noqa: F811
    """Why local_slurm raises max_num_timeout: hydra-submitit-launcher's default (0) ends a run
    at its first timeout, even though the run could resume."""
    log = tmp_path / "multirun.log"
    proc = start_run(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                      "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", *SHORT_LIMIT,
                      *tiny_overrides(tmp_path, "stock")], log)
    job = submitted_job(tmp_path / "pretrain" / "multirun" / "cpu_demo", proc, log)
    has_progress = attempt_progress(job, tmp_path / "pretrain" / "stock", baseline={0: 0})
    wait_until(lambda: has_progress(0), 180,
               f"progress of job {job.job_id}", describe=lambda: str(queue_info(job.job_id)))
    job._interrupt(timeout=True)
    rc, text = finish(proc, log, 120)
    assert rc != 0
    assert "Job not requeued because: timed-out too many times" in text
    assert queue_info(job.job_id).get("Restarts") == "0"
    assert not (tmp_path / "pretrain" / "stock" / "discriminator.pt").exists()
