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
from pretrain.config import compose
from pretrain.methods.base import take_frames, valid_frames
from pretrain.methods import contrastive
from pretrain.methods.contrastive import cvrl_starts, info_nce
from pretrain.methods.speed import magnitude_ratio, resample, span, stride_ratio
from pretrain.schema import ConfigError, PretrainConfig
from test_pretrain_mae import tiny_mae
from test_pretrain_trainer import clips, tiny_cfg
from pretrain.trainer import Trainer
from runkit import preemption
from runkit.checkpoint import CheckpointManager
from transfer.classifier import build_backbone
from videodata.clips import ArrayClips
from videodata.clips import to_model_input

torch.set_num_threads(1)

# (views, frames per item): contrastive and speed cut their clips from one whole-video window
VIEWS = {"vgan": (1, 16), "contrastive": (1, 32), "speed": (1, 32), "mae": (1, 16)}


def cfg_for(tmp_path, method: str, steps: int, **trainer) -> PretrainConfig:
    cfg = tiny_cfg(tmp_path, steps, **trainer)
    cfg.experiment_name, cfg.method.name, cfg.method.speed.speeds = "m", method, (1, 2)
    return tiny_mae(cfg) if method == "mae" else cfg


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


def _counting_windows(lengths, frames: int = 40) -> torch.Tensor:
    """Float windows (B, 3, frames, 2, 2) whose frame t holds t / 100, padded as the cache pads a
    short video (its last real frame repeated)."""
    t = torch.arange(frames, dtype=torch.float32)
    rows = [torch.minimum(t, torch.tensor(float(n - 1))) / 100 for n in lengths]
    return torch.stack(rows)[:, None, :, None, None].expand(-1, 3, -1, 2, 2).contiguous()


def test_valid_frames_finds_the_padding():
    windows = _counting_windows([40, 31, 16, 1])
    assert valid_frames(windows).tolist() == [40, 31, 16, 1]
    still = torch.rand(2, 3, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    still[:, :, 5] = still[:, :, 4]
    still[0, :, 3] = still[0, :, 4].flip(-1)  # the same pixel sum as the last frame, another frame
    assert valid_frames(still).tolist() == [5, 5]
    idx = torch.tensor([[0, 5, 39]])
    assert (take_frames(windows[:1], idx)[0, 0, :, 0, 0] * 100).round().tolist() == [0, 5, 39]


def test_cvrl_interval_sampling():
    """CVRL's sample_ssl_sequence: both clips inside the video, the gap's density falling linearly
    over the M = 17 fitting starts, either clip first; a short video wraps."""
    n, frames = 20000, 16
    u = torch.rand(n, 3, generator=torch.Generator().manual_seed(0))
    starts = cvrl_starts(torch.full((n,), 32), frames, u)
    assert starts.min() >= 0 and starts.max() <= 32 - frames
    gap = (starts[:, 1] - starts[:, 0]).abs().double()
    # density 2 (1 - d / M) / M, floored: P(gap >= k) = (1 - k / M)^2, so E gap = sum_k (k / M)^2
    assert abs(gap.mean().item() - sum((k / 17) ** 2 for k in range(1, 17))) < 0.15
    counts = torch.bincount(gap.long(), minlength=17).double()
    assert len(counts) == 17 and counts[16] > 0  # gaps 0 .. 16: from both clips at 0 to one at each end
    quarters = [part.mean() for part in counts.split(4)]
    assert all(a > b for a, b in zip(quarters, quarters[1:]))  # falling
    first, second = starts.unbind(1)
    assert abs((first > second).double().mean() - (first < second).double().mean()) < 0.02  # order shuffled
    short = cvrl_starts(torch.full((n,), 10), frames, u)  # 10 frames < 15: independent starts, wrapped
    assert short.min() >= 0 and short.max() <= 9 and len(short.unique()) == 10


def test_contrastive_views_are_cvrl_pairs_through_one_batchnorm_batch(tmp_path, monkeypatch):
    """Both views of a pair go through the backbone together (one forward of 2B clips, so BatchNorm
    statistics cover both), then CVRL's head (3 x Linear-BN-ReLU, Linear)."""
    cfg = cfg_for(tmp_path, "contrastive", 1)
    cfg.method.contrastive.hidden_dim, cfg.method.contrastive.hidden_layers = 8, 3
    trainer = Trainer(cfg, clips_for("contrastive"))
    m = trainer.method
    assert m.data_view().frames == cfg.data.max_frames and m.data_view().views == 1
    linears = [layer for layer in m.head.net if isinstance(layer, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(32, 8), (8, 8), (8, 8), (8, 128)]
    shapes, draws = [], []
    forward = m.forward
    m.forward = lambda x: (shapes.append(tuple(x.shape)), forward(x))[1]
    real = contrastive.cvrl_params
    monkeypatch.setattr(contrastive, "cvrl_params",
                        lambda b, gen, view, flip: (draws.append((b, view, flip)), real(b, gen, view, flip))[1])
    metrics = m.train_step(to_model_input(torch.randint(0, 256, (4, 32, 16, 16, 3), dtype=torch.uint8)), 0)
    assert shapes == [(8, 3, 16, 16, 16)] and torch.isfinite(metrics["loss"])
    assert draws == [(4, 0, True), (4, 1, True)]  # CVRL's two views (blur 1.0 / 0.1, solarise 0 / 0.2), flipping


def test_speed_clips_never_reach_a_padded_frame_and_start_anywhere(tmp_path):
    cfg = cfg_for(tmp_path, "speed", 1)
    cfg.method.speed.min_crop = 1.0  # no zoom: the frames' values are their indices
    m = Trainer(cfg, clips_for("speed")).method
    lengths = [40, 31, 35, 20]  # a stride-2 clip of 16 frames spans 31: the last video is too short
    starts = {1: set(), 2: set()}
    for _ in range(60):
        clips, labels, kept = m.clips(_counting_windows(lengths))
        index = (clips[:, 0, :, 0, 0] * 100).round().long()
        strides = m.speeds[labels]
        assert kept.tolist() == [True, True, True, False]
        for b in range(3):  # kept videos: consecutive real frames at the clip's stride, none repeated
            assert index[b].max() < lengths[b]
            assert (index[b].diff() == strides[b]).all()
            starts[int(strides[b])].add(int(index[b, 0]))
        assert (index[3] < lengths[3]).all()  # the short one wraps instead (and is left out of the loss)
    assert len(starts[1]) > 5 and len(starts[2]) > 1  # not always frame 0
    assert max(starts[2]) <= 40 - span(16, 2)


def test_speed_demo_strides_are_not_told_apart_by_motion_magnitude(tmp_path, caplog):
    """The check (pretrain/methods/speed.py): per-frame motion at one stride spreads by the object
    speeds' ratio over the zoom's min_crop; it must reach the largest ratio of neighbouring strides,
    or each stride's magnitudes overlap no other's. The synthetic set alone (1.71 < 2) does not."""
    for preset in ("speed_cpu_demo", "speed_paper"):
        cfg = compose([f"experiment={preset}"])
        speeds, speed_range = list(cfg.method.speed.speeds), cfg.data.synthetic.speed_range
        assert magnitude_ratio(speed_range, cfg.method.speed.min_crop) >= stride_ratio(speeds), preset
        assert magnitude_ratio(speed_range, 1.0) < stride_ratio(speeds) == 2
        assert cfg.data.synthetic.frames >= span(cfg.model.frames, max(speeds))  # no video too short
    cfg = cfg_for(tmp_path, "speed", 1)
    cfg.method.speed.speeds, cfg.method.speed.min_crop = (1, 4), 1.0
    with caplog.at_level("WARNING", logger="pretrain.methods.speed"):
        Trainer(cfg, clips_for("speed"))
    assert "a clip of model.frames=16 at stride 4 spans 61 frames, the synthetic videos have 32" in caplog.text
    assert "motion magnitude alone tells the strides apart" in caplog.text  # 1.71 < 4


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
    assert export.method == method and export.arch.get("width", 4) == 4  # the ViT (mae) has no width
    backbone = build_backbone(export, "pretrained").eval()
    trained = result.export_path  # the export's weights are the backbone's
    weights = torch.load(trained, weights_only=True)["state_dict"]
    assert all(torch.equal(backbone.state_dict()[k], weights[k]) for k in backbone.state_dict())
    with torch.no_grad():
        want = (2, 16, 8, 4, 4) if method == "mae" else (2, 16, 2, 2, 2)  # the ViT: its tokens on their grid
        assert backbone.forward_features(torch.zeros(2, 3, 16, 16, 16), "block3").shape == want
    assert (result.run_dir / "losses.png").stat().st_size > 0


def test_unknown_method_lists_the_choices(tmp_path):
    cfg = cfg_for(tmp_path, "vgan", 2)
    cfg.method.name = "byol"
    with pytest.raises(ConfigError, match=r"method.name='byol' is not one of \['vgan', 'contrastive', 'speed', 'mae'\]"):
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
