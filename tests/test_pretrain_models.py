"""pretrain.models and pretrain.losses: shapes, paper-exact details, init, export helpers."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from pretrain import losses
from pretrain.models import (CrossRankBatchNorm, Discriminator, OneStreamGenerator, TwoStreamGenerator,
                             build_discriminator, build_generator, convert_cross_rank_bn,
                             plain_discriminator)

torch.set_num_threads(1)


@pytest.mark.parametrize("width,frames,size", [(4, 16, 16), (4, 16, 32), (8, 32, 32)])
def test_small_shapes(width, frames, size):
    g2 = TwoStreamGenerator(width, frames, size)
    g1 = OneStreamGenerator(width, frames, size)
    d = Discriminator(width, frames, size)
    z = torch.randn(2, 100)
    out = g2.forward_all(z)
    assert out.video.shape == (2, 3, frames, size, size)
    assert out.mask.shape == (2, 1, frames, size, size)
    assert out.foreground.shape == (2, 3, frames, size, size)
    assert out.background.shape == (2, 3, size, size)
    assert g1(z).shape == (2, 3, frames, size, size)
    assert g1.forward_all(z).mask is None
    assert out.video.min() >= -1 and out.video.max() <= 1
    assert 0 <= out.mask.min() and out.mask.max() <= 1
    feats = d.forward_features(out.video)
    assert feats.shape == (2, 8 * width, frames // 16, size // 16, size // 16)
    assert isinstance(d.features[-1], nn.LeakyReLU) and feats.min() < 0  # after its LeakyReLU
    assert d(out.video).shape == (2, 2)


def test_paper_shapes_batch1():
    g, d = TwoStreamGenerator(), Discriminator()
    assert (g.width, g.frames, g.size) == (64, 32, 64)
    with torch.no_grad():
        g.eval()  # batch 1: BN needs running stats
        video = g(torch.randn(1, 100))
        assert video.shape == (1, 3, 32, 64, 64)
        d.eval()
        assert d.forward_features(video).shape == (1, 512, 2, 4, 4)
        assert d(video).shape == (1, 2)
    assert d.classifier.kernel_size == (2, 4, 4) and d.classifier.padding == (0, 0, 0)
    first = g.trunk.net[0]
    assert isinstance(first, nn.ConvTranspose3d) and first.kernel_size == (2, 4, 4)
    assert g.background.net[0].kernel_size == (4, 4)


def test_paper_details():
    d = Discriminator(8, 16, 32)
    mods = list(d.features)
    assert isinstance(mods[0], nn.Conv3d) and isinstance(mods[1], nn.LeakyReLU)  # no BN on conv1
    bns = [m for m in d.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(bns) == 3 and all(bn.eps == 1e-3 for bn in bns)
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    g = TwoStreamGenerator(8, 16, 32)
    g_bns = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(g_bns) == 8 and all(bn.eps == 1e-5 for bn in g_bns)
    assert [m.out_channels for m in g.trunk.modules() if isinstance(m, nn.ConvTranspose3d)] == [64, 32, 16, 8]


def test_init_statistics():
    torch.manual_seed(0)
    g, d = TwoStreamGenerator(16, 16, 32), Discriminator(16, 16, 32)
    for net in (g, d):
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d))]
        w = torch.cat([m.weight.flatten() for m in convs])
        assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.01, rel=0.02)
        assert all((m.bias == 0).all() for m in convs)
        bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        bw = torch.cat([m.weight for m in bns])
        assert bw.mean().item() == pytest.approx(1.0, abs=0.01)
        assert bw.std().item() == pytest.approx(0.02, rel=0.2)
        assert all((m.bias == 0).all() for m in bns)


@pytest.mark.parametrize("kwargs,needle", [({"frames": 24}, "frames"), ({"size": 40}, "size"),
                                           ({"frames": 8}, "frames"), ({"width": 0}, "width")])
def test_bad_shapes_are_named(kwargs, needle):
    args = {"width": 4, "frames": 16, "size": 32, **kwargs}
    for cls in (TwoStreamGenerator, OneStreamGenerator, Discriminator):
        with pytest.raises(ValueError, match=needle):
            cls(**args)


def test_wrong_input_shape_is_explained():
    d = Discriminator(4, 16, 32)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 32, 32\)"):
        d(torch.zeros(1, 3, 16, 64, 64))
    with pytest.raises(ValueError, match="z of shape"):
        TwoStreamGenerator(4, 16, 32)(torch.zeros(2, 50))
    with pytest.raises(ValueError, match="unknown generator"):
        build_generator("three_stream")


def test_build_discriminator_round_trip():
    d = Discriminator(4, 16, 32, norm="none")
    d2 = build_discriminator(d.arch.as_dict())
    d2.load_state_dict(d.state_dict())
    x = torch.randn(2, 3, 16, 32, 32)
    assert torch.equal(d(x), d2(x))
    with pytest.raises(ValueError, match="unknown discriminator arch keys"):
        build_discriminator({**d.arch.as_dict(), "depth": 5})


def test_plain_discriminator_bakes_in_spectral_norm():
    torch.manual_seed(0)
    d = Discriminator(4, 16, 32, spectral_norm=True, norm="none")
    x = torch.randn(3, 3, 16, 32, 32)
    for _ in range(3):  # a few power iterations
        d(x)
    plain = plain_discriminator(d)
    assert plain.arch.spectral_norm is False
    assert not any("parametrizations" in k for k in plain.state_dict())
    d.eval()
    assert torch.allclose(plain.eval()(x), d(x), atol=1e-6)
    d.train()
    d(x)  # the source keeps working (its parametrisation was not removed)


def test_cross_rank_bn_single_process_equals_batchnorm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4), nn.ReLU())
    ref = nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4), nn.ReLU())
    ref.load_state_dict(net.state_dict())
    convert_cross_rank_bn(net)
    assert isinstance(net[1], CrossRankBatchNorm)
    x = torch.randn(4, 3, 5, 6, 6)
    assert torch.allclose(net(x), ref(x))
    assert torch.allclose(net[1].running_var, ref[1].running_var)


def test_losses():
    logits = torch.randn(16, 2)
    for fn in (losses.d_loss_real, losses.d_loss_fake):
        assert torch.allclose(fn(logits, "softmax"), fn(logits, "bce"), atol=1e-6)
    assert torch.allclose(losses.g_loss(logits, "softmax"), losses.g_loss(logits, "bce"), atol=1e-6)
    confident_real = torch.tensor([[-5.0, 5.0]] * 4)
    assert losses.d_loss_real(confident_real, "hinge") == 0
    assert losses.d_loss_fake(confident_real, "hinge") == pytest.approx(11.0)
    assert losses.accuracy(confident_real, True) == 1 and losses.accuracy(confident_real, False) == 0
    assert losses.mask_sparsity(torch.full((2, 1, 4, 4, 4), 0.5), 0.1).item() == pytest.approx(0.05)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        losses.g_loss(logits, "wasserstein")
    d = Discriminator(4, 16, 16, norm="none")
    penalty, out = losses.r1_penalty(d, torch.randn(2, 3, 16, 16, 16), gamma=10.0)
    assert penalty.item() > 0 and out.shape == (2, 2)
    penalty.backward()
    assert d.classifier.weight.grad is not None


@pytest.mark.parametrize("channels_last", [False, True])
def test_two_stream_heads_in_one_call_equal_the_two_modules(channels_last):
    """forward_all runs the foreground and mask heads as one 4-channel transposed convolution
    (a CPU speed-up); the numbers are those of the two modules."""
    from runkit.device import DevicePolicy

    torch.manual_seed(0)
    g = DevicePolicy.create("cpu", "fp32", channels_last).module(TwoStreamGenerator(width=8, frames=16, size=32))
    z = torch.randn(3, g.z_dim)
    out = g.forward_all(z)
    h = g.trunk(z)
    foreground, mask = g.foreground(h), g.mask(h)
    torch.testing.assert_close(out.foreground, foreground, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.mask, mask, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.video, mask * foreground + (1 - mask) * g.background(z).unsqueeze(2),
                               rtol=0, atol=1e-6)
    out.video.square().mean().backward()  # both heads' weights learn
    assert g.foreground[0].weight.grad.abs().sum() > 0 and g.mask[0].weight.grad.abs().sum() > 0
