"""The video ViT (pretrain.vit) and masked video modelling (method=mae): tube masks, the encoder on
visible tokens only, VideoMAE's target by hand, the optimiser recipe, the export through the
backbone path, and ViT-S/B at paper size on the meta device. Exact resume after a preemption is
tests/test_pretrain_methods.py's test for every method, mae among them."""
from __future__ import annotations

import statistics

import pytest
import torch
from torch.nn import functional as F

from pretrain.config import compose
from pretrain.export import export_random, load_export
from pretrain.methods.mae import (MaskedAutoencoder, build_encoder, mask_indices, patch_targets, patchify,
                                  tube_mask, unpatchify)
from pretrain.models import build_backbone
from pretrain.schema import ConfigError, PretrainConfig
from pretrain.trainer import Trainer
from pretrain.vit import VIT_PRESETS, VideoViT
from test_pretrain_trainer import tiny_cfg
from transfer.classifier import build_classifier
from videodata.clips import ArrayClips
from videodata.clips import to_model_input

torch.set_num_threads(1)

TINY_VIT = dict(frames=8, size=16, patch=4, tubelet=2, dim=16, depth=2, heads=2)


def tiny_mae(cfg: PretrainConfig) -> PretrainConfig:
    """A seconds-sized MAE on tiny_cfg's 16x16x16 clips: tubelets 2x4x4 (8 x 4 x 4 tokens, 14 of
    each slot's 16 hidden), encoder 16 wide with 3 blocks, decoder 8 wide with 1 block."""
    cfg.method.name = "mae"
    e, m = cfg.method.mae.encoder, cfg.method.mae
    e.patch, e.tubelet, e.dim, e.depth, e.heads = 4, 2, 16, 3, 2
    m.decoder_dim, m.decoder_depth, m.decoder_heads, m.warmup_steps = 8, 1, 1, 1
    return cfg


def _trainer(tmp_path, steps: int = 2, **mae) -> Trainer:
    cfg = tiny_mae(tiny_cfg(tmp_path, steps))
    for key, value in mae.items():
        setattr(cfg.method.mae, key, value)
    clips = torch.randint(0, 256, (8, 16, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return Trainer(cfg, ArrayClips(clips))


# ------------------------------------------------------------------------------ masks and targets

@pytest.mark.parametrize("grid,hidden", [((8, 4, 4), 14), ((8, 14, 14), 176), ((2, 8, 8), 58)])
def test_tube_masks_hide_the_same_spatial_positions_in_every_slot(grid, hidden):
    slots, spatial = grid[0], grid[1] * grid[2]
    assert hidden == round(0.9 * spatial)
    mask = tube_mask(6, grid, 0.9, torch.Generator().manual_seed(0))
    assert mask.shape == (6, slots * spatial) and mask.dtype == torch.bool
    per_slot = mask.view(6, slots, spatial)
    assert (per_slot.sum(dim=2) == hidden).all()  # exactly round(0.9 N) per slot of every clip
    assert (per_slot == per_slot[:, :1]).all()    # the same spatial mask over time: tubes
    assert len({tuple(row.tolist()) for row in per_slot[:, 0]}) == 6  # each clip its own draw
    again = tube_mask(6, grid, 0.9, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)  # from the generator alone
    visible, masked = mask_indices(mask)
    assert visible.shape == (6, slots * (spatial - hidden)) and masked.shape == (6, slots * hidden)
    assert (visible.diff(dim=1) > 0).all() and not mask.gather(1, visible).any() and mask.gather(1, masked).all()


def test_the_reconstruction_target_equals_a_hand_computation():
    g = torch.Generator().manual_seed(3)
    clip = torch.rand(1, 3, 4, 4, 6, generator=g) * 2 - 1  # (B, C, T, H, W); tubelets 2x2x2: grid 2 x 2 x 3
    target = patch_targets(clip, tubelet=2, patch=2)
    raw = patch_targets(clip, tubelet=2, patch=2, normalize=False)
    assert target.shape == raw.shape == (1, 12, 2 * 2 * 2 * 3)
    x = ((clip[0] + 1) / 2).tolist()  # [c][t][h][w] in [0, 1]
    for t0 in range(2):
        for h0 in range(2):
            for w0 in range(3):
                token = (t0 * 2 + h0) * 3 + w0  # (t, h, w) order
                pixels = [[x[c][2 * t0 + dt][2 * h0 + dh][2 * w0 + dw] for dt in range(2) for dh in range(2)
                           for dw in range(2)] for c in range(3)]
                normed = [[(v - statistics.mean(p)) / (statistics.stdev(p) + 1e-6) for v in p] for p in pixels]
                want_raw = [pixels[c][i] for i in range(8) for c in range(3)]  # (frame, row, column, channel)
                want = [normed[c][i] for i in range(8) for c in range(3)]
                assert raw[0, token].tolist() == pytest.approx(want_raw, abs=1e-6)
                assert target[0, token].tolist() == pytest.approx(want, abs=1e-5)
    pixels = patchify(clip, 2, 2)
    assert torch.equal(unpatchify(pixels, (2, 2, 3), 2, 2), clip)


def test_only_visible_tokens_enter_the_encoder_and_the_loss_covers_the_hidden_ones(tmp_path):
    method = _trainer(tmp_path, min_crop=1.0).method  # no zoom: the target comes from the clip as given
    seen = {}
    encoder, decoder = method.model.encoder.features.blocks[0], method.model.decoder.blocks[0]
    encoder.register_forward_pre_hook(lambda m, args: seen.__setitem__("encoder", tuple(args[0].shape)))
    decoder.register_forward_pre_hook(lambda m, args: seen.__setitem__("decoder", tuple(args[0].shape)))
    method.model.register_forward_hook(lambda m, args, out: seen.__setitem__("pred", (args, out.detach())))
    clips = to_model_input(torch.randint(0, 256, (4, 16, 16, 16, 3), dtype=torch.uint8))
    rng = method.rng.get_state()
    metrics = method.train_step(clips, 0)
    # 8 slots x (16 - 14) visible tokens of 8 x 16 = 128; the decoder sees all 128
    assert seen["encoder"] == (4, 16, 16) and seen["decoder"] == (4, 128, 8)
    (_, visible, hidden), pred = seen["pred"]
    method.rng.set_state(rng)
    assert torch.equal(torch.cat([visible, hidden], 1).sort(1).values, torch.arange(128).expand(4, -1))
    mask = tube_mask(4, (8, 4, 4), 0.9, method.rng)
    assert torch.equal(mask_indices(mask)[1], hidden)  # the method's draw: tubes from its generator
    target = patch_targets(clips, 2, 4)
    want = torch.stack([F.mse_loss(pred[b], target[b, hidden[b]]) for b in range(4)]).mean()
    assert pred.shape == (4, 8 * 14, 2 * 4 * 4 * 3)
    assert float(metrics["loss"]) == pytest.approx(float(want), rel=1e-5)


def test_videomae_optimiser_recipe(tmp_path):
    trainer = _trainer(tmp_path, steps=10, warmup_steps=2)
    method = trainer.method
    lr, low = 1.5e-4 * 4 / 256, 1e-5 * 4 / 256  # lr scaled by batch / 256 (tiny_cfg's batch is 4)
    assert method.lr == pytest.approx(lr) and method.min_lr == pytest.approx(low)
    decayed = {id(p) for g in method.opt.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    names = {n for n, p in method.model.named_parameters() if id(p) not in decayed}
    assert all(n.endswith(".bias") or "norm" in n or n == "decoder.mask_token" for n in names)
    assert "decoder.mask_token" in names and "encoder.features.blocks.0.attn.qkv.weight" not in names
    assert all(g["betas"] == (0.9, 0.95) for g in method.opt.param_groups)
    schedule = []
    for step in range(10):
        method.lr_scheduler().step_update(step)
        schedule.append(method.opt.param_groups[0]["lr"])
    # VideoMAE's cosine_scheduler: linear warm-up from 0, then a cosine over the other 8 steps
    import math
    want = [0.0, lr / 2] + [low + 0.5 * (lr - low) * (1 + math.cos(math.pi * i / 8)) for i in range(8)]
    assert schedule == pytest.approx(want, rel=1e-9, abs=1e-15)


# ------------------------------------------------------------------------------ the backbone

@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_the_vit_exports_loads_weights_only_and_fine_tunes(tmp_path, pos_embed):
    path = export_random(tmp_path / "vit.pt", {**TINY_VIT, "pos_embed": pos_embed, "kind": "vit"}, seed=1)
    blob = torch.load(path, weights_only=True)
    assert blob["arch"]["kind"] == "vit" and all(k.startswith("features.") for k in blob["state_dict"])
    assert ("features.pos_embed" in blob["state_dict"]) == (pos_embed == "learned")  # sin-cos: rebuilt
    export = load_export(path)
    torch.manual_seed(1)
    original = build_backbone(export.arch).eval()
    backbone = export.backbone().eval()
    assert isinstance(backbone, VideoViT) and backbone.LAYERS == ("block1", "block2", "penultimate")
    assert all(block.attn.fused_attn for block in backbone.features.blocks)  # F.scaled_dot_product_attention
    x = torch.rand(2, 3, 8, 16, 16) * 2 - 1
    with torch.no_grad():
        for layer in backbone.LAYERS:
            maps = backbone.forward_features(x, layer)
            assert maps.shape == (2, 16, 4, 4, 4) == (2, *backbone.feature_shape)
            assert torch.equal(maps, original.forward_features(x, layer))
            tokens = backbone.forward_tokens(x, layer)
            assert tokens.shape == (2, 64, 16)
            assert torch.equal(maps.flatten(2).transpose(1, 2), tokens)
            assert torch.allclose(backbone.forward_pooled(x, layer), maps.mean(dim=(2, 3, 4)), atol=1e-6)
    with pytest.raises(ValueError, match="unknown feature layer 'block3'"):
        backbone.forward_features(x, "block3")
    with pytest.raises(ValueError, match=r"built for clips .*\(B, 3, 8, 16, 16\)"):
        backbone.forward_features(torch.zeros(1, 3, 8, 32, 32))
    model = build_classifier(export, "pretrained", num_classes=3)  # mean of the tokens -> Linear
    assert isinstance(model.head, torch.nn.Linear) and model.head.in_features == 16
    loss = F.cross_entropy(model(x), torch.tensor([0, 2]))
    loss.backward()
    assert model.backbone.features.patch_embed.weight.grad is not None
    with pytest.raises(ValueError, match="unknown ViT arch keys"):
        build_backbone({**TINY_VIT, "kind": "vit", "width": 4})


def test_mae_trains_and_exports_the_encoder_with_pictures(tmp_path):
    result = _trainer(tmp_path, steps=2).fit()
    export = load_export(result.export_path)
    assert export.method == "mae" and export.arch["kind"] == "vit" and (export.frames, export.size) == (16, 16)
    backbone = export.backbone()
    assert backbone.forward_features(torch.zeros(1, 3, 16, 16, 16)).shape == (1, 16, 8, 4, 4)
    samples = result.run_dir / "samples"
    assert (samples / "samples_final.gif").stat().st_size > 0 and (samples / "samples_final.png").stat().st_size > 0
    assert (result.run_dir / "losses.png").stat().st_size > 0


def test_mae_configs_that_cannot_work_fail_naming_the_key(tmp_path):
    cfg = tiny_mae(tiny_cfg(tmp_path))
    cfg.method.mae.encoder.patch = 8  # 2 x 2 positions: 0.9 hides all 4
    with pytest.raises(ConfigError, match=r"method.mae: mask_ratio=0.9 hides 4 of the 4 tokens"):
        Trainer(cfg)
    cfg = tiny_mae(tiny_cfg(tmp_path))
    cfg.method.mae.warmup_steps = -1
    with pytest.raises(ConfigError, match=r"method.mae.warmup_steps"):
        Trainer(cfg)
    with pytest.raises(ConfigError, match=r"method.mae: ViT patch=7 pixels must divide"):
        compose(["experiment=mae_cpu_demo", "method.mae.encoder.patch=7"])


# ------------------------------------------------------------------------------ paper size, on meta

@pytest.mark.parametrize("preset", ["vit_s", "vit_b"])
def test_videomae_paper_sizes_on_the_meta_device(preset):
    sizes = VIT_PRESETS[preset]
    overrides = ["experiment=mae_paper"] + [f"method.mae.encoder.{k}={sizes[k]}" for k in ("dim", "depth", "heads")] \
        + [f"method.mae.{k}={v}" for k, v in sizes.items() if k.startswith("decoder")]
    cfg = compose(overrides)
    assert (cfg.model.frames, cfg.model.size, cfg.trainer.batch_size, cfg.method.mae.mask_ratio) == (16, 224, 192, 0.9)
    visible, hidden = mask_indices(tube_mask(2, (8, 14, 14), 0.9, torch.Generator().manual_seed(0)))
    assert visible.shape == (2, 8 * 20) and hidden.shape == (2, 8 * 176)  # 176 of 196 hidden per slot
    with torch.device("meta"):
        model = MaskedAutoencoder(build_encoder(cfg), sizes["decoder_dim"], sizes["decoder_depth"],
                                  sizes["decoder_heads"])
        x = torch.empty(2, 3, 16, 224, 224)
        encoder = model.encoder
        assert encoder.grid == (8, 14, 14) and encoder.num_tokens == 1568
        assert encoder.forward_features(x).shape == (2, sizes["dim"], 8, 14, 14)
        assert model(x, visible.to("meta"), hidden.to("meta")).shape == (2, 8 * 176, 2 * 16 * 16 * 3)
    d = sizes["dim"]  # the tubelet embedding, 12 blocks of 12 d^2 + 13 d weights, the final norm
    assert sum(p.numel() for p in encoder.parameters()) == (2 * 16 * 16 * 3 * d + d) + 12 * (12 * d * d + 13 * d) + 2 * d
    assert sum(p.numel() for p in encoder.parameters()) / 1e6 == pytest.approx({"vit_s": 21.9, "vit_b": 86.2}[preset],
                                                                                 abs=0.05)
