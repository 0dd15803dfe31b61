"""Cluster profiles, executor configuration and PreemptibleCall, without a cluster."""
from __future__ import annotations

import pickle

import sys

import cloudpickle
import pytest
import submitit

from slurm.executors import ExecutorError, make_executor, slurm_parameters
from slurm.jobs import PreemptibleCall, collect_results, submit_array, wait_jobs
from slurm.profiles import ClusterProfile, ProfileError, available_profiles, load_profile


def test_every_shipped_profile_loads():
    names = available_profiles()
    assert {"local", "gpu_example"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.signal_delay_s < profile.timeout_min * 60


def test_local_profile_matches_the_local_cluster():
    profile = load_profile("local")
    assert profile.partition == "debug" and profile.gpus_per_node == 0
    assert profile.max_num_timeout >= 1 and profile.array_parallelism >= 1


def test_unknown_key_names_the_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("partition: gpu\ngpus_per_nod: 4\n")
    with pytest.raises(ProfileError, match="gpus_per_nod"):
        load_profile(path)
    with pytest.raises(ProfileError, match="partiton"):
        load_profile("local", partiton="x")


@pytest.mark.parametrize("field,value", [("nodes", 0), ("cpus_per_task", 1.5), ("mem_gb", -1),
                                         ("timeout_min", 1), ("setup", "echo hi")])
def test_bad_values_are_rejected(field, value):
    values = {"timeout_min": 10, "signal_delay_s": 90, field: value}
    with pytest.raises(ProfileError, match=field if field != "timeout_min" else "signal_delay_s"):
        ClusterProfile.from_dict(values, name="bad")


def test_missing_profile_lists_the_available_ones():
    with pytest.raises(ProfileError, match="local"):
        load_profile("no_such_cluster")


def test_profile_from_mapping_and_overrides():
    profile = load_profile({"partition": "p", "timeout_min": 20}, tasks_per_node=2)
    assert profile.partition == "p" and profile.tasks_per_node == 2 and profile.tasks == 2
    assert profile.timeout_min == 20 and profile.name == "custom"
    # every field not given keeps the dataclass default (signal delay, requeues, GPUs, ...)
    assert (profile.gpus_per_node, profile.signal_delay_s, profile.max_num_timeout, profile.mem_gb) == (0, 90, 3, None)
    # a profile survives a round trip through its plain dict, field by field
    again = load_profile(profile.to_dict())
    assert again.to_dict() == {**ClusterProfile().to_dict(), "partition": "p", "timeout_min": 20, "tasks_per_node": 2}


def test_slurm_parameters_from_gpu_profile():
    params = slurm_parameters(load_profile("gpu_example"), job_name="vgan")
    assert params["gpus_per_node"] == 4 and params["tasks_per_node"] == 4
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "my_project"
    assert params["slurm_signal_delay_s"] == 120 and params["slurm_array_parallelism"] == 16
    assert params["name"] == "vgan" and "slurm_constraint" not in params
    # no GPU request at all for a CPU profile (clusters without GRES reject --gpus-per-node=0)
    assert "gpus_per_node" not in slurm_parameters(load_profile("local"))


def test_slurm_executor_writes_the_profile_into_sbatch(tmp_path):
    if submitit.SlurmExecutor.affinity() < 0:
        pytest.skip("no srun on this machine: the slurm executor cannot be built")
    executor = make_executor("slurm", tmp_path, cluster="gpu_example", timeout_min=90)
    sbatch = executor._executor._make_submission_file_text("python -c pass", "0")
    for flag in ("--partition=gpu", "--gpus-per-node=4", "--ntasks-per-node=4", "--time=90",
                 "--signal=USR2@120", "--account=my_project", "--qos=normal", "--mem=240GB"):
        assert flag in sbatch, flag
    assert "module load cuda/12.4 || true" in sbatch
    assert executor._executor.max_num_timeout == 20


def test_unknown_kind_is_an_error(tmp_path):
    with pytest.raises(ExecutorError, match="kubernetes"):
        make_executor("kubernetes", tmp_path)


# Jobs in a subprocess cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _add(a, b):
    return a + b


def _fail(message):
    raise ValueError(message)


def test_debug_executor_runs_preemptible_calls_in_process(tmp_path):
    executor = make_executor("debug", tmp_path)
    jobs = submit_array(executor, [PreemptibleCall(_add, 1, 2), PreemptibleCall(_add, 3, 4)])
    assert collect_results(jobs) == [3, 7]


def test_failed_job_is_reported_per_job(tmp_path):
    # (the debug executor would open pdb on the exception: use subprocesses)
    executor = make_executor("local", tmp_path, timeout_min=2)
    jobs = submit_array(executor, [PreemptibleCall(_add, 1, 1), PreemptibleCall(_fail, "boom 42")])
    outcomes = wait_jobs(jobs, timeout_s=120)
    assert outcomes[0].ok and outcomes[0].result == 2
    assert not outcomes[1].ok and "boom 42" in outcomes[1].error
    with pytest.raises(Exception, match="1 of 2 jobs failed"):
        collect_results(jobs, timeout_s=120)


def test_local_executor_runs_in_a_subprocess(tmp_path):
    executor = make_executor("local", tmp_path, timeout_min=2)
    assert collect_results(submit_array(executor, [PreemptibleCall(_add, 5, 6)]), timeout_s=120) == [11]


def test_checkpoint_resubmits_the_same_call():
    call = PreemptibleCall(_add, 2, b=5)
    delayed = call.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.function is call and delayed.args == () and delayed.kwargs == {}
    assert pickle.loads(pickle.dumps(call))() == 7
    with pytest.raises(TypeError, match="callable"):
        PreemptibleCall(42)


def test_an_unanswering_queue_is_an_error_not_a_resubmission(tmp_path, monkeypatch):
    """Deciding which cells to submit again: a job SLURM no longer knows is gone, but a queue that
    does not answer (slurmctld busy) must not pass for an empty one (the cells would run twice)."""
    import json
    import subprocess

    from slurm import jobs
    from slurm.jobs import QueueUnreachable, jobs_still_queued

    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps({"cell-a": "91_0"}))
    answers = []

    def scontrol(args, **kw):
        answers.append(args)
        return subprocess.CompletedProcess(args, 1, "", "slurm_load_jobs error: Socket timed out on send/recv")
    monkeypatch.setattr(jobs.subprocess, "run", scontrol)
    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    with pytest.raises(QueueUnreachable, match="cannot tell whether job 91_0 is still queued"):
        jobs_still_queued(jobs_file, tmp_path)
    assert len(answers) == 5  # retried before giving up
    monkeypatch.setattr(jobs.subprocess, "run", lambda args, **kw: subprocess.CompletedProcess(
        args, 1, "", "slurm_load_jobs error: Invalid job id specified"))
    assert jobs_still_queued(jobs_file, tmp_path) == {}  # forgotten by SLURM: finished long ago
