"""Preemption-safe submitit jobs, job arrays with per-job errors, and DDP set-up inside a job.

`PreemptibleCall(fn, *args, **kwargs)` is what to submit. When SLURM warns the job (SIGUSR2 on
preemption or `signal_delay_s` before the time limit), submitit calls `checkpoint()`, which hands
back the same call: the job is requeued and `fn` runs again from the start, so `fn` must resume
from its own checkpoint files (a run directory derived from its config, never from the clock).
With `runkit.preemption.install()` in `fn`'s loop the signal only sets a flag; the loop saves at
its next step boundary and then calls `runkit.preemption.hand_over()`, which runs submitit's
handler (checkpoint, `scontrol requeue`, exit). Nothing done after the last checkpoint is lost.

A job that raises is not requeued: submitit records the traceback as the job's result and
`wait_jobs` reports it for that job while the other jobs go on.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import submitit
from submitit.core.utils import UncompletedJobError

from runkit.errors import UserError
from runkit.jobs import JobReport

# Queue states after which a job will not run again by itself.
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                   "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED"}


def export_distributed_env() -> bool:
    """In a multi-task submitit job, export MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK for
    `torch.distributed.init_process_group("env://")`, i.e. for `runkit.distributed.init_distributed()`.

    Returns True when it exported (more than one task and not already set). CUDA_VISIBLE_DEVICES
    is left alone: `init_distributed` selects `cuda:LOCAL_RANK` itself.
    """
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return False
    if env.num_tasks <= 1 or "MASTER_ADDR" in os.environ:
        return False
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


class PreemptibleCall(submitit.helpers.Checkpointable):
    """`fn(*args, **kwargs)` as a job that requeues itself when preempted or timed out.

    `fn` must be picklable and must resume from its own checkpoint files: on requeue it is called
    again with the same arguments. In a multi-task job the DDP environment is exported first.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not callable(fn):
            raise TypeError(f"PreemptibleCall needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __call__(self) -> Any:
        export_distributed_env()
        return self.fn(*self.args, **self.kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # The state lives in fn's checkpoint files, not in this object: resubmit the same call.
        return submitit.helpers.DelayedSubmission(self)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"PreemptibleCall({name}, {len(self.args)} args, {sorted(self.kwargs)})"


def submit_array(executor: submitit.Executor, calls: Sequence[Callable[[], Any]]) -> list[submitit.Job]:
    """Submit `calls` (e.g. PreemptibleCalls) as one job array on SLURM, at most the executor's
    `slurm_array_parallelism` running at once; one job per call elsewhere."""
    calls = list(calls)
    if not calls:
        return []
    with executor.batch():
        jobs = [executor.submit(call) for call in calls]
    return jobs


# ----------------------------------------------------------------------------- queue inspection
class QueueUnreachable(UserError, RuntimeError):
    """scontrol did not answer (slurmctld busy or down): a job's state is unknown, not gone."""


def queue_info(job_id: str, *, strict: bool = False) -> dict[str, str]:
    """`scontrol show job -o` as a dict (JobState, Reason, Restarts, ...); empty when SLURM no
    longer knows the job (older than MinJobAge). When SLURM is not reachable: empty too, or with
    `strict`, QueueUnreachable (a caller deciding whether to resubmit must not guess)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True,
                             text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if strict:
            raise QueueUnreachable(f"scontrol show job {job_id}: {exc}") from exc
        return {}
    if out.returncode != 0:
        if strict and "invalid job id" not in out.stderr.lower():
            raise QueueUnreachable(f"scontrol show job {job_id} failed: {out.stderr.strip()[:200]}")
        return {}
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    if not lines:
        return {}
    info: dict[str, str] = {}
    for token in lines[0].split():
        key, sep, value = token.partition("=")
        if sep and key not in info:
            info[key] = value
    return info


def queue_state(job_id: str) -> str | None:
    """The job's SLURM state (PENDING, RUNNING, COMPLETED, ...), None when unknown."""
    return queue_info(job_id).get("JobState")


def jobs_still_queued(jobs_file: Path, log_folder: Path) -> dict[str, str]:
    """For a `{key: job id}` JSON file of submitted jobs: the keys whose job is still pending or
    running. A job whose logs are not in `log_folder` is not ours (a job id that a reinstalled
    cluster hands out again)."""
    if not jobs_file.is_file():
        return {}
    alive: dict[str, bool] = {}
    queued = {}
    for key, job_id in json.loads(jobs_file.read_text()).items():
        if job_id not in alive:
            info = _queue_info_patiently(job_id)
            state = info.get("JobState", "").split(" ")[0]
            ours = bool(info.get("StdOut")) and Path(info["StdOut"]).parent.resolve() == Path(log_folder).resolve()
            alive[job_id] = bool(state) and state not in TERMINAL_STATES and ours
        if alive[job_id]:
            queued[key] = job_id
    return queued


def _queue_info_patiently(job_id: str, tries: int = 5, pause_s: float = 3.0) -> dict[str, str]:
    """queue_info, retried while SLURM does not answer; then a clear error rather than a guess
    (a job taken for gone would be submitted a second time)."""
    for attempt in range(tries):
        try:
            return queue_info(job_id, strict=True)
        except QueueUnreachable as exc:
            if attempt == tries - 1:
                raise QueueUnreachable(f"{exc}; cannot tell whether job {job_id} is still queued, so "
                                       f"nothing is resubmitted: run the command again when SLURM answers") from None
            time.sleep(pause_s)
    return {}


# ------------------------------------------------------------------------------ waiting/results
@dataclass
class JobOutcome:
    job_id: str
    ok: bool
    result: Any = None  # global rank 0's return value
    error: str | None = None
    state: str | None = None
    task_results: list[Any] | None = None  # every task's return value (multi-task / DDP jobs)

    def describe(self) -> str:
        if self.ok:
            return f"job {self.job_id}: done"
        return f"job {self.job_id} ({self.state or 'state unknown'}): {self.error}"


class JobsFailedError(RuntimeError):
    """Some jobs failed; `.outcomes` holds every job's outcome, failed or not."""

    def __init__(self, outcomes: list[JobOutcome]) -> None:
        self.outcomes = outcomes
        failed = [o for o in outcomes if not o.ok]
        lines = "\n".join(o.describe() for o in failed)
        super().__init__(f"{len(failed)} of {len(outcomes)} jobs failed:\n{lines}")


def _log_tail(job: submitit.Job, lines: int = 15) -> str:
    try:
        text = job.stderr() or ""
    except Exception:  # noqa: BLE001 - the log is a courtesy; its absence is not an error
        text = ""
    tail = "\n".join(text.strip().splitlines()[-lines:])
    return f"\n--- last lines of {job.paths.stderr} ---\n{tail}" if tail else ""


def _is_slurm(job: submitit.Job) -> bool:
    return isinstance(job, submitit.SlurmJob)


def _finished(job: submitit.Job) -> bool:
    """Every task wrote its result file. For SLURM jobs this avoids submitit's `sacct` polling,
    which fails (with a warning per call) on clusters without accounting, like the local one."""
    if not _is_slurm(job):
        return job.done()
    tasks = job._sub_jobs or [job]  # one sub-job per task in multi-task jobs
    return all(task.paths.result_pickle.exists() for task in tasks)


def _outcome(job: submitit.Job, state: str | None) -> JobOutcome:
    try:
        results = job.results()
        return JobOutcome(job.job_id, True, result=results[0], state=state or "COMPLETED",
                          task_results=results)
    except UncompletedJobError as exc:
        return JobOutcome(job.job_id, False, error=f"{exc}{_log_tail(job)}", state=state)
    except Exception as exc:  # noqa: BLE001 - submitit's FailedJobError carries the traceback
        return JobOutcome(job.job_id, False, error=str(exc), state=state or "FAILED")


def wait_jobs(jobs: Iterable[submitit.Job], timeout_s: float | None = None, poll_s: float = 2.0,
              vanished_grace_s: float = 15.0) -> list[JobOutcome]:
    """Wait for every job; return one `JobOutcome` per job, in order, never raising for a job.

    Works without SLURM accounting (no `sacct`): a job is done when its result file exists; a
    SLURM job that has left the queue (or reached a terminal state) for `vanished_grace_s`
    without writing one is reported failed with its state and the tail of its stderr. Jobs still
    running after `timeout_s` are reported as such (and left running).
    """
    jobs = list(jobs)
    outcomes: dict[int, JobOutcome] = {}
    gone_since: dict[int, float] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while len(outcomes) < len(jobs):
        for index, job in enumerate(jobs):
            if index in outcomes:
                continue
            if _finished(job):
                outcomes[index] = _outcome(job, queue_state(job.job_id) if _is_slurm(job) else None)
                continue
            if not _is_slurm(job):
                continue
            state = queue_state(job.job_id)
            if state is None or state.split()[0] in TERMINAL_STATES:
                first = gone_since.setdefault(index, time.monotonic())
                if time.monotonic() - first >= vanished_grace_s and not _finished(job):
                    outcomes[index] = JobOutcome(
                        job.job_id, False, state=state or "GONE",
                        error=f"left the queue ({state or 'no longer known to SLURM'}) without a "
                              f"result{_log_tail(job)}")
            else:
                gone_since.pop(index, None)
        if len(outcomes) == len(jobs):
            break
        if deadline is not None and time.monotonic() >= deadline:
            for index, job in enumerate(jobs):
                if index not in outcomes:
                    state = queue_state(job.job_id) if _is_slurm(job) else None
                    outcomes[index] = JobOutcome(job.job_id, False, state=state,
                                                 error=f"not finished after {timeout_s:.0f} s")
            break
        time.sleep(poll_s)
    return [outcomes[i] for i in range(len(jobs))]


def collect_results(jobs: Iterable[submitit.Job], timeout_s: float | None = None,
                    poll_s: float = 2.0) -> list[Any]:
    """The jobs' results in order; `JobsFailedError` listing each failed job's error otherwise."""
    outcomes = wait_jobs(jobs, timeout_s=timeout_s, poll_s=poll_s)
    if not all(o.ok for o in outcomes):
        raise JobsFailedError(outcomes)
    return [o.result for o in outcomes]


def job_runner(executor: submitit.Executor) -> Callable[[Callable[..., Any], list[tuple]], list]:
    """`run_jobs(fn, arg_lists)` for library code that must not know about SLURM (e.g.
    `videodata.cache.ClipCache.build`): one preemptible job per argument list (an array on SLURM),
    waited for; one `runkit.jobs.JobReport` per job, in order, never raising for a job."""

    def run(fn: Callable[..., Any], arg_lists: list[tuple]) -> list:
        jobs = submit_array(executor, [PreemptibleCall(fn, *args) for args in arg_lists])
        reports = []
        for job, outcome in zip(jobs, wait_jobs(jobs)):
            lines = [line.strip() for line in (outcome.error or "").splitlines() if line.strip()]
            reports.append(JobReport(f"job {outcome.job_id} ({outcome.state or 'state unknown'})", outcome.ok,
                                     lines[-1] if lines else ("" if outcome.ok else "no error recorded"),
                                     str(job.paths.stderr)))
        return reports

    return run
