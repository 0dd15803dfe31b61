"""Fine-tune loop: exact resume after an interruption, head shape, evaluation shapes."""
from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

from runkit import preemption
from runkit.checkpoint import seed_everything
from transfer.classifier import ExportError, build_classifier, load_export
from transfer.finetune import FinetuneRecipe, finetune, predict_clips, random_shift
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


def _train(export, workdir, source, interrupt_at=None, monkeypatch=None):
    seed_everything(5)
    model = build_classifier(export, "pretrained", 2, RECIPE.dropout)
    if interrupt_at is not None:
        calls = {"n": 0}

        def requested():
            calls["n"] += 1
            if calls["n"] == interrupt_at:
                preemption._state["requested"] = (signal.SIGUSR2, None)
            return preemption._state["requested"] is not None

        monkeypatch.setattr(preemption, "requested", requested)
    info = finetune(model, source, range(12), source.labels, RECIPE, frames=16, workdir=workdir, seed=3,
                    show_progress=False)
    return model, info


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    export = load_export(write_tiny_export(tmp_path / "d.pt"))
    source = ArrayClips()
    straight, info = _train(export, tmp_path / "straight", source)
    assert info == {"steps": 8, "final_loss": info["final_loss"], "resumed_from": None}

    with pytest.raises(preemption.Preempted):
        _train(export, tmp_path / "cut", source, interrupt_at=6, monkeypatch=monkeypatch)
    monkeypatch.undo()
    assert (tmp_path / "cut" / "ckpt" / "ckpt_00000005.pt").is_file()
    resumed, info2 = _train(export, tmp_path / "cut", source)
    assert info2["resumed_from"] == 5 and info2["final_loss"] == info["final_loss"]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    steps = [int(r["step"]) for r in __import__("csv").DictReader(open(tmp_path / "cut" / "train.csv"))]
    assert steps == list(range(1, 9))

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
    clip = torch.randn(2, 3, 4, 8, 8)
    out = random_shift(clip, 2, torch.Generator().manual_seed(0))
    assert out.shape == clip.shape
    assert random_shift(clip, 0, torch.Generator()) is clip


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
