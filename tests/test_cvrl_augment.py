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
    # TF's sample_distorted_bounding_box: area in [0.3, 1], aspect uniform in [0.5, 2], inside the frame
    area, aspect = p0["sw"] * p0["sh"], p0["sw"] / p0["sh"]
    assert area.min() >= 0.3 - 1e-6 and area.max() <= 1.0 + 1e-6
    assert aspect.min() >= 0.5 - 1e-6 and aspect.max() <= 2.0 + 1e-6 and abs(aspect.mean().item() - 1.25) < 0.03
    assert p0["sw"].max() <= 1 + 1e-6 and p0["sh"].max() <= 1 + 1e-6
    assert ((p0["cx"].abs() <= 1 - p0["sw"] + 1e-6) & (p0["cy"].abs() <= 1 - p0["sh"] + 1e-6)).all()
    assert area.min() < 0.32 and area.max() > 0.97  # the whole range is reached
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


def _only(n: int, **on) -> dict:
    """Parameters with every op off but those in `on` (tensors of n clips)."""
    p = cvrl_params(n, torch.Generator().manual_seed(4), view=1)
    for key in ("flip", "jitter", "grayscale", "blur", "solarize"):
        p[key] = torch.zeros(n, dtype=torch.bool)
    p.update(sw=torch.ones(n), sh=torch.ones(n), cx=torch.zeros(n), cy=torch.zeros(n))
    p.update(on)
    return p


def test_each_op_on_a_constant_clip():
    n = 6
    rgb = torch.tensor([0.8, 0.1, -0.6])  # [-1, 1]: 0.9, 0.55, 0.2 on [0, 1]
    clip = rgb.view(1, 3, 1, 1, 1).expand(n, 3, 4, 24, 24).contiguous()
    on = torch.ones(n, dtype=torch.bool)
    # crop, flip and blur leave a constant clip as it is
    crop = _only(n, sw=torch.full((n,), 0.5), sh=torch.full((n,), 0.7), flip=on, blur=on)
    assert torch.allclose(cvrl_augment(clip, crop), clip, atol=1e-5)
    # grayscale: every channel the luma (0.299, 0.587, 0.114) of the colour
    grey = cvrl_augment(clip, _only(n, grayscale=on))
    luma = (torch.tensor([0.299, 0.587, 0.114]) * (rgb + 1) / 2).sum() * 2 - 1
    assert torch.allclose(grey, luma.expand_as(grey), atol=1e-5)
    # solarisation: values at or above the threshold 0.5 (on [0, 1]) become 1 - v, the others stay
    sol = cvrl_augment(clip, _only(n, solarize=on))
    want = torch.tensor([0.1, 0.45, 0.2]) * 2 - 1
    assert torch.allclose(sol, want.view(1, 3, 1, 1, 1).expand_as(sol), atol=1e-5)
    # brightness alone (the other factors 1, hue 0): each channel scaled by the clip's factor
    bright = _only(n, jitter=on, contrast=torch.ones(n), saturation=torch.ones(n), hue=torch.zeros(n))
    out = (cvrl_augment(clip, bright) + 1) / 2
    scaled = ((rgb + 1) / 2)[None, :] * bright["brightness"][:, None]
    assert torch.allclose(out[:, :, 0, 0, 0], scaled.clamp(0, 1), atol=1e-4)
    # contrast alone about each channel's mean over the clip: a constant clip is its own mean
    contrast = _only(n, jitter=on, brightness=torch.ones(n), saturation=torch.ones(n), hue=torch.zeros(n))
    assert torch.allclose(cvrl_augment(clip, contrast), clip, atol=1e-5)


def test_contrast_is_about_each_channels_mean_over_the_clip():
    """tf.image.adjust_contrast on CVRL's frames stacked into one image: one mean per channel for
    the whole clip, so every frame gets the same map."""
    n = 4
    clip = torch.rand(n, 3, 5, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    on = torch.ones(n, dtype=torch.bool)
    p = _only(n, jitter=on, brightness=torch.ones(n), saturation=torch.ones(n), hue=torch.zeros(n),
              contrast=torch.full((n,), 1.5))
    u = (clip + 1) / 2
    mean = u.mean(dim=(2, 3, 4), keepdim=True)
    assert torch.allclose(cvrl_augment(clip, p), ((u - mean) * 1.5 + mean).clamp(0, 1) * 2 - 1, atol=1e-5)
