"""pretrain.trainer (the skeleton, with VGAN) on in-memory clips: resume determinism, preemption,
NaN stop, export, health, run folders derived from the config and the data."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal

import pytest
import torch
import yaml

from pretrain.export import latest_export, load_export
from pretrain.models import build_discriminator
from pretrain.schema import PretrainConfig, identity
from pretrain.trainer import NonFiniteLossError, Trainer, as_config, budget_steps, run_dir_for, run_key
from runkit import preemption
from runkit.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from videodata.clips import ArrayClips, ClipBatchSampler
from videodata.clips import to_model_input

torch.set_num_threads(1)


def tiny_cfg(tmp_path, steps=4, **trainer) -> PretrainConfig:
    cfg = PretrainConfig(experiment_name="tiny", output_root=str(tmp_path / "out"))
    cfg.model.width, cfg.model.frames, cfg.model.size = 4, 16, 16
    t = cfg.trainer
    t.steps, t.batch_size, t.log_every, t.ckpt_every, t.num_samples = steps, 4, 1, 2, 2
    t.deterministic, t.progress = True, False
    for key, value in trainer.items():
        setattr(t, key, value)
    return cfg


def clips(n=12, seed=0, fingerprint="in-memory") -> ArrayClips:
    g = torch.Generator().manual_seed(seed)
    return ArrayClips(torch.randint(0, 256, (n, 16, 16, 16, 3), generator=g, dtype=torch.uint8),
                      fingerprint=fingerprint)


IMPROVED = dict(loss="hinge", reuse_fakes=False, r1_gamma=1.0, r1_every=2, ema=True)


def _assert_same_state(a: dict, b: dict) -> None:
    a, b = a["method"], b["method"]
    for net in ("model.G", "model.D"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"
    for opt in ("optim.G", "optim.D"):
        for pid, sa in a[opt]["state"].items():
            for k, v in sa.items():
                assert torch.equal(v, b[opt]["state"][pid][k]), f"{opt} state {pid}.{k} differs"
    if "ema" in a["extra"]:
        for key in a["extra"]["ema"]:
            assert torch.equal(a["extra"]["ema"][key], b["extra"]["ema"][key]), f"ema.{key} differs"


def count_steps(trainer: Trainer) -> list[int]:
    """Record the step at which each `train_step` call of this trainer starts."""
    started, real = [], trainer.train_step

    def counted(batch):
        started.append(trainer.step)
        return real(batch)

    trainer.train_step = counted
    return started


@pytest.mark.parametrize("options", [{}, IMPROVED], ids=["paper", "improved"])
def test_resume_is_exact(tmp_path, options):
    straight = Trainer(tiny_cfg(tmp_path, 4, **options), clips(), run_dir=tmp_path / "a")
    straight.fit()
    Trainer(tiny_cfg(tmp_path, 2, **options), clips(), run_dir=tmp_path / "b").fit()
    resumed = Trainer(tiny_cfg(tmp_path, 4, **options), clips(), run_dir=tmp_path / "b")
    steps_run = count_steps(resumed)
    result = resumed.fit()
    assert result.step == 4 and resumed.step == 4
    # the second attempt trained only steps 3 and 4, from the step-2 checkpoint (a run that
    # ignored its checkpoint would retrain all four and, being deterministic, end the same)
    assert result.resumed_from == 2 and steps_run == [2, 3]
    attempts = json.loads((tmp_path / "b" / "attempts.json").read_text())
    assert [(a["start_step"], a["resumed_from"]) for a in attempts] == [(0, None), (2, 2)]
    _assert_same_state(straight.state_dict(), resumed.state_dict())
    rows = resumed_rows = [int(r["step"]) for r in _rows(tmp_path / "b")]
    assert resumed_rows == [1, 2, 3, 4], rows  # metrics truncated and continued, no repeats
    ckpt = load_checkpoint(CheckpointManager(tmp_path / "b" / "checkpoints").latest())
    assert ckpt["step"] == 4 and isinstance(ckpt["config"], dict)


def _rows(run_dir):
    import csv

    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


class _SignalAt(ArrayClips):
    """Sends SIGUSR2 to this process when item `at` is fetched (simulated preemption)."""

    def __init__(self, base: ArrayClips, at: int):
        super().__init__(base.clips)
        self.at, self.count = at, 0

    def __getitem__(self, key):
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGUSR2)
        return super().__getitem__(key)


def test_preemption_checkpoints_then_resumes_exactly(tmp_path):
    straight = Trainer(tiny_cfg(tmp_path, 4), clips(), run_dir=tmp_path / "a")
    straight.fit()
    # item 5 is fetched for step 2: the loop finishes step 2, saves, and stops
    victim = Trainer(tiny_cfg(tmp_path, 4, ckpt_every=100), _SignalAt(clips(), at=5), run_dir=tmp_path / "b")
    try:
        with pytest.raises(preemption.Preempted):
            victim.fit()
    finally:
        preemption.uninstall()
    assert CheckpointManager(tmp_path / "b" / "checkpoints").all_steps() == [2]
    assert not (tmp_path / "b" / "discriminator.pt").exists()
    resumed = Trainer(tiny_cfg(tmp_path, 4), clips(), run_dir=tmp_path / "b")
    steps_run = count_steps(resumed)
    assert resumed.fit().resumed_from == 2 and steps_run == [2, 3]
    _assert_same_state(straight.state_dict(), resumed.state_dict())


def poison_from(trainer: Trainer, step: int) -> None:
    """Real clips become NaN from 1-based step `step` on (as a corrupt input would)."""
    real = trainer.method.train_step

    def poisoned(x, s):
        return real(x * float("nan") if s + 1 >= step else x, s)

    trainer.method.train_step = poisoned


def test_time_limit_is_a_budget_over_reruns(tmp_path, monkeypatch):
    import pretrain.trainer as trainer_module

    clock = {"now": 0.0}

    def fake_monotonic():  # every call is one training step of 30 s
        clock["now"] += 30.0
        return clock["now"]

    monkeypatch.setattr(trainer_module.time, "monotonic", fake_monotonic)
    run = tmp_path / "run"
    first = Trainer(tiny_cfg(tmp_path, 50, time_limit_min=1.0), clips(), run_dir=run).fit()
    assert first.stopped == "time_limit" and first.step == 2  # 2 steps x 30 s = the 60 s budget
    assert first.export_path is not None and first.export_path.is_file()
    exported = first.export_path.stat().st_mtime_ns

    # The same command again: the budget is spent, so nothing trains and the export is kept.
    again = Trainer(tiny_cfg(tmp_path, 50, time_limit_min=1.0), clips(), run_dir=run).fit()
    assert again.stopped == "already_finished" and again.step == first.step
    assert again.export_path.stat().st_mtime_ns == exported

    # A larger budget continues from the checkpoint.
    more = Trainer(tiny_cfg(tmp_path, 50, time_limit_min=2.0), clips(), run_dir=run).fit()
    assert more.step > first.step


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, 10, ckpt_every=2)
    trainer = Trainer(cfg, clips(), run_dir=tmp_path / "run")
    poison_from(trainer, 4)
    with pytest.raises(NonFiniteLossError, match=r"non-finite d_loss, g_loss at step 4.*ckpt_00000002"):
        trainer.fit()
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    assert manager.all_steps() == [2]
    state = manager.load_latest()
    assert all(torch.isfinite(v).all() for v in state["method"]["model.D"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "discriminator.pt").exists()


def test_export_loads_with_weights_only_and_builds_d(tmp_path):
    cfg = tiny_cfg(tmp_path, 2, ema=True)
    cfg.model.spectral_norm, cfg.model.d_norm = True, "none"
    trainer = Trainer(cfg, clips(), run_dir=tmp_path / "out" / "tiny")
    result = trainer.fit()
    path = tmp_path / "out" / "tiny" / "discriminator.pt"
    assert result.export_path == path and latest_export(tmp_path / "out") == path.resolve()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "vganbench.discriminator/1"
    assert raw["clip"] == {"frames": 16, "size": 16} and raw["step"] == 2
    assert raw["data_fingerprint"] == "in-memory" and raw["method"] == "vgan"
    assert type(raw["config"]) is dict and raw["config"]["model"]["width"] == 4
    assert raw["arch"]["spectral_norm"] is False and raw["arch"]["norm"] == "none"
    export = load_export(path)
    d = build_discriminator(export.arch)
    d.load_state_dict(raw["state_dict"])
    x = to_model_input(clips(2, seed=1).clips)
    trainer.method.D.eval()
    with torch.no_grad():
        assert torch.allclose(d.eval()(x), trainer.method.D(x), atol=1e-5)
        assert d.forward_features(x).shape == (2, 32, 1, 1, 1)
        # the backbone transfer builds from the export computes D's features, without D's head
        backbone = export.backbone().eval()
        assert not hasattr(backbone, "classifier")
        assert torch.allclose(backbone.forward_features(x), trainer.method.D.forward_features(x), atol=1e-5)
    run = tmp_path / "out" / "tiny"
    for name in ("samples/samples_final.gif", "samples/samples_final.mp4", "losses.png", "metrics.csv",
                 "config.yaml"):
        assert (run / name).stat().st_size > 0, name
    # Running again is a no-op that keeps the export.
    again = Trainer(cfg, clips(), run_dir=run).fit()
    assert again.stopped == "already_finished" and again.step == 2


def test_a_named_run_folder_refuses_another_config_or_other_data(tmp_path):
    Trainer(tiny_cfg(tmp_path, 2), clips(), run_dir=tmp_path / "run").fit()
    cfg = tiny_cfg(tmp_path, 4)
    cfg.model.width = 8
    with pytest.raises(CheckpointError, match=r"another config or other data \(config.model.width: 4 -> 8"):
        Trainer(cfg, clips(), run_dir=tmp_path / "run").fit()
    with pytest.raises(CheckpointError, match=r"data: 'in-memory' -> 'other clips'"):
        Trainer(tiny_cfg(tmp_path, 4), clips(fingerprint="other clips"), run_dir=tmp_path / "run").fit()
    with pytest.raises(CheckpointError, match="already trained for 2 steps, more than trainer.steps=1"):
        Trainer(tiny_cfg(tmp_path, 1), clips(), run_dir=tmp_path / "run").fit()


def test_auto_run_folders_follow_the_config_and_the_data(tmp_path):
    """run_name=auto: a data or model change gets its own folder, never the old export;
    operational settings (steps, logging, threads) do not."""
    base = Trainer(tiny_cfg(tmp_path, 2), clips()).fit()
    assert base.run_dir.parent == tmp_path / "out" and base.run_dir.name.startswith("tiny-vgan-")
    again = Trainer(tiny_cfg(tmp_path, 2, log_every=2, threads=1), clips()).fit()
    assert again.run_dir == base.run_dir and again.stopped == "already_finished"
    longer = Trainer(tiny_cfg(tmp_path, 3), clips()).fit()  # more steps continue the same run
    assert longer.run_dir == base.run_dir and longer.resumed_from == 2 and longer.step == 3
    other_data = Trainer(tiny_cfg(tmp_path, 2), clips(fingerprint="other clips")).fit()
    assert other_data.run_dir != base.run_dir and other_data.resumed_from is None
    cfg = tiny_cfg(tmp_path, 2)
    cfg.model.width = 8
    wider = Trainer(cfg, clips()).fit()
    assert len({base.run_dir, other_data.run_dir, wider.run_dir}) == 3
    assert load_export(wider.export_path).arch["width"] == 8


def test_budget_steps_counts_epochs_as_main_lua_does():
    """main.lua's epoch is `for i = 1, N, batchSize`: ceil(N / B) iterations, a last short-list
    batch included; trainer.epochs=E is E of them (not ceil(E * N / B) once)."""
    t = PretrainConfig().trainer
    for n, b, epochs in ((12, 4, 3), (10, 4, 2), (1, 64, 100), (6400, 64, 100), (6401, 64, 100)):
        t.batch_size, t.epochs = b, epochs
        assert budget_steps(t, n) == epochs * len(range(1, n + 1, b))
    t.epochs, t.steps = 0, 123
    assert budget_steps(t, 10) == 123  # epochs off: trainer.steps is the budget


def test_an_epoch_budget_trains_and_records_its_steps(tmp_path, caplog):
    """trainer.epochs=2 over 10 clips at batch 4: 2 x ceil(10 / 4) = 6 steps (ceil(2 x 10 / 4) would
    be 5), logged at start-up and recorded as trainer.steps wherever the run keeps its config; more
    epochs continue the run (the budget is not part of its identity)."""
    run = tmp_path / "run"
    trainer = Trainer(tiny_cfg(tmp_path, 1, epochs=2, ckpt_every=100), clips(10), run_dir=run)
    with caplog.at_level(logging.INFO, logger="pretrain.trainer"):
        result = trainer.fit()
    assert result.step == 6 and result.stopped == "finished"
    assert "budget: 6 steps (trainer.epochs=2 x ceil(10 clips / batch 4), as main.lua's epochs)" in [
        r.getMessage() for r in caplog.records]
    saved = load_checkpoint(CheckpointManager(run / "checkpoints").latest())
    for config in (saved["config"], load_export(result.export_path).config,
                   yaml.safe_load((run / "config.yaml").read_text())):
        assert (config["trainer"]["steps"], config["trainer"]["epochs"]) == (6, 2)
    assert json.loads((run / "attempts.json").read_text())[-1]["steps"] == 6
    more = Trainer(tiny_cfg(tmp_path, 1, epochs=3, ckpt_every=100), clips(10), run_dir=run).fit()
    assert (more.resumed_from, more.step) == (6, 9)
    with pytest.raises(CheckpointError, match=r"already trained for 9 steps, more than 6 steps \(trainer.epochs=2"):
        Trainer(tiny_cfg(tmp_path, 1, epochs=2), clips(10), run_dir=run).fit()


def test_collapsed_mask_warns(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path, 3, collapse_window=3)
    cfg.optim.lr_g = 0.0
    trainer = Trainer(cfg, clips(), run_dir=tmp_path / "run")
    with torch.no_grad():
        trainer.method.G.mask[0].bias.fill_(-30.0)  # sigmoid ~ 0: background only
    with caplog.at_level(logging.WARNING, logger="pretrain.trainer"):
        trainer.fit()
    assert any("mask collapsed" in r.getMessage() and "background" in r.getMessage() for r in caplog.records)


def test_batch_sampler_partitions_global_batches_and_resumes():
    one = iter(ClipBatchSampler(10, 4, seed=3))
    two = [iter(ClipBatchSampler(10, 4, rank=r, world_size=2, seed=3)) for r in range(2)]
    seen = []
    for _ in range(5):  # crosses epoch boundaries
        global_batch = next(one)
        assert sorted(next(two[0]) + next(two[1])) == sorted(global_batch)
        seen += global_batch
    # epoch after epoch, every item exactly once per epoch
    assert sorted(i for i, e in seen if e == 0) == list(range(10)) and sorted(i for i, e in seen if e == 1) == list(range(10))
    late = iter(ClipBatchSampler(10, 4, seed=3, start_step=3))
    ref = iter(ClipBatchSampler(10, 4, seed=3))
    for _ in range(3):
        next(ref)
    assert next(late) == next(ref)
    assert list(ClipBatchSampler(10, 4, seed=3, start_step=1, steps=3)) == [ClipBatchSampler(10, 4, seed=3).global_batch(s) for s in (1, 2)]


# ------------------------------------------------------------------ the resume path, piece by piece

def test_a_finished_run_without_its_export_exports_again(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_cfg(tmp_path, 4, keep=1), clips(), run_dir=run).fit()
    assert CheckpointManager(run / "checkpoints").all_steps() == [4]  # trainer.keep=1: the newest only
    (run / "discriminator.pt").unlink()
    again = Trainer(tiny_cfg(tmp_path, 4, keep=1), clips(), run_dir=run).fit()
    assert (again.stopped, again.step, again.resumed_from) == ("already_finished", 4, 4)
    assert again.export_path == run / "discriminator.pt" and load_export(again.export_path).step == 4
    attempts = json.loads((run / "attempts.json").read_text())
    assert len(attempts) == 1  # a finished run's rerun trains nothing and records no attempt


def test_checkpoint_contents_and_a_resume_mid_logging_window(tmp_path, caplog):
    run = tmp_path / "run"
    Trainer(tiny_cfg(tmp_path, 4, log_every=3), clips(fingerprint="fp-1"), run_dir=run).fit()
    straight = [{k: v for k, v in row.items() if k != "clips_per_s"} for row in _rows(run)]
    assert [int(r["step"]) for r in straight] == [3, 4]
    manager = CheckpointManager(run / "checkpoints")
    state = load_checkpoint(manager.path_for(2))
    cfg = as_config(tiny_cfg(tmp_path, 4, log_every=3))
    assert state["format"] == "vganbench.pretrain_checkpoint/2" and state["step"] == 2
    assert state["data_fingerprint"] == "fp-1" and state["run_key"] == run_key(cfg, "fp-1")[0]
    assert state["config"]["trainer"]["steps"] == 4 and state["train_seconds"] > 0
    # steps 1 and 2 are in the open logging window (the first row is logged at step 3)
    assert state["window"]["count"] == 2 and {"d_loss", "g_loss"} <= set(state["window"]["sums"])
    # stopped after step 2's checkpoint: the resumed run logs the same rows as the straight one
    manager.path_for(4).unlink()
    (run / "discriminator.pt").unlink()
    resumed = Trainer(tiny_cfg(tmp_path, 4, log_every=3), clips(fingerprint="fp-1"), run_dir=run)
    with caplog.at_level(logging.INFO, logger="pretrain.trainer"):
        assert resumed.fit().resumed_from == 2
    assert f"resumed from {manager.path_for(2)} at step 2" in [r.getMessage() for r in caplog.records]
    assert [{k: v for k, v in row.items() if k != "clips_per_s"} for row in _rows(run)] == straight
    fresh = Trainer(tiny_cfg(tmp_path, 4, log_every=3), clips(fingerprint="fp-1"), run_dir=tmp_path / "other")
    fresh.load_state_dict(state)
    assert fresh.step == 2 and fresh.train_seconds == state["train_seconds"]
    assert fresh.window.state_dict() == state["window"]
    fresh.load_state_dict({k: v for k, v in state.items() if k != "train_seconds"})  # before the budget existed
    assert fresh.train_seconds == 0.0


def test_load_state_dict_refusals_name_what_differs(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path, 4), clips(), run_dir=tmp_path / "run")
    state = trainer.state_dict()
    with pytest.raises(CheckpointError, match=r"^\S*run: not a pretraining checkpoint of this version "
                                              r"\(format 'old/1', expected 'vganbench.pretrain_checkpoint/2'\)"):
        trainer.load_state_dict({**state, "format": "old/1"})
    saved = json.loads(json.dumps(state["run_key"]))
    model, now = saved["config"]["model"], state["run_key"]["config"]["model"]
    names = sorted(model)[:7]
    for name in names[:6]:
        model[name] = "was"
    changes = [f"config.model.{name}: 'was' -> {now[name]!r}" for name in names]
    head, tail = (f"run folder {tmp_path / 'run'} holds a run of another config or other data (",
                  "); use another run_name, or run_name=auto to name runs by their config")
    with pytest.raises(CheckpointError) as six:
        trainer.load_state_dict({**state, "run_key": saved})
    assert str(six.value) == head + "; ".join(changes[:6]) + tail
    model[names[6]] = "was"  # a seventh difference: six are named, then " ..."
    with pytest.raises(CheckpointError) as seven:
        trainer.load_state_dict({**state, "run_key": saved})
    assert str(seven.value) == head + "; ".join(changes[:6]) + " ..." + tail
    with pytest.raises(CheckpointError, match=r"already trained for 5 steps, more than trainer.steps=4"):
        trainer.load_state_dict({**state, "step": 5})
    trainer.load_state_dict({**state, "step": 4})  # exactly the steps asked for: finished, not refused
    assert trainer.step == 4


def test_run_key_and_run_dir_for(tmp_path):
    cfg = as_config(tiny_cfg(tmp_path))
    key, digest = run_key(cfg, "fp")
    assert key == {"config": identity(cfg), "data": "fp"}
    assert digest == hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    assert list(identity(cfg)) != sorted(identity(cfg))  # so the sorting above is what makes the hash
    assert run_key(cfg, "other")[1] != digest
    assert run_dir_for(cfg, "fp") == tmp_path / "out" / f"tiny-vgan-{digest}"
    cfg.run_name = "mine"
    assert run_dir_for(cfg, "fp") == tmp_path / "out" / "mine"
