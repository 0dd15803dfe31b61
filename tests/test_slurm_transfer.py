"""The transfer stage on the real local SLURM cluster, interrupted (never a mock).

- A fine-tune cell run as a SLURM job and preempted three times (checkpoint, requeue, resume)
  ends at exactly the configured iteration with an unbroken training log, and with the same
  weights, ledger entry and accuracy as the same cell run without interruption.
- A sweep run with the SLURM executor whose fine-tune jobs are each preempted once, and whose
  submitting process is killed meanwhile, is run again: it waits for the jobs still in the queue
  (never submitting a cell twice) and ends with the same ledger (up to run info: host, pid,
  times) and the same report tables as an uninterrupted sweep.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
import torch

from _timing import REFERENCE_STEP_S, scaled, steps_for
from runkit.atomic import atomic_torch_save
from slurm.executors import make_executor
from slurm.jobs import PreemptibleCall, queue_info, wait_jobs
from test_slurm_cluster import (interrupt_and_requeue, local_cluster,  # noqa: F401  (fixture)
                                progress_of_attempts, restart_count, wait_until)
from test_transfer_sweep import spec_for, stable_ledger, tables, tiny  # noqa: F401  (fixture)
from transfer.sweeps.execute import run_cell
from transfer.ledger import Ledger, stable_view
from transfer.sweeps import plan_sweep, run_sweep
from transfer.sweeps.plan import build_caches
from _tiny import TINY_RECIPE

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Jobs cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = Path(__file__).resolve().parents[1]
# the sweep's submitting process, run apart so that the test can kill it
DRIVER = "import pickle, sys; from transfer.sweeps import run_sweep; run_sweep(pickle.load(open(sys.argv[1], 'rb')))"
# ~20 ms a step on the reference machine: long enough to preempt three times (tests/_timing.py)
CELL_ITERATIONS = steps_for(600 * REFERENCE_STEP_S, at_least=600)
SWEEP_ITERATIONS = steps_for(400 * REFERENCE_STEP_S, at_least=400)


def recipe(iterations: int) -> tuple[str, ...]:
    """The tiny recipe, longer, logging every step (a continuous log is checkable step by step)."""
    return TINY_RECIPE + (f"finetune.iterations={iterations}", "finetune.log_every=1", "finetune.checkpoint_every=100")


def train_rows(cell_dir: Path) -> list[dict]:
    path = cell_dir / "train.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def last_step(cell_dir: Path) -> int:
    rows = train_rows(cell_dir)
    return int(float(rows[-1]["step"])) if rows else 0


# ------------------------------------------------------------------------------ jobs run remotely
def cell_keeping_weights(ctx, cell) -> dict:
    """`run_cell`, plus the classifier's final weights saved as `final_weights.pt` in the cell's
    folder (run_cell deletes its checkpoints once the cell is done)."""
    import transfer.sweeps.protocols as protocols_mod

    real = protocols_mod.finetune

    def finetune_and_keep(model, *args, workdir, **kwargs):
        info = real(model, *args, workdir=workdir, **kwargs)
        atomic_torch_save({k: v.detach().clone() for k, v in model.state_dict().items()},
                          Path(workdir) / "final_weights.pt")
        return info

    protocols_mod.finetune = finetune_and_keep  # run_finetune looks it up at call time
    try:
        return run_cell(ctx, cell)
    finally:
        protocols_mod.finetune = real


# ------------------------------------------------------------------------------------------ tests
def test_finetune_cell_preempted_three_times_equals_uninterrupted(local_cluster, tiny, tmp_path):  # noqa: F811
    plans = {name: build_caches(plan_sweep(spec_for(tiny, f"cell-{name}", fractions=(1.0,), protocols=("finetune",),
                                                   inits=("pretrained",), overrides=recipe(CELL_ITERATIONS))),
                               workers=1)
             for name in ("reference", "preempted")}
    [cell] = plans["preempted"].cells
    assert [c.cell_id for c in plans["reference"].cells] == [cell.cell_id]  # the same cell, two sweeps
    executor = make_executor("slurm", tmp_path / "jobs" / "%j", cluster="local")
    reference = executor.submit(PreemptibleCall(cell_keeping_weights, plans["reference"].ctx, cell))
    preempted = executor.submit(PreemptibleCall(cell_keeping_weights, plans["preempted"].ctx, cell))
    cell_dirs = {name: Path(plan.ctx.out_dir) / "cells" / cell.cell_id for name, plan in plans.items()}
    attempt_has_progress = progress_of_attempts(
        preempted, lambda: last_step(cell_dirs["preempted"]), CELL_ITERATIONS - 50, "fine-tuning")

    began = time.monotonic()
    cycles = interrupt_and_requeue(preempted, attempt_has_progress, times=3, timeout_s=120)
    outcomes = wait_jobs([reference, preempted], timeout_s=scaled(180))
    for outcome in outcomes:
        assert outcome.ok, outcome.describe()
        assert outcome.result["status"] == "done" and "skipped" not in outcome.result
    assert restart_count(preempted.job_id) == 3

    rows = {name: train_rows(d) for name, d in cell_dirs.items()}
    assert [int(r["step"]) for r in rows["preempted"]] == list(range(1, CELL_ITERATIONS + 1)), \
        "repeated or missing steps"
    assert rows["preempted"] == rows["reference"]  # every step's loss and lr, exactly

    entries = {name: Ledger(Path(plan.ctx.out_dir) / "ledger").read(cell.cell_id) for name, plan in plans.items()}
    assert entries["preempted"]["result"]["steps"] == CELL_ITERATIONS
    assert stable_view(entries["preempted"]) == stable_view(entries["reference"])  # accuracy, confusion, loss
    assert entries["reference"]["run"]["resumed_from"] is None
    assert 0 < entries["preempted"]["run"]["resumed_from"] < CELL_ITERATIONS

    want = torch.load(cell_dirs["reference"] / "final_weights.pt", weights_only=True)
    have = torch.load(cell_dirs["preempted"] / "final_weights.pt", weights_only=True)
    assert want.keys() == have.keys()
    for key in want:
        assert torch.equal(want[key], have[key]), f"{key} differs from the uninterrupted run"
    print(f"fine-tune cell: 3 preemptions, cycles {[round(c, 1) for c in cycles]} s, "
          f"total {time.monotonic() - began:.0f} s, video acc {entries['preempted']['result']['video_acc']:.3f}")


def test_sweep_with_preempted_jobs_and_a_lost_driver_equals_uninterrupted(local_cluster, tiny, tmp_path):  # noqa: F811
    """Each fine-tune job is preempted once and the submitting process is killed meanwhile (a lost
    login-node session): running the sweep again waits for the jobs still in the queue instead of
    submitting their cells a second time, and the results equal an uninterrupted sweep's."""
    common = dict(fractions=(1.0,), protocols=("finetune", "linear"), inits=("pretrained", "random"),
                  overrides=recipe(SWEEP_ITERATIONS))
    spec = spec_for(tiny, "sweep-slurm", executor="slurm", cluster="local", **common)
    out = tiny["root"] / "sweep-slurm"
    spec_file, driver_log = tmp_path / "spec.pkl", tmp_path / "driver.log"
    spec_file.write_bytes(pickle.dumps(spec))
    began = time.monotonic()
    with open(driver_log, "w") as handle:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec_file)], cwd=REPO,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=handle,
                                  stderr=subprocess.STDOUT)
    jobs_file = out / "jobs.json"
    try:
        wait_until(lambda: jobs_file.is_file() or driver.poll() is not None, 120, f"{jobs_file}")
        assert driver.poll() is None, f"the sweep ended early:\n{driver_log.read_text()[-3000:]}"
        submitted = json.loads(jobs_file.read_text())
        finetune_jobs = {cell_id: job_id for cell_id, job_id in submitted.items() if cell_id.startswith("finetune-")}
        assert len(submitted) == 4 and len(finetune_jobs) == 2

        def has_progress(cell_id: str, job_id: str) -> bool:
            info = queue_info(job_id)
            if info.get("JobState") != "RUNNING" or info.get("Restarts", "0") != "0":
                return False
            last = last_step(out / "cells" / cell_id)
            assert last < SWEEP_ITERATIONS - 30, "fine-tuning too fast to preempt it: raise SWEEP_ITERATIONS"
            return last > 0  # a step of this (first) attempt: its signal handlers are in place

        interrupted: set[str] = set()

        def interrupt_ready() -> bool:
            for cell_id, job_id in finetune_jobs.items():
                if cell_id not in interrupted and has_progress(cell_id, job_id):
                    submitit.SlurmJob(folder=out / "jobs", job_id=job_id)._interrupt()
                    interrupted.add(cell_id)
            return len(interrupted) == len(finetune_jobs)

        wait_until(interrupt_ready, 180, "both fine-tune jobs to make progress",
                   describe=lambda: str({j: queue_info(j).get("JobState") for j in finetune_jobs.values()}))
    finally:
        driver.kill()  # the driver is lost; the jobs go on in the queue
        driver.wait()
    # the first run's job arrays (one per kind of job: probes, fine-tuning)
    first_submissions = sorted(p.name for p in (out / "jobs").glob("*_submission.sh"))
    assert len(first_submissions) == 2, first_submissions

    # meanwhile, the same sweep never interrupted, in-process jobs in a process of its own
    straight_spec, straight_log = tmp_path / "straight.pkl", tmp_path / "straight.log"
    straight_spec.write_bytes(pickle.dumps(spec_for(tiny, "sweep-straight", **common)))
    with open(straight_log, "w") as handle:
        straight = subprocess.Popen([sys.executable, "-c", DRIVER, str(straight_spec)], cwd=REPO,
                                    env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=handle,
                                    stderr=subprocess.STDOUT)
    try:
        summary = run_sweep(spec)  # again, while the preempted jobs wait to restart
    finally:
        straight_rc = straight.wait(timeout=scaled(240))
    assert straight_rc == 0, straight_log.read_text()[-3000:]
    assert summary["skipped"] <= 2, "the fine-tune cells were done before the re-run: nothing was tested"
    assert summary["status"]["done"] == 4, summary
    assert summary["counts"]["done"] == 4 - summary["skipped"], summary  # each held cell counted once
    assert sorted(p.name for p in (out / "jobs").glob("*_submission.sh")) == first_submissions, \
        "cells were submitted twice"
    assert {k: v for k, v in json.loads(jobs_file.read_text()).items() if k in finetune_jobs} == finetune_jobs
    for cell_id, job_id in finetune_jobs.items():
        assert restart_count(job_id) == 1, f"{cell_id} (job {job_id}) was not requeued once"
        assert Ledger(out / "ledger").read(cell_id)["run"]["resumed_from"] > 0
    slurm_s = time.monotonic() - began
    assert stable_ledger(out) == stable_ledger(tiny["root"] / "sweep-straight")
    got, want = tables(out), tables(tiny["root"] / "sweep-straight")
    assert got and got == want
    print(f"SLURM sweep with 2 preempted jobs and a lost driver: {slurm_s:.0f} s")


def test_a_slurm_sweep_decodes_its_caches_as_jobs(local_cluster, tmp_path):  # noqa: F811
    """--executor slurm: the labeled videos are decoded by a job array on the cluster, not on the
    submitting host; the sweep then runs on them as usual."""
    from _tiny import tiny_sweep_spec, write_tiny_export

    checkpoint = write_tiny_export(tmp_path / "pre" / "discriminator.pt")
    spec = tiny_sweep_spec(tmp_path, checkpoint, "slurm-caches", fractions=(1.0,), seeds=(0,), protocols=("linear",),
                           inits=("pretrained",), executor="slurm", cluster="local")
    summary = run_sweep(spec, report=False)
    assert summary["status"]["done"] == 1
    job_logs = list((tmp_path / "cache" / "jobs").glob("*/*_log.out"))
    assert job_logs, "no cache-building job ran on the cluster"
