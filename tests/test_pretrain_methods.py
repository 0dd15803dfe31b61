"""Every pretraining method on the one trainer skeleton: losses on hand-made inputs, exact resume
after a kill, an export that transfer loads (weights_only), and clear errors for unknown names."""
from __future__ import annotations

import copy
import signal

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pretrain import losses
from pretrain.export import load_export
from pretrain.methods import METHODS
from pretrain.methods.contrastive import info_nce
from pretrain.methods.speed import resample
from pretrain.schema import ConfigError, PretrainConfig
from test_pretrain_trainer import clips, tiny_cfg
from pretrain.trainer import Trainer
from runkit import preemption
from runkit.checkpoint import CheckpointManager
from transfer.classifier import build_backbone
from videodata.clips import ArrayClips
from videodata.decode import to_model_input

torch.set_num_threads(1)

VIEWS = {"vgan": (1, 16), "contrastive": (2, 16), "speed": (1, 32)}  # (views, frames per item)


def cfg_for(tmp_path, method: str, steps: int, **trainer) -> PretrainConfig:
    cfg = tiny_cfg(tmp_path, steps, **trainer)
    cfg.experiment_name, cfg.method.name, cfg.method.speed.speeds = "m", method, (1, 2)
    return cfg


def clips_for(method: str, n: int = 12) -> ArrayClips:
    views, frames = VIEWS[method]
    shape = (n, views, frames, 16, 16, 3) if views > 1 else (n, frames, 16, 16, 3)
    return ArrayClips(torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))


# ------------------------------------------------------------------------------ losses by hand

def test_info_nce_equals_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    loss, accuracy = info_nce(z1, z2, temperature=0.5)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    total, hits = 0.0, 0
    for i in range(10):
        positive = (i + 5) % 10
        others = [j for j in range(10) if j != i]
        scores = {j: float(z[i] @ z[j]) / 0.5 for j in others}
        total += -(scores[positive] - np.log(sum(np.exp(v) for v in scores.values())))
        hits += max(scores, key=scores.get) == positive
    assert float(loss) == pytest.approx(total / 10, rel=1e-5)
    assert float(accuracy) == pytest.approx(hits / 10)
    # identical views, far apart from the others: the positive is always found, the loss is small
    anchors = torch.eye(5, 7) * 10
    perfect, acc = info_nce(anchors, anchors, temperature=0.1)
    assert float(acc) == 1.0 and float(perfect) < 1e-3


def test_speed_resampling_takes_every_s_th_frame():
    window = torch.arange(12, dtype=torch.float32).view(1, 1, 12, 1, 1).expand(3, 2, 12, 2, 2).contiguous()
    clips = resample(window, torch.tensor([1, 2, 3]), frames=4)
    assert clips.shape == (3, 2, 4, 2, 2)
    assert clips[:, 0, :, 0, 0].tolist() == [[0, 1, 2, 3], [0, 2, 4, 6], [0, 3, 6, 9]]


# ------------------------------------------------------------------------------ one skeleton

def _state(trainer: Trainer) -> dict:
    return {k: v.detach().clone() for name, m in trainer.method.modules().items() for k, v in
            ((f"{name}.{key}", value) for key, value in m.state_dict().items())}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_resumes_exactly_after_a_preemption(tmp_path, method):
    straight = Trainer(cfg_for(tmp_path, method, 4), clips_for(method), run_dir=tmp_path / "a")
    straight.fit()
    victim = Trainer(cfg_for(tmp_path, method, 4, ckpt_every=100), clips_for(method), run_dir=tmp_path / "b")
    real, calls = preemption.requested, {"n": 0}

    def requested():  # the preemption signal arrives during step 2
        calls["n"] += 1
        if calls["n"] == 2:
            preemption._state["requested"] = (signal.SIGUSR2, None)
        return preemption._state["requested"] is not None

    preemption.requested = requested
    try:
        with pytest.raises(preemption.Preempted):
            victim.fit()
    finally:
        preemption.requested = real
        preemption.uninstall()
    assert CheckpointManager(tmp_path / "b" / "checkpoints").all_steps() == [2]
    resumed = Trainer(cfg_for(tmp_path, method, 4), clips_for(method), run_dir=tmp_path / "b")
    result = resumed.fit()
    assert result.resumed_from == 2 and result.step == 4
    want, got = _state(straight), _state(resumed)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), f"{method}: {key} differs after the resume"
    # the metrics log of the resumed run equals the uninterrupted one (throughput aside)
    import csv

    rows = [[{k: v for k, v in r.items() if k != "clips_per_s"} for r in csv.DictReader(open(run / "metrics.csv"))]
            for run in (tmp_path / "a", tmp_path / "b")]
    assert rows[0] == rows[1] and [int(r["step"]) for r in rows[0]] == [1, 2, 3, 4]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_export_loads_in_transfer(tmp_path, method):
    result = Trainer(cfg_for(tmp_path, method, 2), clips_for(method)).fit()
    assert result.run_dir.name.startswith(f"m-{method}-")
    export = load_export(result.export_path)  # weights_only=True inside
    assert export.method == method and export.arch["width"] == 4
    backbone = build_backbone(export, "pretrained").eval()
    trained = result.export_path  # the export's weights are the backbone's
    weights = torch.load(trained, weights_only=True)["state_dict"]
    assert all(torch.equal(backbone.state_dict()[k], weights[k]) for k in backbone.state_dict())
    with torch.no_grad():
        assert backbone.forward_features(torch.zeros(2, 3, 16, 16, 16), "block3").shape == (2, 16, 2, 2, 2)
    assert (result.run_dir / "losses.png").stat().st_size > 0


def test_unknown_method_lists_the_choices(tmp_path):
    cfg = cfg_for(tmp_path, "vgan", 2)
    cfg.method.name = "byol"
    with pytest.raises(ConfigError, match=r"method.name='byol' is not one of \['vgan', 'contrastive', 'speed'\]"):
        Trainer(cfg, clips_for("vgan"))


@pytest.mark.parametrize("options", [{}, {"reuse_fakes": False, "r1_gamma": 1.0, "r1_every": 1}],
                         ids=["paper", "fresh-fakes-r1"])
def test_d_batchnorm_statistics_move_twice_per_iteration(tmp_path, options):
    """As in the original (main.lua): once on the real batch, once on the fake one; the G step's D
    forward normalises with batch statistics but leaves the running ones alone (a third update
    would lower real data's share in the statistics a frozen-feature probe uses)."""
    trainer = Trainer(tiny_cfg(tmp_path, **options), dataset=clips())
    norms = [m for m in trainer.method.D.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms
    batch = torch.randint(0, 256, (4, 16, 16, 16, 3), dtype=torch.uint8)
    for step in (1, 2, 3):
        before = [m.running_mean.clone() for m in norms]
        trainer.train_step(batch)
        assert all(int(m.num_batches_tracked) == 2 * step for m in norms)
        assert all(not torch.equal(b, m.running_mean) for b, m in zip(before, norms))  # they did move
        assert all(m.track_running_stats for m in norms)  # restored after the G step


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def test_g_from_stored_logits_equals_a_hand_computation(tmp_path):
    """trainer.g_from_stored_logits (main.lua's fGx): G's gradient is the G loss (adversarial +
    mask sparsity) of D's logits for the fakes from the D step, backpropagated through D as it was
    before its update; D's gradient is its own loss's alone. The default path (a fresh forward on
    the updated D) gives another G gradient."""
    real = to_model_input(torch.randint(0, 256, (4, 16, 16, 16, 3), dtype=torch.uint8,
                                        generator=torch.Generator().manual_seed(1)))
    got = {}
    for stored in (True, False):  # both trainers start from the same seed: the same networks and noise
        trainer = Trainer(tiny_cfg(tmp_path, g_from_stored_logits=stored), dataset=clips())
        m = trainer.method
        G, D = copy.deepcopy(m.G), copy.deepcopy(m.D)  # the networks before the step
        rng = torch.get_rng_state()
        m.train_step(real, 0)
        # optimisers leave .grad as the backward left it: the gradients the step used
        got[stored] = (_flat(p.grad for p in m.G.parameters()), _flat(p.grad for p in m.D.parameters()))
        torch.set_rng_state(rng)
        z = torch.randn(4, trainer.cfg.model.z_dim)  # the step's noise
    out = G.forward_all(z)
    logits_real, logits_fake = D(real), D(out.video)
    g_loss = losses.g_loss(logits_fake, "softmax") + losses.mask_sparsity(out.mask, 0.1)
    want_g = _flat(torch.autograd.grad(g_loss, list(G.parameters()), retain_graph=True))
    d_loss = losses.d_loss_real(logits_real, "softmax") + losses.d_loss_fake(logits_fake, "softmax")
    want_d = _flat(torch.autograd.grad(d_loss, list(D.parameters())))

    def rel(a, b):
        return float((a - b).norm() / b.norm())
    assert want_g.norm() > 0 and want_d.norm() > 0
    assert rel(got[True][0], want_g) < 1e-5 and rel(got[True][1], want_d) < 1e-5
    assert rel(got[False][1], want_d) < 1e-5  # the D step is the same either way
    assert rel(got[False][0], want_g) > 1e-2  # the fresh forward sees the updated D


@pytest.mark.parametrize("options", [{"r1_gamma": 1.0, "r1_every": 1, "ema": True},
                                     {"loss": "hinge", "mask_lambda": 0.0}], ids=["r1-ema", "hinge"])
def test_g_from_stored_logits_trains_with_its_options(tmp_path, options):
    """R1, EMA and the other losses run with the stored logits: two D forwards (real, fake) and no
    third, so D's BatchNorm statistics still move twice per iteration."""
    trainer = Trainer(tiny_cfg(tmp_path, g_from_stored_logits=True, **options), dataset=clips())
    norms = [m for m in trainer.method.D.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    calls = {"n": 0}
    forward = trainer.method.d_forward

    def counted(x):
        calls["n"] += 1
        return forward(x)
    trainer.method.d_forward = counted
    before = {k: v.clone() for k, v in trainer.method.G.state_dict().items()}
    metrics = trainer.train_step(torch.randint(0, 256, (4, 16, 16, 16, 3), dtype=torch.uint8))
    assert calls["n"] == 2 and all(int(m.num_batches_tracked) == 2 for m in norms)
    assert all(torch.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(before[k], v) for k, v in trainer.method.G.state_dict().items())  # G stepped
    if options.get("r1_gamma"):
        assert float(metrics["r1"]) > 0


def test_g_from_stored_logits_needs_the_reused_fakes(tmp_path):
    with pytest.raises(ConfigError, match=r"^config trainer.g_from_stored_logits=true needs trainer.reuse_fakes=true"):
        Trainer(tiny_cfg(tmp_path, g_from_stored_logits=True, reuse_fakes=False), dataset=clips())
