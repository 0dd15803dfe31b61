"""Against the real one-node SLURM cluster of slurm/local-cluster/start.sh (never a mock).

The session fixture starts it (idempotent); the tests skip, saying why, only where start.sh
reports that this machine cannot host it (exit code 3: no root and no running cluster).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import cloudpickle
import pytest

from _timing import scaled
from runkit import preemption
from runkit.atomic import atomic_write_json, atomic_write_text
from slurm.executors import make_executor
from slurm.jobs import PreemptibleCall, collect_results, queue_info, submit_array, wait_jobs

REPO_ROOT = Path(__file__).resolve().parents[1]
START = REPO_ROOT / "slurm" / "local-cluster" / "start.sh"
EXIT_UNAVAILABLE = 3

pytestmark = pytest.mark.slurm

# Jobs cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="session")
def local_cluster() -> str:
    """Start (or find) the local cluster; the partition name."""
    try:
        proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        pytest.skip("bash not found: cannot run slurm/local-cluster/start.sh")
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode == EXIT_UNAVAILABLE:
        pytest.skip(f"local SLURM cluster unavailable: {output.splitlines()[-1] if output else ''}")
    if proc.returncode != 0:
        pytest.fail(f"slurm/local-cluster/start.sh failed with exit code {proc.returncode}:\n{output}")
    return "debug"


def slurm_executor(folder: Path, **overrides):
    # The local profile's 30 min limit matters: submitit counts a signal as a *timeout* (and uses
    # up max_num_timeout) once a job has run min(80% of its limit, limit - 10 min).
    return make_executor("slurm", folder / "%j", cluster="local", **overrides)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.3,
               describe: Callable[[], str] | None = None) -> None:
    """Poll `condition` for `timeout_s` seconds, stretched on a machine slower than the one the
    limits were tuned on (tests/_timing.py)."""
    timeout_s = scaled(timeout_s)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            state = f"; last state: {describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{state}")
        time.sleep(poll_s)


def restart_count(job_id: str) -> int:
    return int(queue_info(job_id).get("Restarts", "0"))


def interrupt_and_requeue(job, attempt_has_progress: Callable[[int], bool], times: int,
                          timeout_s: float = 90) -> list[float]:
    """Preempt `job` `times` times, each time once its current attempt has made progress (so its
    signal handlers are in place); wait for the requeued job to run again. Seconds per cycle."""
    cycles = []
    for attempt in range(times):
        wait_until(lambda: attempt_has_progress(attempt), timeout_s,
                   f"progress of attempt {attempt} of job {job.job_id}")
        began = time.monotonic()
        job._interrupt()  # SIGTERM then SIGUSR2, as on a real preemption

        # The requeued job waits out the cluster's cred_expire (reason BeginTime) on purpose:
        # forcing StartTime=now races slurmd's revoked credential and kills the job.
        def running_again() -> bool:
            info = queue_info(job.job_id)
            return int(info.get("Restarts", "0")) > attempt and info.get("JobState") == "RUNNING"

        wait_until(running_again, timeout_s, f"job {job.job_id} to be requeued and run again",
                   describe=lambda: str(queue_info(job.job_id)))
        cycles.append(time.monotonic() - began)
    return cycles


def progress_of_attempts(job, last_step: Callable[[], int], limit: int, what: str,
                         baseline: dict[int, int] | None = None) -> Callable[[int], bool]:
    """A predicate for `interrupt_and_requeue`: True once attempt `attempt` of `job` is running and
    has logged a step of its own (so submitit's and the loop's signal handlers are in place). The
    first look after a requeue still sees the previous attempt's last step: it only records it.
    `limit`: the step the job must not have reached yet (else it is too fast to interrupt)."""
    baseline = {} if baseline is None else baseline

    def has_progress(attempt: int) -> bool:
        info = queue_info(job.job_id)
        if info.get("JobState") != "RUNNING" or int(info.get("Restarts", "0")) != attempt:
            return False
        last = last_step()
        assert last < limit, f"{what} too fast to interrupt it in time: give it more steps"
        if attempt not in baseline:
            baseline[attempt] = last
            return False
        return last > baseline[attempt]

    return has_progress


# ------------------------------------------------------------------------------ jobs run remotely
def square(x: int) -> dict:
    return {"x": x, "square": x * x, "array_task": os.environ.get("SLURM_ARRAY_TASK_ID")}


def fail_loudly(tag: str) -> None:
    raise RuntimeError(f"deliberate failure {tag}")


def counting_job(folder: str, steps: int, step_s: float) -> int:
    """A toy training loop: one "step" adds step+1 to a counter; every step is logged and then
    checkpointed; on SIGUSR2 it stops at the step boundary, after the checkpoint."""
    preemption.install()
    folder = Path(folder)
    state_path, log_path = folder / "state.json", folder / "steps.log"
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    state = json.loads(state_path.read_text()) if state_path.exists() else {"step": 0, "counter": 0}
    # A step logged but not checkpointed is redone: drop its line (cf. MetricLogger.truncate_from).
    kept = log_path.read_text().splitlines()[: state["step"]] if log_path.exists() else []
    atomic_write_text(log_path, "".join(line + "\n" for line in kept))
    for step in range(state["step"], steps):
        time.sleep(step_s)
        state = {"step": step + 1, "counter": state["counter"] + step + 1}
        with open(log_path, "a") as log:
            log.write(f"{step} {attempt}\n")
        atomic_write_json(state_path, state)
        if preemption.requested():
            preemption.hand_over()
    return state["counter"]


def ddp_train(seed: int, steps: int) -> dict:
    """DDP with gloo on CPU: each rank takes its shard of a fixed global batch."""
    import torch

    from runkit.distributed import cleanup, init_distributed

    info = init_distributed(backend="gloo")
    torch.manual_seed(seed)
    model = torch.nn.Linear(6, 3)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if info.enabled else model
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(seed + 1)
    first_grads = None
    for _ in range(steps):
        x = torch.randn(8, 6, generator=generator)
        y = torch.randn(8, 3, generator=generator)
        xs, ys = x[info.rank::info.world_size], y[info.rank::info.world_size]
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(ddp(xs), ys).backward()  # DDP averages over ranks
        if first_grads is None:
            first_grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
    total = torch.tensor([float(info.rank + 1)])
    if info.enabled:
        torch.distributed.all_reduce(total)
    cleanup()
    return {"rank": info.rank, "world": info.world_size, "sum": total.item(),
            "grads": first_grads, "weights": [p.detach().clone() for p in model.parameters()]}


# ------------------------------------------------------------------------------------------ tests
def test_job_array_returns_every_result(local_cluster, tmp_path):
    executor = slurm_executor(tmp_path)
    jobs = submit_array(executor, [PreemptibleCall(square, x) for x in range(5)])
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "not submitted as one array"
    results = collect_results(jobs, timeout_s=scaled(120))
    assert [r["square"] for r in results] == [0, 1, 4, 9, 16]
    assert sorted(r["array_task"] for r in results) == ["0", "1", "2", "3", "4"]


def test_preempted_three_times_resumes_and_loses_nothing(local_cluster, tmp_path):
    steps, work = 40, tmp_path / "work"
    work.mkdir()
    job = slurm_executor(tmp_path).submit(PreemptibleCall(counting_job, str(work), steps, 0.25))
    log_path = work / "steps.log"

    def attempt_has_progress(attempt: int) -> bool:
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        return any(line.split()[1] == str(attempt) for line in lines)

    cycles = interrupt_and_requeue(job, attempt_has_progress, times=3)
    [outcome] = wait_jobs([job], timeout_s=scaled(120))
    assert outcome.ok, outcome.describe()
    assert outcome.result == steps * (steps + 1) // 2
    lines = [line.split() for line in log_path.read_text().splitlines()]
    assert [int(step) for step, _ in lines] == list(range(steps)), "repeated or missing steps"
    attempts = [int(attempt) for _, attempt in lines]
    assert attempts == sorted(attempts) and set(attempts) == {0, 1, 2, 3}
    assert restart_count(job.job_id) == 3
    print(f"requeue cycles (signal -> running again): {[round(c, 1) for c in cycles]} s")


def test_failing_job_reports_its_error_and_is_not_requeued(local_cluster, tmp_path):
    executor = slurm_executor(tmp_path)
    jobs = submit_array(executor, [PreemptibleCall(fail_loudly, "#7"), PreemptibleCall(square, 3)])
    outcomes = wait_jobs(jobs, timeout_s=scaled(120))
    failed, fine = outcomes
    assert fine.ok and fine.result["square"] == 9
    assert not failed.ok and "deliberate failure #7" in failed.error
    wait_until(lambda: queue_info(failed.job_id).get("JobState") in ("FAILED", "COMPLETED"), 60,
               f"job {failed.job_id} to leave the queue")
    info = queue_info(failed.job_id)
    assert info["JobState"] == "FAILED" and info.get("Restarts") == "0"


def test_ddp_two_tasks_match_single_process(local_cluster, tmp_path):
    import torch

    executor = slurm_executor(tmp_path, tasks_per_node=2)
    job = executor.submit(PreemptibleCall(ddp_train, 3, 4))
    [outcome] = wait_jobs([job], timeout_s=scaled(150))
    assert outcome.ok, outcome.describe()
    ranks = outcome.task_results
    assert sorted(r["rank"] for r in ranks) == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert all(r["sum"] == 3.0 for r in ranks)  # all_reduce of 1 + 2
    single = ddp_train(3, 4)  # one process, whole batch
    for result in ranks:
        for got, want in zip(result["grads"], single["grads"]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for got, want in zip(result["weights"], single["weights"]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
