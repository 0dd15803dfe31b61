"""Fine-tune loop: exact resume after an interruption (EMA off and on), head shape, evaluation
shapes, label-safe augmentation, the AdamW parameter groups."""
from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

from runkit import preemption
from runkit.checkpoint import seed_everything
from transfer.classifier import ExportError, build_classifier, load_export
from runkit.checkpoint import load_checkpoint
from transfer.finetune import FinetuneRecipe, finetune, make_optimizer, predict_clips, random_shift, random_zoom
from transfer.testing import write_tiny_export


class ArrayClips:
    """An in-memory stand-in for ClipCache: videos of moving bright squares."""

    def __init__(self, videos: int = 12, frames: int = 20, size: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.labels = np.arange(videos) % 2
        self.data = rng.integers(0, 40, (videos, frames, size, size, 3), dtype=np.uint8)
        for v in range(videos):
            for t in range(frames):
                x = (t if self.labels[v] == 0 else frames - t) % (size - 4)
                self.data[v, t, 6:10, x:x + 4] = 250

    def clip(self, i, num_frames, start="first", rng=None):
        total = self.data.shape[1]
        begin = 0 if start == "first" else int(rng.integers(0, total - num_frames + 1))
        return self.data[i, begin:begin + num_frames]

    def uniform_clips(self, i, num_clips, num_frames):
        starts = np.linspace(0, self.data.shape[1] - num_frames, num_clips).round().astype(int)
        return np.stack([self.data[i, s:s + num_frames] for s in starts])


RECIPE = FinetuneRecipe(iterations=8, batch_size=4, lr=1e-3, sampling="random", shift=2,
                        schedule="cosine", warmup=2, checkpoint_every=2, log_every=1, eval_clips=3)
# the improved recipe's options: EMA (with timm's warm-up), AdamW, label smoothing, zoom jitter
EMA_RECIPE = FinetuneRecipe(iterations=8, batch_size=4, lr=1e-3, sampling="random", shift=2, min_crop=0.7,
                            optimizer="adamw", weight_decay=0.05, label_smoothing=0.1, ema_decay=0.9,
                            ema_warmup=True, schedule="cosine", warmup=2, checkpoint_every=2, log_every=1,
                            eval_clips=3)


def _train(export, workdir, source, interrupt_at=None, monkeypatch=None, recipe=RECIPE):
    seed_everything(5)
    model = build_classifier(export, "pretrained", 2, recipe.dropout)
    if interrupt_at is not None:
        calls = {"n": 0}

        def requested():
            calls["n"] += 1
            if calls["n"] == interrupt_at:
                preemption._state["requested"] = (signal.SIGUSR2, None)
            return preemption._state["requested"] is not None

        monkeypatch.setattr(preemption, "requested", requested)
    info = finetune(model, source, range(12), source.labels, recipe, frames=16, workdir=workdir, seed=3,
                    show_progress=False)
    return model, info


@pytest.mark.parametrize("recipe", [RECIPE, EMA_RECIPE], ids=["paper-options", "ema-adamw-zoom"])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch, recipe):
    torch.set_num_threads(1)
    export = load_export(write_tiny_export(tmp_path / "d.pt"))
    source = ArrayClips()
    straight, info = _train(export, tmp_path / "straight", source, recipe=recipe)
    logged = list(__import__("csv").DictReader(open(tmp_path / "straight" / "train.csv")))
    # the returned loss is the last step's, as logged (finite, so the run did not diverge)
    assert info["steps"] == 8 and info["resumed_from"] is None
    assert np.isfinite(info["final_loss"]) and info["final_loss"] == pytest.approx(float(logged[-1]["loss"]))

    with pytest.raises(preemption.Preempted):
        _train(export, tmp_path / "cut", source, interrupt_at=6, monkeypatch=monkeypatch, recipe=recipe)
    monkeypatch.undo()
    assert (tmp_path / "cut" / "ckpt" / "ckpt_00000005.pt").is_file()
    resumed, info2 = _train(export, tmp_path / "cut", source, recipe=recipe)
    assert info2["resumed_from"] == 5 and info2["final_loss"] == info["final_loss"]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    steps = [int(r["step"]) for r in __import__("csv").DictReader(open(tmp_path / "cut" / "train.csv"))]
    assert steps == list(range(1, 9))

    # with EMA on, the model ends with the EMA weights (not the last step's); the checkpoint has both
    final = load_checkpoint(tmp_path / "straight" / "ckpt" / "ckpt_00000008.pt")
    assert ("ema" in final) == (recipe.ema_decay > 0)
    trained = final["model"]
    differs = [k for k, v in resumed.state_dict().items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    if recipe.ema_decay > 0:
        assert differs, "the evaluated weights should be the EMA, not the last step's"
        for key, value in resumed.state_dict().items():
            assert torch.equal(value, final["ema"][f"module.{key}"]), key
    else:
        assert not differs

    logits = predict_clips(resumed, source, [0, 1, 2], frames=16, num_clips=3, batch_size=4)
    assert logits.shape == (3, 3, 2) and np.isfinite(logits).all()


def test_classifier_head_covers_the_penultimate_map(tmp_path):
    export = load_export(write_tiny_export(tmp_path / "d.pt", width=2, frames=32, size=32))
    model = build_classifier(export, "random", 7)
    assert model.head.kernel_size == (2, 2, 2) and model.head.out_channels == 7
    assert model(torch.zeros(3, 3, 32, 32, 32)).shape == (3, 7)
    pretrained = build_classifier(export, "pretrained", 7)
    key = "features.0.weight"
    assert torch.equal(pretrained.backbone.state_dict()[key], export.state_dict[key])
    assert not torch.equal(model.backbone.state_dict()[key], export.state_dict[key])


def test_shift_keeps_motion_and_shape():
    """One translation per clip, the same on every frame: the object's per-frame motion is kept."""
    t, size = 5, 24
    clips = -torch.ones(8, 3, t, size, size)
    for i in range(8):
        for f in range(t):
            x = 6 + 2 * f if i % 2 == 0 else 14 - 2 * f
            clips[i, :, f, 9:14, x:x + 4] = 1.0
    out = random_shift(clips, 3, torch.Generator().manual_seed(0))
    assert out.shape == clips.shape and not torch.equal(out, clips)
    before, after = _centroids(clips), _centroids(out)
    moved = after - before                                   # (clips, frames, 2)
    assert torch.allclose(moved, moved[:, :1].expand_as(moved), atol=1e-4)  # same shift on every frame
    assert moved.abs().max() <= 3 + 1e-4 and (moved.abs().sum((1, 2)) > 0).any()
    assert random_shift(clips, 0, torch.Generator()) is clips


def _centroids(batch: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) in [-1, 1] -> brightness-weighted (x, y) centre per clip and frame: (B, T, 2)."""
    weight = (batch.mean(1) + 1.0).clamp_min(0) ** 4
    ys = torch.arange(batch.shape[3], dtype=torch.float32)[:, None]
    xs = torch.arange(batch.shape[4], dtype=torch.float32)[None, :]
    total = weight.sum((2, 3))
    return torch.stack([(weight * xs).sum((2, 3)) / total, (weight * ys).sum((2, 3)) / total], -1)


def test_zoom_keeps_the_motion_direction():
    """A square moving right (or left) still moves right (left) after every random zoom."""
    t, size = 6, 32
    clips = -torch.ones(16, 3, t, size, size)
    for i in range(16):
        for f in range(t):
            x = 8 + 2 * f if i % 2 == 0 else 20 - 2 * f
            clips[i, :, f, 12:18, x:x + 5] = 1.0
    out = random_zoom(clips, 0.6, torch.Generator().manual_seed(1))
    assert out.shape == clips.shape and not torch.equal(out, clips)
    dx = _centroids(out)[:, 1:, 0] - _centroids(out)[:, :-1, 0]
    dy = _centroids(out)[:, 1:, 1] - _centroids(out)[:, :-1, 1]
    assert (dx[0::2] > 1.0).all() and (dx[1::2] < -1.0).all()
    assert dy.abs().max() < 0.1  # no vertical motion appears
    assert random_zoom(clips, 1.0, torch.Generator()) is clips  # off: untouched, no draws


def test_zoom_is_the_same_box_on_every_frame():
    still = torch.rand(3, 3, 1, 16, 16).repeat(1, 1, 5, 1, 1) * 2 - 1
    out = random_zoom(still, 0.5, torch.Generator().manual_seed(0))
    assert torch.allclose(out, out[:, :, :1].expand_as(out))


def test_adamw_skips_decay_on_biases_and_norms(tmp_path):
    export = load_export(write_tiny_export(tmp_path / "d.pt"))
    model = build_classifier(export, "random", 3)
    adam = make_optimizer(model, FinetuneRecipe(weight_decay=1e-4))
    assert type(adam) is torch.optim.Adam and len(adam.param_groups) == 1
    adamw = make_optimizer(model, FinetuneRecipe(optimizer="adamw", weight_decay=0.05, beta1=0.9))
    assert isinstance(adamw, torch.optim.AdamW)
    decays = {id(p): g["weight_decay"] for g in adamw.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        assert decays[id(param)] == (0.0 if param.ndim <= 1 else 0.05), name
    assert all(g["betas"] == (0.9, 0.999) for g in adamw.param_groups)


def test_bad_exports_and_recipes(tmp_path):
    with pytest.raises(ExportError, match="pretrain/run.py"):
        load_export(tmp_path / "missing.pt")
    torch.save({"format": "something/else"}, tmp_path / "x.pt")
    with pytest.raises(ExportError, match="not a discriminator export"):
        load_export(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="sampling"):
        FinetuneRecipe(sampling="middle")
    with pytest.raises(ValueError, match="unknown fine-tune recipe keys"):
        FinetuneRecipe.from_dict({"iters": 3})
    for bad, match in [({"ema_decay": 1.0}, "ema_decay"), ({"min_crop": 0.0}, "min_crop"),
                       ({"label_smoothing": 1.0}, "label_smoothing"), ({"optimizer": "sgd"}, "optimizer"),
                       ({"shift": -1}, "shift")]:
        with pytest.raises(ValueError, match=match):
            FinetuneRecipe.from_dict(bad)
