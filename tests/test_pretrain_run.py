"""pretrain/run.py and pretrain/conf: typed config (bad keys fail at start-up), presets, and a
tiny end-to-end `python pretrain/run.py` on a tiny synthetic set."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from pretrain.config import compose
from pretrain.data import DataSelectionError, build_cache
from pretrain.models import build_discriminator
from pretrain.schema import ConfigError, validate
from pretrain.trainer import as_config

REPO = Path(__file__).resolve().parents[1]


def _compose(*overrides: str):
    return compose(overrides)


def test_default_is_cpu_demo():
    cfg = _compose()
    assert cfg.experiment_name == "cpu_demo" and cfg.run_name == "auto" and cfg.method.name == "vgan"
    assert (cfg.model.width, cfg.model.frames, cfg.model.size) == (16, 16, 32)
    assert cfg.data.source == "synthetic" and cfg.trainer.loss == "softmax"
    validate(as_config(cfg))


def test_vgan_paper_preset_has_every_paper_setting():
    cfg = _compose("experiment=vgan_paper")
    m, t, o = cfg.model, cfg.trainer, cfg.optim
    assert (m.generator, m.width, m.frames, m.size, m.z_dim) == ("two_stream", 64, 32, 64, 100)
    assert (m.d_norm, m.d_bn_eps, m.spectral_norm, m.init_std) == ("batch", 1e-3, False, 0.01)
    assert (t.batch_size, t.loss, t.mask_lambda, t.reuse_fakes, t.r1_gamma, t.ema) == (64, "softmax", 0.1, True, 0.0, False)
    # main.lua's budget (niter = 100 epochs over the clip list) and G step (fGx on D's stored output)
    assert (t.epochs, t.g_from_stored_logits) == (100, True)
    assert (o.lr_g, o.lr_d, o.beta1, o.beta2) == (2e-4, 2e-4, 0.5, 0.999)
    # the original's data (extra/stabilize_videos_many.py): 2 frames skipped, up to 100 clips of
    # 34 frames each stabilised against its own first frame, SIFT on the native frame, >= 10 matches
    assert (cfg.data.sampling, cfg.data.skip_frames, cfg.data.max_clips, cfg.data.replacement) == \
        ("consecutive", 2, 100, True)  # clips drawn with replacement, as data/donkey_video2.lua
    st = cfg.data.stabilise
    assert (st.enabled, st.method, st.estimate_size, st.max_features, st.min_matches, st.clip_frames,
            st.min_frames, st.min_coverage, st.check_steps, st.min_inlier_fraction) == \
        (True, "sift", 0, 0, 10, 34, 16, 0.0, False, 0.0)
    validate(as_config(cfg))


def test_improved_preset_and_groups_compose():
    cfg = _compose("experiment=improved", "model=one_stream")
    assert (cfg.trainer.loss, cfg.model.spectral_norm, cfg.trainer.ema) == ("hinge", True, True)
    assert cfg.trainer.r1_gamma > 0 and cfg.model.generator == "one_stream"
    validate(as_config(cfg))
    cfg = _compose("data=folder", "data.root=/videos")
    assert cfg.data.source == "folder" and cfg.data.root == "/videos"


PRESETS = sorted(p.stem for p in (REPO / "pretrain" / "conf" / "experiment").glob("*.yaml"))
CPU_DEMOS = [name for name in PRESETS if name.endswith("cpu_demo") or name == "improved"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_shipped_preset_composes_and_validates(preset):
    cfg = _compose(f"experiment={preset}")
    assert cfg.experiment_name == preset
    validate(as_config(cfg))
    method = preset.split("_")[0]
    assert cfg.method.name == (method if method in ("contrastive", "speed", "mae") else "vgan")


def test_cpu_demos_share_the_backbone_and_budget():
    """The methods compare on one backbone, one precision policy and one training-time cap (README: Methods)."""
    shapes = {name: _compose(f"experiment={name}") for name in CPU_DEMOS}
    assert len(shapes) == 5
    assert {(c.model.width, c.model.frames, c.model.size, c.trainer.batch_size, c.trainer.time_limit_min,
             c.trainer.precision, c.trainer.channels_last)
            for c in shapes.values()} == {(16, 16, 32, 32, 4.5, "auto", True)}


@pytest.mark.parametrize("override,needle", [
    ("trainer.bogus=1", "bogus"),
    ("model.widht=8", "widht"),
    ("trainer.steps=many", "trainer.steps"),
    ("model.spectral_norm=perhaps", "model.spectral_norm"),
])
def test_unknown_key_or_wrong_type_fails_at_composition(override, needle):
    with pytest.raises(ConfigCompositionException) as info:
        _compose(override)
    assert needle in str(info.value) + str(info.value.__cause__)


def test_bad_choice_is_named():
    with pytest.raises(ConfigError, match="trainer.loss='wgan'"):
        _compose("trainer.loss=wgan")


@pytest.mark.parametrize("group,needle", [("folder", "data.root"), ("ucf101", "data.lists_dir"),
                                          ("cache", "data.cache_dir")])
def test_missing_data_location_is_named(group, needle, tmp_path):
    cfg = as_config(_compose(f"data={group}"))
    with pytest.raises(DataSelectionError, match=needle):
        build_cache(cfg.data, 16, 32)


def _run(args, tmp_path, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VGANBENCH_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "pretrain/run.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_unknown_key_fails_at_start_up_from_the_command_line(tmp_path):
    proc = _run(["trainer.bogus=1", f"output_root={tmp_path}"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "bogus" in proc.stderr and "TrainerConfig" in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing ran


@pytest.mark.slow
def test_end_to_end_tiny_run(tmp_path):
    pytest.importorskip("videodata.cache", reason="videodata.cache (ClipCache) not available yet")
    out = tmp_path / "pretrain"
    args = ["experiment=cpu_demo", "run_name=tiny", f"output_root={out}",
            f"data.synthetic.root={tmp_path / 'synthetic'}", "data.synthetic.num_classes=2",
            "data.synthetic.clips_per_group=1", "data.synthetic.unlabeled_videos=8",
            "data.synthetic.frames=20", "data.synthetic.frame_width=32", "data.synthetic.frame_height=32",
            "data.synthetic.workers=1", "data.synthetic.progress=false", "data.max_frames=20",
            f"data.cache_root={tmp_path / 'cache'}", "data.decode_workers=1",
            "model.width=4", "model.size=16", "trainer.steps=4", "trainer.batch_size=4",
            "trainer.log_every=2", "trainer.ckpt_every=2", "trainer.num_samples=2", "trainer.threads=1"]
    proc = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = out / "tiny"
    export = torch.load(run / "discriminator.pt", map_location="cpu", weights_only=True)
    assert export["step"] == 4 and export["clip"] == {"frames": 16, "size": 16}
    assert export["data_fingerprint"] and type(export["config"]) is dict
    build_discriminator(export["arch"]).load_state_dict(export["state_dict"])
    assert (out / "LATEST").read_text().strip() == str((run / "discriminator.pt").resolve())
    for name in ("losses.png", "metrics.csv", "samples/samples_final.gif", "samples/samples_final.mp4",
                 "checkpoints/ckpt_00000004.pt", "config.yaml", "attempts.json"):
        assert (run / name).is_file(), name
    assert (out / "hydra" / "cpu_demo" / ".hydra" / "config.yaml").is_file()
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3
    # Running again with more steps resumes from the checkpoint (same run directory).
    proc = _run([a.replace("trainer.steps=4", "trainer.steps=6") for a in args], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "resumed from" in log and "at step 4" in log
    assert torch.load(run / "discriminator.pt", weights_only=True)["step"] == 6
