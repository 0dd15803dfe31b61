"""The device policy, proven without a GPU.

On PyTorch's `meta` device every op runs shape-only and mixing in a CPU tensor raises, so a
fine-tune step, a feature extraction, a multi-clip evaluation, a k-NN vote and a GAN step run
there with uint8 batches handed over from the host: a missing `.to(device)` anywhere on those
paths fails here, as it would on a GPU. bf16 autocast is checked against fp32 on the CPU.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _tiny import write_tiny_export
from pretrain.export import load_export
from pretrain.schema import PretrainConfig
from pretrain.trainer import Trainer
from runkit.device import DeviceError, DevicePolicy, resolve_device
from transfer.classifier import build_backbone, build_classifier
from transfer.evaluate import clip_probabilities
from transfer.features import FeatureSpec, extract_batch
from transfer.finetune import FinetuneRecipe, make_optimizer, train_step
from transfer.knn import knn_votes

META = DevicePolicy(torch.device("meta"))
CPU = DevicePolicy.create("cpu")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return load_export(write_tiny_export(tmp_path_factory.mktemp("dev") / "d.pt", width=2, frames=16, size=16))


def uint8(*shape, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ choosing a device

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without CUDA")
def test_unavailable_devices_are_clear_errors():
    with pytest.raises(DeviceError, match="CUDA is not available on this machine.*device=cpu"):
        DevicePolicy.create("cuda")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        DevicePolicy.create("cuda:3")
    assert resolve_device("auto") == torch.device("cpu")


def test_bad_names_and_precisions_are_clear_errors():
    with pytest.raises(DeviceError, match="'tpu' is not a device name"):
        DevicePolicy.create("tpu")
    with pytest.raises(DeviceError, match="precision 'fp8' is not one of"):
        DevicePolicy.create("cpu", precision="fp8")
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        DevicePolicy.create("cpu", precision="fp16")
    assert "bf16" in DevicePolicy.create("cpu", precision="bf16", channels_last=True).describe()


def test_auto_precision_is_bf16_only_where_the_hardware_runs_it(monkeypatch):
    from runkit import device as device_mod

    monkeypatch.setattr(device_mod, "native_bf16", lambda device: True)
    assert DevicePolicy.create("cpu", precision="auto").precision == "bf16"
    monkeypatch.setattr(device_mod, "native_bf16", lambda device: False)
    policy = DevicePolicy.create("cpu", precision="auto", channels_last=True)
    assert policy.precision == "fp32" and policy.describe() == "cpu, fp32, channels_last_3d"
    monkeypatch.undo()
    assert device_mod.native_bf16(torch.device("meta")) is False
    assert DevicePolicy.create("meta", precision="auto").precision == "fp32"
    # this machine's answer comes from its CPU flags (AVX512-BF16 / AMX)
    cpu_has_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert DevicePolicy.create("cpu", precision="auto").precision == ("bf16" if cpu_has_bf16 else "fp32")


# ------------------------------------------------------------------------------ everything on meta

def test_finetune_step_on_meta(export):
    model = META.module(build_classifier(export, "random", 3))
    recipe = FinetuneRecipe(batch_size=4, shift=2, min_crop=0.8, label_smoothing=0.1)
    optimizer = make_optimizer(model, recipe)
    clips, labels = uint8(4, 16, 16, 16, 3), torch.tensor([0, 1, 2, 1])  # from the host, as a loader gives them
    loss = train_step(model, clips, labels, optimizer, META.grad_scaler(), META, recipe, torch.Generator())
    assert loss.device.type == "meta" and loss.shape == ()
    assert all(p.device.type == "meta" for p in model.parameters())


def test_a_tensor_left_on_the_cpu_fails_on_meta(export, monkeypatch):
    """The check itself: a model not moved, or a batch not moved, raises."""
    recipe = FinetuneRecipe(batch_size=4)
    stray_model = build_classifier(export, "random", 3)  # never moved to the device
    with pytest.raises(RuntimeError, match="meta|device"):
        train_step(stray_model, uint8(4, 16, 16, 16, 3), torch.tensor([0, 1, 2, 1]), make_optimizer(stray_model, recipe),
                   META.grad_scaler(), META, recipe, torch.Generator())
    model = META.module(build_classifier(export, "random", 3))
    monkeypatch.setattr(DevicePolicy, "to", lambda self, tensor: tensor)  # a batch that never leaves the host
    with pytest.raises(RuntimeError, match="meta|device"):
        train_step(model, uint8(4, 16, 16, 16, 3), torch.tensor([0, 1, 2, 1]), make_optimizer(model, recipe),
                   META.grad_scaler(), META, recipe, torch.Generator())


def test_extraction_evaluation_and_knn_on_meta(export):
    backbone = META.module(build_backbone(export, "pretrained"))
    features = extract_batch(backbone, uint8(2, 3, 16, 16, 16, 3), FeatureSpec(layer="block3", pooling="avgmax"), META)
    assert features.device.type == "meta" and features.shape == (2, 3, 2 * 4 * 2)
    model = META.module(build_classifier(export, "random", 5))
    probabilities = clip_probabilities(model, uint8(2, 4, 16, 16, 16, 3), META)
    assert probabilities.device.type == "meta" and probabilities.shape == (2, 4, 5)
    votes = knn_votes(torch.randn(20, 8, device="meta"), torch.zeros(20, dtype=torch.long, device="meta"),
                      torch.randn(6, 8, device="meta"), 3, 4)
    assert votes.device.type == "meta" and votes.shape == (6, 4)
    with pytest.raises(RuntimeError, match="meta|device"):
        extract_batch(build_backbone(export, "pretrained"), uint8(2, 3, 16, 16, 16, 3), FeatureSpec(), META)


def tiny_gan(tmp_path, device: str, **trainer) -> PretrainConfig:
    cfg = PretrainConfig(experiment_name="dev", output_root=str(tmp_path))
    cfg.model.width, cfg.model.frames, cfg.model.size = 4, 16, 16
    cfg.trainer.batch_size, cfg.trainer.num_samples, cfg.trainer.progress = 4, 2, False
    cfg.trainer.device = device
    for key, value in trainer.items():
        setattr(cfg.trainer, key, value)
    return cfg


# (the EMA of the improved preset is timm's, which draws on a device generator meta does not have)
@pytest.mark.parametrize("options", [{}, {"loss": "hinge", "reuse_fakes": False, "r1_gamma": 1.0},
                                     {"g_from_stored_logits": True, "r1_gamma": 1.0}],
                         ids=["paper", "improved", "stored-logits"])
def test_gan_step_on_meta(tmp_path, options):
    trainer = Trainer(tiny_gan(tmp_path, "meta", **options), run_dir=tmp_path / "run")
    metrics = trainer.train_step(uint8(4, 16, 16, 16, 3))  # a host batch, as the loader gives it
    assert {"d_loss", "g_loss", "d_acc_real", "d_acc_fake"} <= set(metrics)
    assert all(v.device.type == "meta" for v in metrics.values())
    assert all(p.device.type == "meta" for m in trainer.method.modules().values() for p in m.parameters())


def test_a_device_run_resumes_from_its_checkpoint(tmp_path):
    """A GAN run on the device saves, and a fresh one resumes from the file and steps on. The
    checkpoint is read on the CPU: the RNG states in it must reach torch.set_rng_state as CPU
    tensors (mapped to a GPU they raised a TypeError on every resume), while load_state_dict moves
    the weights and optimizer states to the model's device."""
    from runkit.checkpoint import CheckpointManager
    first = Trainer(tiny_gan(tmp_path, "meta"), run_dir=tmp_path / "run")
    first.train_step(uint8(4, 16, 16, 16, 3))
    manager = CheckpointManager(tmp_path / "ckpt")
    manager.save(first.state_dict(), first.step)
    resumed = Trainer(tiny_gan(tmp_path, "meta"), run_dir=tmp_path / "run")
    resumed.load_state_dict(CheckpointManager(tmp_path / "ckpt").load_latest())
    assert resumed.step == 1
    assert all(p.device.type == "meta" for m in resumed.method.modules().values() for p in m.parameters())
    resumed.train_step(uint8(4, 16, 16, 16, 3))
    assert resumed.step == 2
    # the stages' own resume paths read on the CPU too (a device map_location is what broke)
    import inspect

    from transfer import finetune as finetune_module
    for source in (inspect.getsource(Trainer.fit), inspect.getsource(finetune_module.finetune)):
        assert "load_latest()" in source and "map_location" not in source


# ------------------------------------------------------------------------------ bf16 against fp32

def test_bf16_finetune_follows_fp32(export):
    """Four bf16-autocast steps stay close to fp32 from the same seed: the losses on the way and
    the trained models' predictions (weights are no fair measure: Adam's first steps are nearly
    sign(g) * lr, so a rounding difference in a tiny gradient moves a weight by a whole step)."""
    recipe = FinetuneRecipe(batch_size=8, lr=1e-3)
    clips, labels = uint8(8, 16, 16, 16, 3, seed=1), torch.arange(8) % 3
    runs = {}
    for precision in ("fp32", "bf16"):
        policy = DevicePolicy.create("cpu", precision=precision)
        torch.manual_seed(0)
        model = policy.module(build_classifier(export, "random", 3, dropout=0.0))
        optimizer = make_optimizer(model, recipe)
        losses = [float(train_step(model, clips, labels, optimizer, policy.grad_scaler(), policy, recipe,
                                   torch.Generator())) for _ in range(4)]
        with torch.no_grad():
            probabilities = clip_probabilities(model.eval(), clips[:, None], CPU)[:, 0]
        runs[precision] = (losses, probabilities)
    (l32, p32), (l16, p16) = runs["fp32"], runs["bf16"]
    np.testing.assert_allclose(l16, l32, rtol=2e-2)
    assert l32[-1] < l32[0]  # the steps trained
    assert (p16 - p32).abs().max() < 0.02


def test_bf16_gan_steps_follow_fp32(tmp_path):
    values = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(tiny_gan(tmp_path, "cpu", precision=precision, seed=3), run_dir=tmp_path / precision)
        values[precision] = [{k: float(v) for k, v in trainer.train_step(uint8(4, 16, 16, 16, 3, seed=s)).items()}
                             for s in range(3)]
    for fp32, bf16 in zip(values["fp32"], values["bf16"]):
        for key in ("d_loss", "g_loss", "mask_mean"):
            assert bf16[key] == pytest.approx(fp32[key], rel=3e-2), key
