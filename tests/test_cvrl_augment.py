"""CVRL's view augmentation: parameters against CVRL's table, statistics on constant clips, one
set of parameters for every frame of a clip."""
import torch

from videodata.augment import CVRL, cvrl_augment, cvrl_params


def test_parameters_match_cvrl_table():
    assert CVRL["crop_area"] == (0.3, 1.0) and CVRL["crop_aspect"] == (0.5, 2.0)
    assert (CVRL["brightness"], CVRL["contrast"], CVRL["saturation"], CVRL["hue"]) == (0.8, 0.8, 0.8, 0.2)
    assert CVRL["jitter_p"] == 0.8 and CVRL["grayscale_p"] == 0.2 and CVRL["blur_p"] == (1.0, 0.1)
    assert CVRL["solarize_p"] == (0.0, 0.2) and CVRL["flip_p"] == 0.5


def test_draw_frequencies():
    n = 4000
    p0 = cvrl_params(n, torch.Generator().manual_seed(0), view=0)
    p1 = cvrl_params(n, torch.Generator().manual_seed(1), view=1)
    for key, want in (("jitter", 0.8), ("grayscale", 0.2), ("flip", 0.5)):
        assert abs(p0[key].float().mean().item() - want) < 0.03, key
    assert p0["blur"].all() and abs(p1["blur"].float().mean().item() - 0.1) < 0.02
    assert not p0["solarize"].any() and abs(p1["solarize"].float().mean().item() - 0.2) < 0.03
    area = p0["sw"] * p0["sh"]
    assert area.min() >= 0.3 * 0.5 and area.max() <= 1.0 + 1e-6  # clipped boxes may shrink, never grow
    assert not cvrl_params(100, torch.Generator(), flip=False)["flip"].any()


def test_constant_clip_statistics_and_same_params_over_frames():
    n = 400
    clip = torch.tensor([0.6, -0.2, -0.5]).view(1, 3, 1, 1, 1).expand(n, 3, 4, 12, 12).contiguous()
    p = cvrl_params(n, torch.Generator().manual_seed(2), view=1)
    out = cvrl_augment(clip, p)
    assert out.shape == clip.shape and out.min() >= -1 and out.max() <= 1
    # same parameters on every frame: a constant clip stays the same across time
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-5)
    grey = (out.amax(dim=1) - out.amin(dim=1)).amax(dim=(1, 2, 3)) < 1e-4
    assert abs(grey.float().mean().item() - 0.2) < 0.08 and grey[p["grayscale"]].all()
    changed = (out - clip).abs().amax(dim=(1, 2, 3, 4)) > 1e-3
    untouched = ~p["jitter"] & ~p["grayscale"] & ~p["solarize"]
    assert not changed[untouched].any() and changed[p["jitter"] & ~p["grayscale"]].float().mean() > 0.9
