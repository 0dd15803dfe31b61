"""Pretraining as a SLURM job on the real local cluster, preempted three times: it must end at
exactly the configured step with a continuous metrics log and the same weights as a run that
was never interrupted (CPU, deterministic)."""
from __future__ import annotations

import csv
import json
import time

import pytest
import torch

from _timing import REFERENCE_STEP_S, scaled, steps_for
from slurm.jobs import queue_info, wait_jobs
from pretrain.launch import submit_pretraining
from test_slurm_cluster import (interrupt_and_requeue, local_cluster,  # noqa: F401  (fixture)
                                progress_of_attempts)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# long enough to preempt three times, on a fast machine too (tests/_timing.py)
STEPS = steps_for(120 * REFERENCE_STEP_S, at_least=120)


def tiny_config(output_root, run_name: str) -> dict:
    return {"run_name": run_name, "output_root": str(output_root),
            "model": {"width": 4, "frames": 16, "size": 32, "z_dim": 8},
            "trainer": {"steps": STEPS, "batch_size": 4, "device": "cpu", "threads": 1,
                        "deterministic": True, "seed": 3, "log_every": 1, "ckpt_every": 1000,
                        "progress": False, "num_samples": 2}}


def logged_steps(run_dir) -> list[int]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [int(float(row["step"])) for row in csv.DictReader(handle)]


def test_pretraining_preempted_three_times_equals_uninterrupted(local_cluster, tmp_path):  # noqa: F811
    from pretrain.export import load_export
    from videodata.clips import ArrayClips

    clips = ArrayClips(torch.randint(0, 256, (24, 16, 32, 32, 3), generator=torch.Generator().manual_seed(0),
                                     dtype=torch.uint8))
    runs = tmp_path / "runs"
    reference = submit_pretraining(tiny_config(runs, "reference"), cluster="local",
                                   folder=tmp_path / "jobs", dataset=clips)
    preempted = submit_pretraining(tiny_config(runs, "preempted"), cluster="local",
                                   folder=tmp_path / "jobs", dataset=clips)
    run_dir = runs / "preempted"
    attempt_has_progress = progress_of_attempts(
        preempted, lambda: (logged_steps(run_dir) or [0])[-1], STEPS - 10, "training")

    began = time.monotonic()
    cycles = interrupt_and_requeue(preempted, attempt_has_progress, times=3, timeout_s=120)
    outcomes = wait_jobs([reference, preempted], timeout_s=scaled(180))
    for outcome in outcomes:
        assert outcome.ok, outcome.describe()
    ref, got = (o.result for o in outcomes)
    assert got["step"] == ref["step"] == STEPS and got["stopped"] == "finished"
    assert int(queue_info(preempted.job_id).get("Restarts", "0")) == 3
    assert logged_steps(run_dir) == list(range(1, STEPS + 1)), "repeated or missing steps"
    # every restart resumed from the checkpoint its predecessor wrote at the preemption (a restart
    # from scratch would also end at STEPS with the same weights: training is deterministic)
    attempts = json.loads((run_dir / "attempts.json").read_text())
    assert [a["slurm_restart"] for a in attempts] == [0, 1, 2, 3]
    resumed = [a["resumed_from"] for a in attempts]
    assert resumed[0] is None and 0 < resumed[1] < resumed[2] < resumed[3] < STEPS, resumed
    assert [a["start_step"] for a in attempts[1:]] == resumed[1:]
    want, have = load_export(ref["export"]).state_dict, load_export(got["export"]).state_dict
    assert want.keys() == have.keys()
    for key in want:
        assert torch.equal(want[key], have[key]), f"{key} differs from the uninterrupted run"
    print(f"pretraining: 3 preemptions, cycles {[round(c, 1) for c in cycles]} s, "
          f"total {time.monotonic() - began:.0f} s")
