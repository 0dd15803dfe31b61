"""The sweep end to end on a tiny synthetic set with a tiny exported discriminator (debug
executor: every job runs in this process)."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from runkit import preemption
from runkit.cli import run
from transfer.ledger import Ledger, stable_view
from transfer.sweeps import protocols as protocols_mod
from transfer.sweeps import SweepSpec, plan_sweep, run_sweep, sweep_status
from transfer.sweep import main as sweep_main
from _tiny import tiny_sweep_spec, write_tiny_export



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"root": root, "checkpoint": write_tiny_export(root / "pre" / "discriminator.pt")}


def spec_for(tiny, out: str, **kw) -> SweepSpec:
    return tiny_sweep_spec(tiny["root"], tiny["checkpoint"], out, **{"seeds": (0,), **kw})


def stable_ledger(out: Path) -> dict:
    return {e["cell_id"]: stable_view(e) for e in Ledger(out / "ledger").entries()}


def tables(out: Path) -> dict:
    return {p.name: p.read_text() for p in sorted((out / "report").glob("*")) if p.suffix in (".csv", ".md", ".tex")}


def test_interrupted_sweep_equals_uninterrupted_and_extracts_once(tiny, monkeypatch):
    extractions = []
    real_extract = protocols_mod.extract_features

    def counting_extract(*args, **kwargs):
        extractions.append(1)
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(protocols_mod, "extract_features", counting_extract)
    straight = run_sweep(spec_for(tiny, "straight"))
    assert straight["status"]["done"] == 8 and straight["status"]["failed"] == 0
    # 2 inits x (train list + test list), shared by both fractions
    assert len(extractions) == 4

    # second sweep: preempt the first fine-tune cell mid-training and stop after 2 jobs (the
    # probe job of the split, then that fine-tune cell)
    calls = {"n": 0}

    def requested():
        calls["n"] += 1
        if calls["n"] == 4:
            preemption._state["requested"] = (signal.SIGUSR2, None)
        return preemption._state["requested"] is not None

    monkeypatch.setattr(preemption, "requested", requested)
    partial = run_sweep(spec_for(tiny, "cut"), stop_after_jobs=2)
    monkeypatch.setattr(preemption, "requested", lambda: preemption._state["requested"] is not None)
    assert partial["status"]["running"] + partial["status"]["interrupted"] == 1
    assert partial["status"]["pending"] == 3 and partial["status"]["done"] == 4
    cut = tiny["root"] / "cut"
    saved = sorted((cut / "cells").glob("finetune-*/ckpt/ckpt_*.pt"))
    assert len({p.parent for p in saved}) == 1 and saved[-1].name == "ckpt_00000003.pt"
    resumed = run_sweep(spec_for(tiny, "cut"))
    assert resumed["skipped"] == 4 and resumed["status"]["done"] == 8
    # the preempted cell continued from its step-3 checkpoint; every other cell ran in one go
    resumed_from = {e["cell_id"]: e["run"].get("resumed_from") for e in Ledger(cut / "ledger").entries()
                    if e["cell"]["protocol"] == "finetune"}
    assert sorted(resumed_from.values(), key=str) == [3, None, None, None], resumed_from
    assert resumed_from[saved[-1].parent.parent.name] == 3
    assert stable_ledger(cut) == stable_ledger(tiny["root"] / "straight")
    assert tables(cut) == tables(tiny["root"] / "straight")
    assert len(extractions) == 8  # the second sweep's own feature folder: 4 more, never per cell
    # a third run has nothing left to do
    assert run_sweep(spec_for(tiny, "cut"))["skipped"] == 8


def test_failed_cell_is_recorded_and_retried(tiny, monkeypatch):
    def explode(ctx, cell, fit):
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(protocols_mod, "_run_probe", explode)
    spec = spec_for(tiny, "failing", fractions=(1.0,), protocols=("linear", "finetune"), inits=("random",))
    first = run_sweep(spec)
    assert first["status"]["failed"] == 1 and first["status"]["done"] == 1
    failed = [e for e in Ledger(tiny["root"] / "failing" / "ledger").entries() if e["status"] == "failed"][0]
    assert "probe exploded" in failed["error"] and failed["cell"]["protocol"] == "linear"
    monkeypatch.undo()
    again = run_sweep(spec)
    assert again["skipped"] == 1 and again["status"]["done"] == 2
    assert sweep_status(spec)["done"] and not sweep_status(spec)["failed"]


def test_manifests_are_recorded_in_results(tiny):
    spec = spec_for(tiny, "manifests", protocols=("linear",))
    assert run_sweep(spec, report=False)["status"]["done"] == 4
    plan = plan_sweep(spec)
    ledger = Ledger(plan.out_dir / "ledger")
    for cell in plan.cells:
        entry = ledger.read(cell.cell_id)
        assert entry["result"]["manifest_sha256"] == cell.manifest_sha256
        assert cell.manifest_sha256[:10] != cell.key[:10]
    shas = {c.rule_tag: c.manifest_sha256 for c in plan.cells}
    assert shas["f0.1"] != shas["f1"]


def test_cli_dry_run_status_and_missing_checkpoint(tiny, capsys, tmp_path):
    common = ["--fractions", "0.1,1", "--seeds", "0", "--root", str(tiny["root"] / "data"),
              "--out", str(tiny["root"] / "straight"), "--executor", "debug"]
    # the tiny set and recipe are not the defaults: only run what needs no training
    args = common + ["--checkpoint", str(tmp_path / "nope.pt"), "--dry-run"]
    assert run(lambda: sweep_main(args), args) == 2
    assert "does not exist" in capsys.readouterr().err
    # no checkpoint given and no LATEST: say to run pretraining first
    from transfer.sweeps.plan import resolve_checkpoint
    from transfer.sweeps.spec import SweepError

    spec = SweepSpec(pretrain_root=str(tmp_path / "pretrain"))
    with pytest.raises(SweepError, match=r"python pretrain/run.py"):
        resolve_checkpoint(spec)


@pytest.mark.slurm
def test_sweep_as_a_slurm_job_array(tiny):
    import shutil
    import subprocess

    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        pytest.skip("no reachable SLURM cluster (bash slurm/local-cluster/start.sh)")
    spec = spec_for(tiny, "slurm", fractions=(1.0,), protocols=("linear", "finetune"), inits=("pretrained",),
                    executor="slurm", cluster="local")
    summary = run_sweep(spec)
    assert summary["status"]["done"] == 2, summary
    out = tiny["root"] / "slurm"
    assert set(__import__("json").loads((out / "jobs.json").read_text())) == {
        e["cell_id"] for e in Ledger(out / "ledger").entries()}
    # the same cells as the in-process executor gives (same ledger up to run info)
    local = run_sweep(spec_for(tiny, "slurm-twin", fractions=(1.0,), protocols=("linear", "finetune"),
                               inits=("pretrained",)))
    assert local["status"]["done"] == 2
    assert stable_ledger(out) == stable_ledger(tiny["root"] / "slurm-twin")
    assert sweep_status(spec)["done"] and not sweep_status(spec)["failed"]


def test_knn_and_linear_share_one_extraction(tiny, monkeypatch):
    extractions = []
    real_extract = protocols_mod.extract_features
    monkeypatch.setattr(protocols_mod, "extract_features",
                        lambda *a, **k: extractions.append(1) or real_extract(*a, **k))
    summary = run_sweep(spec_for(tiny, "knn", fractions=(0.1, 1.0), seeds=(0, 1), protocols=("linear", "knn"),
                                 inits=("pretrained",)))
    assert summary["status"]["done"] == 8
    assert len(extractions) == 2  # train list + test list, for 8 cells of two protocols
    entries = Ledger(tiny["root"] / "knn" / "ledger").entries()
    assert {e["cell"]["protocol"] for e in entries} == {"linear", "knn"}
    assert all(0.0 <= e["result"]["video_acc"] <= 1.0 for e in entries)


def test_local_executor_runs_cells_in_subprocesses(tiny):
    spec = spec_for(tiny, "local", fractions=(1.0,), protocols=("linear", "finetune"), inits=("random",),
                    executor="local", max_parallel=2)
    summary = run_sweep(spec)
    assert summary["status"]["done"] == 2, summary
    pids = {e["run"]["pid"] for e in Ledger(tiny["root"] / "local" / "ledger").entries()}
    assert len(pids) == 2 and __import__("os").getpid() not in pids
    twin = run_sweep(spec_for(tiny, "local-twin", fractions=(1.0,), protocols=("linear", "finetune"),
                              inits=("random",)))
    assert twin["status"]["done"] == 2
    assert stable_ledger(tiny["root"] / "local") == stable_ledger(tiny["root"] / "local-twin")


def test_a_job_runs_torch_and_blas_on_its_own_thread_count(tiny, monkeypatch):
    """`--threads` holds for everything a job runs, extraction and scikit-learn's fits included:
    OpenBLAS left at OMP_NUM_THREADS made the probe's logistic regression 25x slower on 2 cores."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    seen = {"extract": set(), "fit": set()}
    real_extract, real_fit = protocols_mod.extract_features, protocols_mod.fit_linear_probe

    def extract(*args, **kwargs):
        seen["extract"].add((torch_threads(), *sorted(blas_threads())))
        return real_extract(*args, **kwargs)

    def fit(*args, **kwargs):
        seen["fit"].add((torch_threads(), *sorted(blas_threads())))
        return real_fit(*args, **kwargs)

    def torch_threads() -> int:
        return __import__("torch").get_num_threads()

    monkeypatch.setattr(protocols_mod, "extract_features", extract)
    monkeypatch.setattr(protocols_mod, "fit_linear_probe", fit)
    torch = __import__("torch")
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threadpool_limits(2, user_api="blas"):  # as with OMP_NUM_THREADS=2 (main.sh)
            summary = run_sweep(spec_for(tiny, "threads", fractions=(1.0,), protocols=("linear",),
                                         inits=("random",), threads=1))
            assert blas_threads() == {2}  # the limit is the job's, not the caller's
    finally:
        torch.set_num_threads(caller_threads)
    assert summary["status"]["done"] == 1
    assert seen == {"extract": {(1, 1)}, "fit": {(1, 1)}}
