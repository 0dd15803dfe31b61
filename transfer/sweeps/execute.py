"""Running a planned sweep: group its cells into jobs, size each job, run the jobs (in this process,
as local subprocesses or as SLURM job arrays), and write the report.

Jobs (`protocols.Protocol.job`): one per cell of a "train" protocol (fine-tuning keeps its own
checkpoints; on a GPU cluster it asks for one GPU), and one per split and pretraining run for the
"features" protocols - that job extracts the frozen features of each init once on its GPU and
fits every linear and k-NN cell of the split on them with its CPUs. On SLURM each kind
of job is one array sized by the cluster profile (`slurm.profiles.ClusterProfile.job_request`);
locally at most `max_parallel` jobs run at a time, in that many worker processes that live for the
whole sweep (a fresh process per job spent ~5 s importing torch before each cell). Re-running the same sweep skips done cells,
retries failed ones, resumes killed fine-tune cells from their checkpoints and waits for jobs of
an earlier run still in the queue instead of submitting their cells twice.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any, Sequence

import submitit
import torch
from threadpoolctl import threadpool_limits

from runkit.atomic import atomic_write_json
from runkit.logging import progress
from runkit.preemption import Preempted
from runkit.processes import worker_context
from slurm.executors import make_executor
from slurm.jobs import PreemptibleCall, jobs_still_queued, queue_state, submit_array, wait_jobs
from slurm.profiles import JOB_KINDS, JobRequest, load_profile
from transfer.ledger import Ledger
from transfer.report import write_all
from transfer.sweeps.cells import Cell, SweepContext
from transfer.sweeps.plan import SweepPlan, build_caches, plan_sweep
from transfer.sweeps.protocols import PROTOCOLS, feature_set, select_snapshot
from transfer.sweeps.spec import SweepSpec

log = logging.getLogger(__name__)


def run_cells(ctx: SweepContext, cells: Sequence[Cell]) -> list[dict]:
    """A job: run cells in order (a probe job first makes sure its features exist, once)."""
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm_cpus:  # a SLURM job uses the CPUs it was given
        ctx = replace(ctx, threads=int(slurm_cpus))
    # The job's thread count holds for everything it runs: torch, and the BLAS/OpenMP pools
    # under numpy and scikit-learn. OpenBLAS left at OMP_NUM_THREADS made the probe's logistic
    # regression 25x slower here (5.5 s vs 0.21 s, 2 threads vs 1 on 2 cores) and, beside a
    # concurrent fine-tune job, both twice as slow.
    torch.set_num_threads(ctx.threads)
    with threadpool_limits(ctx.threads):
        ledger = ctx.ledger
        todo = [c for c in cells if not ledger.is_done(c.cell_id)]
        # the training lists' features first, once per init (the test lists' come with the first
        # final evaluation: nothing is read from a test list before a cell's choices are made)
        wanted = {(c.replicate, c.weights, f"manifests/split{c.split}_train.txt", c.protocol)
                  for c in todo if PROTOCOLS[c.protocol].job == "features"}
        specs = {}  # one extraction per distinct feature spec (linear and k-NN share theirs)
        for replicate, init, train_list, protocol in sorted(wanted):
            spec = PROTOCOLS[protocol].features(ctx.recipe)
            specs.setdefault((replicate, init, train_list, repr(spec)), spec)
        for (replicate, init, train_list, _), spec in sorted(specs.items(), key=lambda kv: kv[0]):
            try:
                feature_set(ctx.for_replicate(replicate), init, train_list, replicate, spec)
            except Exception as exc:  # noqa: BLE001 - each cell below records the failure itself
                log.error("feature extraction for %s/%s (replicate %d) failed: %s", init, train_list, replicate, exc)
        return [run_cell(ctx, cell) for cell in cells]


def job_kind(cells: Sequence[Cell]) -> str:
    """The job's kind (`protocols.JOB_KINDS`): that of its cells' protocol."""
    return PROTOCOLS[cells[0].protocol].job


def run_cell(ctx: SweepContext, cell: Cell) -> dict:
    """One cell (its job, `run_cells`, sets the threads): skip it if the ledger has it done, else
    mark it running, run its protocol (`PROTOCOLS`) on the context's device and record done
    (metrics) or failed (error and traceback tail); returns {"cell_id", "status"} and never raises
    for an error inside the cell, so one cell never stops the others. A fine-tune cell keeps its
    checkpoints under `cells/<cell_id>/ckpt` (a killed or preempted cell resumes where it stopped);
    a preemption request leaves the entry `running` (not a failure) for submitit's requeue."""
    ledger = ctx.ledger
    entry = ledger.read(cell.cell_id)
    if entry is not None and entry["status"] == "done":
        return {"cell_id": cell.cell_id, "status": "done", "skipped": True}
    ctx = ctx.for_replicate(cell.replicate)
    ledger.mark_running(cell.cell_id, cell.as_dict())
    started = time.perf_counter()
    try:
        choice = None
        if cell.init == "selected":
            choice = select_snapshot(ctx, cell)
            ctx = replace(ctx, checkpoint=choice["path"], checkpoint_sha256=choice["sha256"])
        if cell.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {cell.protocol!r}; expected one of {sorted(PROTOCOLS)}")
        result, timing = PROTOCOLS[cell.protocol].run(ctx, cell)
        if choice is not None:
            result["snapshot"] = choice
            result["protocol"]["snapshot"] = f"step {choice['step']}: {choice['reason']}"
    except Preempted:
        log.warning("cell %s preempted: its checkpoint is saved; it resumes on the next run", cell.cell_id)
        return {"cell_id": cell.cell_id, "status": "running", "preempted": True}
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded; the sweep goes on
        tail = "".join(traceback.format_exception(exc)[-6:])
        ledger.mark_failed(cell.cell_id, cell.as_dict(), f"{type(exc).__name__}: {exc}\n{tail}",
                           elapsed_s=time.perf_counter() - started)
        log.error("cell %s failed: %s", cell.cell_id, exc)
        return {"cell_id": cell.cell_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    ledger.mark_done(cell.cell_id, cell.as_dict(), result, elapsed_s=time.perf_counter() - started, **timing)
    # the checkpoints only served resumption; a done cell is never re-trained
    shutil.rmtree(ctx.path(f"cells/{cell.cell_id}/ckpt"), ignore_errors=True)
    return {"cell_id": cell.cell_id, "status": "done", "video_acc": result["video_acc"]}


def group_jobs(cells: Sequence[Cell]) -> list[list[Cell]]:
    """Probe cells of one split and pretraining run share a job (one extraction per init); each
    fine-tune cell is its own."""
    groups: dict[tuple[int, int], list[Cell]] = {}
    singles = []
    for cell in cells:
        if PROTOCOLS[cell.protocol].job == "features":
            groups.setdefault((cell.replicate, cell.split), []).append(cell)
        else:
            singles.append([cell])
    # probe jobs first: they are quick and give the first numbers early
    return list(groups.values()) + singles


def job_requests(spec: SweepSpec, jobs: Sequence[Sequence[Cell]]) -> list[JobRequest | None]:
    """The resources each job asks for (None: not a SLURM sweep)."""
    if spec.executor != "slurm":
        return [None] * len(jobs)
    profile = load_profile(spec.cluster)
    return [profile.job_request(job_kind(cells)) for cells in jobs]


def describe_jobs(plan: SweepPlan) -> list[str]:
    """What --dry-run prints: per job, its resource request and its cells with their status."""
    ledger = plan.ctx.ledger
    jobs = group_jobs(plan.cells)
    lines = []
    for number, (cells, request) in enumerate(zip(jobs, job_requests(plan.spec, jobs)), start=1):
        asks = request.describe() if request else f"{plan.spec.executor} executor, {plan.spec.threads} thread(s)"
        lines.append(f"job {number} ({job_kind(cells)}, {len(cells)} cell(s)): {asks}")
        lines += [f"  {ledger.status(c.cell_id):8s} {c.cell_id}" for c in cells]
    return lines


def _job_outcomes(job) -> list[dict] | None:
    try:
        return job.result()
    except Exception as exc:  # noqa: BLE001 - a crashed job (killed process) is reported, not raised
        log.error("job %s ended without a result: %s", getattr(job, "job_id", "(local worker)"),
                  str(exc).splitlines()[-1] if str(exc) else exc)
        return None


class _Tally:
    def __init__(self, total: int, show: bool):
        self.counts = {"done": 0, "failed": 0, "running": 0, "lost": 0}
        self.bar = progress(total=total, desc="cells", unit="cell", disable=not show)

    def account(self, outcomes: list[dict] | None, cells: Sequence[Cell]) -> None:
        if outcomes is None:
            self.counts["lost"] += len(cells)
        else:
            ids = {c.cell_id for c in cells}  # a job of an earlier run may also hold other cells
            for outcome in outcomes:
                if outcome["cell_id"] in ids:
                    self.counts[outcome["status"]] = self.counts.get(outcome["status"], 0) + 1
        self.bar.update(len(cells))
        self.bar.set_postfix(done=self.counts["done"], failed=self.counts["failed"])


def _run_on_slurm(plan: SweepPlan, jobs: list[list[Cell]], tally: _Tally) -> None:
    jobs_dir, jobs_file = plan.out_dir / "jobs", plan.out_dir / "jobs.json"
    # Cells whose job from an earlier run of this sweep is still queued or running (the submitting
    # process died, the jobs did not) are waited for, never submitted again: two jobs would train
    # one fine-tune cell into the same checkpoint folder at once.
    queued = jobs_still_queued(jobs_file, jobs_dir)
    held: dict[str, list[Cell]] = {}
    fresh: list[list[Cell]] = []
    for cells in jobs:
        for cell in cells:
            if cell.cell_id in queued:
                held.setdefault(queued[cell.cell_id], []).append(cell)
        rest = [c for c in cells if c.cell_id not in queued]
        if rest:
            fresh.append(rest)
    if held:
        log.warning("waiting for %d job(s) of an earlier run still in the queue (%s) instead of submitting "
                    "their %d cells again", len(held), ", ".join(held), sum(len(c) for c in held.values()))
    pairs = [(submitit.SlurmJob(folder=jobs_dir, job_id=job_id), cells) for job_id, cells in held.items()]
    for kind in JOB_KINDS:  # one array per kind of job, each sized for its work
        mine = [cells for cells in fresh if job_kind(cells) == kind]
        if not mine:
            continue
        request = load_profile(plan.spec.cluster).job_request(kind)
        executor = make_executor("slurm", jobs_dir, plan.spec.cluster, job_name=f"transfer-{kind}",
                                 **request.profile_overrides())
        submitted = submit_array(executor, [PreemptibleCall(run_cells, plan.ctx, cells) for cells in mine])
        pairs += list(zip(submitted, mine))
    atomic_write_json(jobs_file, {c.cell_id: job.job_id for job, cells in pairs for c in cells})
    for outcome, (_, cells) in zip(wait_jobs([job for job, _ in pairs]), pairs):
        tally.account(outcome.result if outcome.ok else None, cells)


class _WorkerPool:
    """`max_parallel` worker processes (runkit.processes) for the whole sweep (the local executor): a job is
    `run_cells` in one of them. A worker that dies (killed, out of memory) loses its job's cells,
    reported like a crashed SLURM job; the pool is then started afresh for the jobs after it."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=worker_context())

    def submit(self, ctx: SweepContext, cells: list[Cell]):
        try:
            return self.pool.submit(run_cells, ctx, cells)
        except BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start()
            return self.pool.submit(run_cells, ctx, cells)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _run_here(plan: SweepPlan, jobs: list[list[Cell]], tally: _Tally, stop_after: int | None) -> None:
    """local (worker processes) or debug (this process): at most max_parallel jobs in flight."""
    spec = plan.spec
    if spec.executor == "local":
        executor = _WorkerPool(spec.max_parallel)
        submit = lambda cells: executor.submit(plan.ctx, cells)  # noqa: E731
    else:
        executor = make_executor(spec.executor, plan.out_dir / "jobs", spec.cluster, job_name="transfer")
        submit = lambda cells: executor.submit(run_cells, plan.ctx, cells)  # noqa: E731
    pending, running, started = list(jobs), [], 0
    try:
        while pending or running:
            while pending and len(running) < spec.max_parallel:
                if stop_after is not None and started >= stop_after:
                    pending.clear()
                    break
                cells = pending.pop(0)
                running.append((submit(cells), cells))
                started += 1
            still = []
            for job, cells in running:
                if job.done():
                    tally.account(_job_outcomes(job), cells)
                else:
                    still.append((job, cells))
            running = still
            if running:
                time.sleep(0.2)
    finally:
        if isinstance(executor, _WorkerPool):
            executor.close()


def run_sweep(spec: SweepSpec, *, stop_after_jobs: int | None = None, report: bool = True) -> dict[str, Any]:
    """Plan, build the caches, run every cell not yet done, write the report. Returns a summary."""
    started = time.perf_counter()
    plan = build_caches(plan_sweep(spec), workers=spec.cache_workers)
    ledger = plan.ctx.ledger
    todo = [c for c in plan.cells if not ledger.is_done(c.cell_id)]
    jobs = group_jobs(todo)
    tally = _Tally(len(todo), spec.show_progress)
    try:
        if spec.executor == "slurm" and jobs:
            _run_on_slurm(plan, jobs, tally)
        elif jobs:
            _run_here(plan, jobs, tally, stop_after_jobs)
    finally:
        tally.bar.close()
    # tables and figures (when a cell is done), then report.md / report.html: printed last by sweep.py
    written = write_all(plan.out_dir) if report else {}
    summary = ledger.summary([c.cell_id for c in plan.cells])
    return {"out_dir": str(plan.out_dir), "cells": len(plan.cells), "skipped": len(plan.cells) - len(todo),
            "counts": tally.counts, "status": {k: len(v) for k, v in summary.items()},
            "report": {k: str(v) for k, v in written.items()}, "seconds": time.perf_counter() - started}


def sweep_status(spec: SweepSpec) -> dict[str, list[str]]:
    """done / running / failed / pending / interrupted from the ledger (and the queue on SLURM)."""
    plan = plan_sweep(spec)
    queue = None
    jobs_file = plan.out_dir / "jobs.json"
    if spec.executor == "slurm" and jobs_file.is_file():
        queue = {}
        for cell_id, job_id in json.loads(jobs_file.read_text()).items():
            state = queue_state(job_id)
            if state:
                queue[cell_id] = state.split()[0]
    return Ledger(plan.out_dir / "ledger").summary([c.cell_id for c in plan.cells], queue)


__all__ = ["run_sweep", "sweep_status", "run_cells", "run_cell", "group_jobs", "describe_jobs", "job_requests"]
