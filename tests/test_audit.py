"""Leakage audit: a pretraining pool against the target's test videos, by path, content and group."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from _tiny import TINY_SET, tiny_sweep_spec
from pretrain.schema import PretrainConfig
from pretrain.trainer import Trainer
from transfer.sweeps import plan_sweep, run_sweep
from videodata.audit import LeakageError, audit_pool
from videodata.folder import list_videos
from videodata.labeled import labeled_set
from videodata.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    generate(SyntheticConfig(root=str(root / "data"), progress=False, **TINY_SET))
    return root, labeled_set("ucf101", root / "data")


def pool_of(folder, *sources):
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in sources:
        shutil.copyfile(source, folder / name)
    return list_videos(folder)


def test_path_content_and_group_overlaps_are_found(target, tmp_path):
    root, data = target
    test1, train1 = data.split(1, "test"), data.split(1, "train")
    copy = pool_of(tmp_path / "pool", ("renamed.avi", test1[0].path),          # same bytes, other name
                   ("v_MoveLeft_g02_c09.avi", train1[0].path),                   # a split-1 test group's name
                   ("clean.avi", train1[1].path))
    pool = [*copy, replace(test1[1], label=-1)]                                 # the test file itself
    result = audit_pool(pool, {1: test1}, target="synthetic", ucf_groups=True)
    kinds = sorted((leak["kind"], leak["pool"].rsplit("/", 1)[-1]) for leak in result.leaks)
    assert kinds == [("content", "renamed.avi"), ("group", "v_MoveLeft_g02_c09.avi"),
                     ("path", test1[1].path.rsplit("/", 1)[-1])]
    assert not result.clean and "3 overlap(s)" in result.summary()
    clean = audit_pool([r for r in copy if r.path.endswith("clean.avi")], {1: test1}, target="synthetic", ucf_groups=True)
    assert clean.clean and clean.summary().startswith("no overlap")
    # a split-1 training video is a test video of another split: caught when that split is audited
    assert not audit_pool(train1[:1], {1: test1, 2: data.split(2, "test")}, target="s", ucf_groups=True).clean


def _pretrain_cfg(root, pool_dir, on_leak="error") -> PretrainConfig:
    # outputs beside the pool (one folder per test): pytest-randomly runs these tests in any order
    cfg = PretrainConfig(experiment_name="audit", output_root=str(pool_dir.parent / "pretrain"))
    cfg.data.source, cfg.data.root = "folder", str(pool_dir)
    cfg.data.cache_root, cfg.data.decode_workers, cfg.data.max_frames = str(root / "cache"), 1, 16
    cfg.data.audit.target, cfg.data.audit.root, cfg.data.audit.on_leak = "synthetic", str(root / "data"), on_leak
    cfg.data.audit.splits = (1,)  # the pool's b.avi is a split-1 training video: split 2 would flag it too
    cfg.data.synthetic = SyntheticConfig(root=str(root / "data"), progress=False, **TINY_SET)
    cfg.model.width, cfg.model.frames, cfg.model.size = 4, 16, 16
    t = cfg.trainer
    t.steps, t.batch_size, t.num_samples, t.progress, t.device = 1, 2, 2, False, "cpu"
    return cfg


def test_pretraining_stops_before_training_on_a_leaky_pool(target, tmp_path):
    root, data = target
    test = data.split(1, "test")
    pool = tmp_path / "pool"
    pool_of(pool, ("a.avi", test[0].path), ("b.avi", data.split(1, "train")[0].path))
    torch.set_num_threads(1)
    with pytest.raises(LeakageError, match=r"pretraining data: the pretraining pool overlaps the test videos: 1 overlap\(s\) \(content 1\)"):
        Trainer(_pretrain_cfg(root, pool)).fit()
    assert not (tmp_path / "pretrain").exists()  # nothing trained, nothing written
    result = Trainer(_pretrain_cfg(root, pool, on_leak="warn")).fit()  # opted in: trains, and says so
    audit = json.loads((result.run_dir / "audit.json").read_text())
    assert audit["clean"] is False and audit["leaks"][0]["kind"] == "content"


def test_a_sweep_audits_the_checkpoints_pool_and_reports_it(target, tmp_path):
    root, data = target
    pool = tmp_path / "pool"
    pool_of(pool, ("copy.avi", data.split(1, "test")[0].path), ("b.avi", data.split(1, "train")[0].path))
    torch.set_num_threads(1)
    export = Trainer(_pretrain_cfg(root, pool, on_leak="warn")).fit().export_path
    spec = tiny_sweep_spec(root, export, "leaky", fractions=(1.0,), seeds=(0,), protocols=("linear",),
                           inits=("pretrained",))
    with pytest.raises(LeakageError, match=r"checkpoint .*discriminator.pt: the pretraining pool overlaps the test videos"):
        plan_sweep(spec)
    summary = run_sweep(replace(spec, on_leak="warn"))
    page = (tmp_path / ".." / summary["out_dir"]).resolve() / "report.md"
    text = page.read_text()
    assert "## Leakage audit" in text and "**OVERLAP**" in text and "copy.avi" in text
    assert "Before pretraining (`data.audit`)" in text
