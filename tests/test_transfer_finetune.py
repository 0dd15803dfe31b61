"""Fine-tune loop: exact resume after an interruption (EMA off and on), head shape, evaluation
shapes, the AdamW parameter groups (the augmentations: tests/test_augment.py)."""
from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

from _tiny import write_tiny_export
from pretrain.export import ExportError, load_export
from runkit import preemption
from runkit.checkpoint import load_checkpoint, seed_everything
from runkit.device import DevicePolicy
from transfer.classifier import build_classifier
from transfer.evaluate import predict_videos
from transfer.finetune import FinetuneRecipe, finetune, make_optimizer
from videodata.clips import ClipDataset

CPU = DevicePolicy.create("cpu")


class ArrayClips:
    """An in-memory stand-in for ClipCache: videos of moving bright squares."""

    def __init__(self, videos: int = 12, frames: int = 20, size: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.labels = np.arange(videos) % 2
        self.records = [type("Record", (), {"label": int(label)})() for label in self.labels]
        self.data = rng.integers(0, 40, (videos, frames, size, size, 3), dtype=np.uint8)
        for v in range(videos):
            for t in range(frames):
                x = (t if self.labels[v] == 0 else frames - t) % (size - 4)
                self.data[v, t, 6:10, x:x + 4] = 250

    def __len__(self):
        return len(self.records)

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
    dataset = ClipDataset(source, 16, sampling=recipe.sampling, seed=3)
    info = finetune(model, dataset, recipe, policy=CPU, workdir=workdir, seed=3, show_progress=False)
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

    probabilities = predict_videos(resumed, ClipDataset(source, 16, sampling="uniform", num_clips=3, items=[0, 1, 2]),
                                   CPU, clips_per_batch=4)
    assert probabilities.shape == (3, 3, 2) and np.allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def test_classifier_head_covers_the_penultimate_map(tmp_path):
    export = load_export(write_tiny_export(tmp_path / "d.pt", width=2, frames=32, size=32))
    model = build_classifier(export, "random", 7)
    assert model.head.kernel_size == (2, 2, 2) and model.head.out_channels == 7
    # the original's head: whole-channel dropout, the framework's default init, no real/fake head
    assert isinstance(model.dropout, torch.nn.Dropout3d) and not hasattr(model.backbone, "classifier")
    bound = 1 / (16 * 2 * 2 * 2) ** 0.5  # 1 / sqrt(fan_in), fan_in = 8w x 2 x 2 x 2
    assert model.head.weight.abs().max() <= bound and model.head.weight.abs().max() > bound / 2
    assert model(torch.zeros(3, 3, 32, 32, 32)).shape == (3, 7)
    pretrained = build_classifier(export, "pretrained", 7)
    key = "features.0.weight"
    assert torch.equal(pretrained.backbone.state_dict()[key], export.state_dict[key])
    assert not torch.equal(model.backbone.state_dict()[key], export.state_dict[key])


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
    with pytest.raises(ExportError, match="not a backbone export"):
        load_export(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="sampling"):
        FinetuneRecipe(sampling="middle")
    for bad, match in [({"ema_decay": 1.0}, "ema_decay"), ({"min_crop": 0.0}, "min_crop"),
                       ({"label_smoothing": 1.0}, "label_smoothing"), ({"optimizer": "sgd"}, "optimizer"),
                       ({"shift": -1}, "shift")]:
        with pytest.raises(ValueError, match=f"finetune.{match}"):
            FinetuneRecipe(**bad)


def test_runtime_compile_reaches_every_forward(tmp_path, monkeypatch):
    """runtime.compile=true compiles what runs on every batch: the fine-tune forward, the
    evaluation forward and the feature extractor (torch.compile counted, not run: a first compile
    takes over a minute on two cores; the GPU check times the real one)."""
    from transfer.classifier import build_backbone
    from transfer.features import FeatureSpec, extract_features
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    policy = DevicePolicy.create("cpu", compile=True)
    export = load_export(write_tiny_export(tmp_path / "d.pt"))
    model = build_classifier(export, "pretrained", 2)
    recipe = FinetuneRecipe(iterations=2, batch_size=4, checkpoint_every=2, log_every=1)
    finetune(model, ClipDataset(ArrayClips(), 16, sampling="random", seed=3), recipe, policy=policy,
             workdir=tmp_path / "ft", seed=3, show_progress=False)
    assert compiled == [model]
    uniform = ClipDataset(ArrayClips(), 16, sampling="uniform", num_clips=2, items=[0, 1])
    predict_videos(model, uniform, policy)
    backbone = build_backbone(export, "pretrained")
    extract_features(backbone, uniform, FeatureSpec(), policy)
    assert compiled[1] is model and compiled[2] == backbone.forward_features
    # the checkpoint keeps the plain model's keys, so a compiled cell resumes in an uncompiled one
    assert set(load_checkpoint(tmp_path / "ft" / "ckpt" / "ckpt_00000002.pt")["model"]) == set(model.state_dict())


def test_max_epochs_caps_the_iterations_of_a_small_subset():
    recipe = FinetuneRecipe(iterations=200, batch_size=32, warmup=20, max_epochs=40)
    small = recipe.for_subset(10)  # 40 passes over 10 videos at batch 32: ceil(400 / 32) = 13 steps
    assert (small.iterations, small.warmup) == (13, 1)
    assert recipe.for_subset(1000) is recipe  # 1,250 > 200: the recipe's own count
    assert FinetuneRecipe(iterations=200).for_subset(10).iterations == 200  # off by default
    with pytest.raises(ValueError, match="max_epochs"):
        FinetuneRecipe(max_epochs=-1)


def test_the_original_schedule_depends_on_the_list_size():
    """main_ucf.lua: epochs of ceil(N/256) iterations until the counter passes 1000, checked at an
    epoch's end, at most 100 epochs."""
    recipe = FinetuneRecipe(budget="original")
    assert [recipe.for_subset(n).iterations for n in (9537, 101, 954, 256, 257)] == [1026, 100, 400, 100, 200]
    with pytest.raises(ValueError, match="finetune.budget"):
        FinetuneRecipe(budget="epochs")


def test_batches_with_replacement_are_seeded_per_step_and_resume():
    from videodata.clips import ClipBatchSampler

    sampler = ClipBatchSampler(5, 8, seed=3, steps=4, replacement=True)
    batches = list(sampler)
    assert all(len(b) == 8 for b in batches) and any(len({i for i, _ in b}) < 8 for b in batches)
    assert [s for b in batches for _, s in b] == [s for s in range(4) for _ in range(8)]  # keyed by step
    assert list(ClipBatchSampler(5, 8, seed=3, start_step=2, steps=4, replacement=True)) == batches[2:]
    assert list(ClipBatchSampler(5, 8, seed=4, steps=4, replacement=True)) != batches


def test_first_frame_skips_the_opening_frames():
    class Frames:  # a cache of two videos whose pixel value is the frame index
        labels = [0, 1]

        def __len__(self):
            return 2

        def num_frames(self, i):
            return (6, 2)[i]

        def clip(self, i, n, start="first"):
            begin = 0 if start == "first" else start
            return np.stack([np.full((2, 2, 3), min(begin + t, self.num_frames(i) - 1), np.uint8) for t in range(n)])

    skipped = ClipDataset(Frames(), 3, first_frame=2)
    assert skipped[0][0][:, 0, 0, 0].tolist() == [2, 3, 4]
    assert skipped[1][0][:, 0, 0, 0].tolist() == [1, 1, 1]  # a 2-frame video starts at its last frame
    assert ClipDataset(Frames(), 3)[0][0][:, 0, 0, 0].tolist() == [0, 1, 2]
