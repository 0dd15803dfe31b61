"""Typed schema of the pretraining config (Hydra structured configs).

`pretrain.config.register()` stores `PretrainConfig` in Hydra's ConfigStore as `pretrain_schema`;
`conf/config.yaml` lists it first in its defaults, so every YAML file and command-line override
is merged into these dataclasses: an unknown key or a wrong type fails at start-up with
Hydra's message naming the key. Defaults here are the paper's settings; `conf/experiment/*`
presets change them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from pretrain.models import check_clip_shape
from runkit.errors import UserError
from videodata.sets import SETS
from videodata.synthetic import SyntheticConfig


@dataclass
class AuditConfig:
    """The leakage audit before pretraining (videodata.audit): the pool against a target's test lists."""
    target: str = "none"              # none | synthetic | a key of videodata.sets.SETS (ucf101, hmdb51, ...)
    root: str = ""                    # the target set's folder (synthetic: default data.synthetic.root)
    splits: tuple[int, ...] = (1, 2, 3)
    on_leak: str = "error"            # error | warn


@dataclass
class StabiliseSection:
    """data.stabilise: undo camera motion clip by clip before caching (videodata.stabilise.
    StabiliseConfig; failed clips are dropped, data.skip_frames and data.max_clips apply). The fast
    defaults here; experiment=vgan_paper sets the original's values."""
    enabled: bool = False
    method: str = "flow"              # flow (Lucas-Kanade) | sift (the original's) | orb
    matcher: str = "bf"               # bf (exact, = the original's linear FLANN index) | flann_kdtree
    estimate_size: int = 120          # short side motion is estimated at; 0: native (the original)
    max_features: int = 100           # 0 (sift only): every keypoint (the original)
    min_matches: int = 10             # the original's MIN_MATCH_COUNT
    min_inliers: int = 10             # RANSAC inliers needed (the original: no check, i.e. 4)
    min_inlier_fraction: float = 0.25  # of the candidates (the original: 0)
    check_steps: bool = True          # fail a clip on a degenerate frame-to-frame warp (the original: no)
    min_coverage: float = 0.5         # end a clip below this window coverage (the original: 0 = empty)
    clip_frames: int = 34             # the original: its reference + MAX_FRAMES (33)
    min_frames: int = 16              # shorter clips are dropped (the original's MIN_FRAMES)


@dataclass
class DataConfig:
    source: str = "synthetic"         # synthetic | folder | ucf101 | cache
    root: str = ""                    # folder: videos dir or file list; ucf101: the UCF-101 folder
    lists_dir: str = ""               # ucf101: ucfTrainTestlist
    split: int = 1                    # ucf101 / synthetic: which split's training videos
    missing: str = "error"            # ucf101: listed-but-absent videos: error | skip
    include_train: bool = False       # synthetic: add the labeled training videos (labels ignored)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    cache_dir: str = ""               # cache: an existing ClipCache folder
    cache_root: str = "outputs/cache"
    max_frames: int = 64              # frames kept per video in the cache when sampling=random
    stride: int = 1
    resize: str = "crop"              # crop | stretch
    sampling: str = "first"           # first frames | random start | consecutive (the original's clips)
    skip_frames: int = 2              # consecutive or stabilised: frames skipped at the start of each video
    max_clips: int = 100              # consecutive or stabilised: clips cut from each video at most
    stabilise: StabiliseSection = field(default_factory=StabiliseSection)
    replacement: bool = False         # batches drawn uniformly with replacement (the original's loader)
                                      # instead of walking seeded permutations of the clips
    loader_workers: int = 0
    decode_workers: int = 2
    audit: AuditConfig = field(default_factory=AuditConfig)


@dataclass
class ModelConfig:
    generator: str = "two_stream"     # two_stream | one_stream (paper ablation)
    width: int = 64                   # paper: 64 (hidden channels 8w, 4w, 2w, w)
    frames: int = 32
    size: int = 64
    z_dim: int = 100
    g_bn_eps: float = 1e-5            # Torch default in the original G
    d_norm: str = "batch"             # batch | none
    d_bn_eps: float = 1e-3
    spectral_norm: bool = False
    init_std: float = 0.01


@dataclass
class OptimConfig:
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    eps: float = 1e-8                 # Adam's epsilon (PyTorch's and Torch7's default)
    weight_decay: float = 0.0


@dataclass
class TrainerConfig:
    steps: int = 10_000
    epochs: int = 0                   # > 0: the budget is this many passes over the clip list instead of
                                      # `steps` (pretrain.trainer.budget_steps: main.lua's niter loop)
    batch_size: int = 64              # global batch (split across data-parallel ranks)
    loss: str = "softmax"             # softmax (paper) | bce | hinge
    label_smoothing: float = 0.0
    mask_lambda: float = 0.1
    reuse_fakes: bool = True          # paper: G step reuses the D step's fakes
    g_from_stored_logits: bool = False  # VGAN: G's loss from the D step's logits for the fakes (main.lua's
                                      # fGx), no D forward of its own; needs reuse_fakes. Default: a fresh
                                      # D forward of the fakes on the updated D
    r1_gamma: float = 0.0
    r1_every: int = 1
    ema: bool = False                 # EMA of G's weights (timm ModelEmaV3), used for samples
    ema_decay: float = 0.999
    precision: str = "fp32"           # fp32 | bf16 | fp16 (autocast; fp16 with a GradScaler, CUDA only) | auto (runkit.device)
    channels_last: bool = False       # channels_last_3d memory format
    compile: bool = False             # torch.compile G and D
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    threads: int = 0                  # torch CPU threads; 0 = leave as is
    deterministic: bool = False
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    keep: int = 3
    sample_every: int = 0             # 0: samples only at the end
    snapshot_every: int = 0           # > 0: export the backbone every this many steps into snapshots/
                                      # (a checkpoint trajectory: transfer/sweep.py --trajectory)
    num_samples: int = 8
    collapse_window: int = 200        # steps with mask mean < 0.02 or > 0.98 before warning
    time_limit_min: float = 0.0       # > 0: stop (checkpoint + export) after this many minutes of
                                      # training, summed over resumes; a rerun then reuses the export
    progress: bool = True


@dataclass
class ViTSection:
    """The video ViT (pretrain.vit.VideoViT) on model.frames x model.size^2 clips; VideoMAE's ViT-B
    by default (ViT-S: dim 384, heads 6). model.width and the other CNN keys do not apply to it."""
    patch: int = 16                   # tubelet pixels: patch x patch
    tubelet: int = 2                  # tubelet frames
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    pos_embed: str = "sincos"         # sincos (fixed, VideoMAE's) | learned
    drop_path: float = 0.0


@dataclass
class MAEConfig:
    """Masked video modelling (pretrain/methods/mae.py, VideoMAE) on the video ViT; defaults are
    VideoMAE's ViT-B recipe."""
    encoder: ViTSection = field(default_factory=ViTSection)
    mask_ratio: float = 0.9           # tube masking: round(ratio x tokens per frame) hidden, the same in every slot
    decoder_dim: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    norm_target: bool = True          # target: each tubelet's pixels normalised by its own mean and std
    min_crop: float = 0.66            # zoom jitter per clip (VideoMAE's smallest multi-scale crop)
    base_lr: float = 1.5e-4           # lr = base_lr x trainer.batch_size / 256 (min_lr alike)
    min_lr: float = 1e-5
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.05        # not on biases, norms, learned positions, the mask token
    warmup_epochs: float = 40.0       # linear warm-up from 0 with an epoch budget (trainer.epochs > 0)
    warmup_steps: int = -1            # >= 0: warm-up steps, whatever the budget (needed with trainer.steps)


@dataclass
class AdamWSettings:
    """The optimiser of a method that trains the backbone with a small head (AdamW)."""
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 1e-4


@dataclass
class ContrastiveConfig(AdamWSettings):
    """CVRL (pretrain/methods/contrastive.py): two clips of one video at CVRL's interval over the
    whole cached video, CVRL's view augmentation, InfoNCE through a projection head. Defaults are
    CVRL's (its head: 3 hidden layers of 2048, out 128); the CPU demo's head is smaller."""
    temperature: float = 0.1
    projection_dim: int = 128         # the head's output (CVRL: 128)
    hidden_dim: int = 2048            # the head's hidden width (CVRL: 2048, on R3D-50's 2048 features)
    hidden_layers: int = 3            # Linear-BN-ReLU layers before the output (CVRL's hidden_layer_num: 3)
    flip: bool = True                 # CVRL's horizontal flip; false where classes are directions (synthetic)


@dataclass
class SpeedConfig(AdamWSettings):
    """Playback-speed prediction: which of `speeds` frame strides made the clip (no negatives)."""
    speeds: tuple[int, ...] = (1, 2, 4)
    min_crop: float = 0.8             # zoom jitter: a box of side [min_crop, 1], the same on every frame; it
                                      # also spreads the per-frame motion by 1 / min_crop (methods/speed.py)


@dataclass
class MethodConfig:
    name: str = "vgan"                # vgan | contrastive | speed | mae (pretrain/methods/)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)


@dataclass
class PretrainConfig:
    experiment_name: str = "vgan_paper"
    run_name: str = "auto"            # auto: <experiment>-<method>-<hash of the config and the data>
    output_root: str = "outputs/pretrain"  # relative to the repository root
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


CHOICES = {
    "data.source": ("synthetic", "folder", "ucf101", "cache"),
    "data.sampling": ("first", "random", "consecutive"),
    "data.resize": ("crop", "stretch"),
    "data.missing": ("error", "skip"),
    "data.stabilise.method": ("flow", "sift", "orb"),
    "data.stabilise.matcher": ("bf", "flann_kdtree"),
    "model.generator": ("two_stream", "one_stream"),
    "model.d_norm": ("batch", "none"),
    "trainer.loss": ("softmax", "bce", "hinge"),
    "trainer.precision": ("auto", "fp32", "bf16", "fp16"),
    "method.name": ("vgan", "contrastive", "speed", "mae"),
    "data.audit.target": ("none", "synthetic", *SETS),
    "data.audit.on_leak": ("error", "warn"),
}


class ConfigError(UserError, ValueError):
    """A config value out of its range or choices; names the key."""


def validate(cfg: Any) -> None:
    """Checks types cannot express: enumerations and ranges. Raises ConfigError naming the key."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"config {key}={value!r} is not one of {list(allowed)}")
    t = cfg.trainer
    for key in ("steps", "batch_size", "log_every", "ckpt_every", "keep", "r1_every", "num_samples"):
        if getattr(t, key) < 1:
            raise ConfigError(f"config trainer.{key} must be >= 1; got {getattr(t, key)}")
    if t.epochs < 0:
        raise ConfigError(f"config trainer.epochs must be >= 0 (0: trainer.steps is the budget); got {t.epochs}")
    if t.g_from_stored_logits and not t.reuse_fakes:
        raise ConfigError("config trainer.g_from_stored_logits=true needs trainer.reuse_fakes=true (G's loss comes "
                          "from the D step's forward of its fakes)")
    if not 0 < t.ema_decay < 1:
        raise ConfigError(f"config trainer.ema_decay must be in (0, 1); got {t.ema_decay}")
    if t.time_limit_min < 0 or t.sample_every < 0 or t.snapshot_every < 0:
        raise ConfigError("config trainer.time_limit_min, trainer.sample_every and trainer.snapshot_every must be >= 0")
    try:
        SyntheticConfig(**OmegaConf.to_container(OmegaConf.structured(cfg.data.synthetic)))
    except ValueError as exc:
        raise ConfigError(f"config data.synthetic: {exc}") from None
    if cfg.data.audit.target in SETS and not cfg.data.audit.root:
        raise ConfigError(f"config data.audit.target={cfg.data.audit.target} needs data.audit.root (the set's folder)")
    if cfg.data.audit.target in SETS and set(cfg.data.audit.splits) - set(SETS[cfg.data.audit.target].splits):
        raise ConfigError(f"config data.audit.splits={list(cfg.data.audit.splits)}: {cfg.data.audit.target} has "
                          f"split(s) {list(SETS[cfg.data.audit.target].splits)}")
    if cfg.data.max_frames < 1 or cfg.data.stride < 1 or cfg.data.loader_workers < 0:
        raise ConfigError("config data.max_frames and data.stride must be >= 1, data.loader_workers >= 0")
    if cfg.data.skip_frames < 0 or cfg.data.max_clips < 1:
        raise ConfigError(f"config data.skip_frames must be >= 0 and data.max_clips >= 1; got "
                          f"{cfg.data.skip_frames}, {cfg.data.max_clips}")
    if cfg.data.stabilise.enabled:
        from pretrain.data import stabilise_config  # OpenCV only when stabilising
        try:
            stabilise_config(cfg.data)
        except ValueError as exc:
            raise ConfigError(f"config data.stabilise: {exc}") from None
    try:
        check_clip_shape(cfg.model.frames, cfg.model.size, cfg.model.width)
    except ValueError as exc:
        raise ConfigError(f"config model: {exc}") from None
    c, sp = cfg.method.contrastive, cfg.method.speed
    if c.temperature <= 0 or c.projection_dim < 1 or c.hidden_dim < 1 or c.hidden_layers < 0:
        raise ConfigError("config method.contrastive: temperature > 0, projection_dim and hidden_dim >= 1, "
                          "hidden_layers >= 0")
    if not sp.speeds or min(sp.speeds) < 1 or len(set(sp.speeds)) != len(sp.speeds):
        raise ConfigError(f"config method.speed.speeds must be distinct integers >= 1; got {list(sp.speeds)}")
    if not 0 < sp.min_crop <= 1:
        raise ConfigError(f"config method.speed.min_crop must be in (0, 1]; got {sp.min_crop}")
    if cfg.method.name == "mae":
        from pretrain.methods.mae import check_config
        try:
            check_config(cfg)
        except ValueError as exc:
            raise ConfigError(f"config method.mae: {exc}") from None


# Settings that decide where and how fast a run goes, not what it learns: left out of the run's
# identity (its folder name and the check on resume). trainer.steps, trainer.epochs and
# time_limit_min are left out on purpose: raising them continues a run from its checkpoint.
OPERATIONAL = ("experiment_name", "run_name", "output_root", "data.cache_root", "data.cache_dir",
               "data.loader_workers", "data.decode_workers", "data.synthetic.root", "data.synthetic.workers",
               "data.synthetic.progress", "trainer.steps", "trainer.epochs", "trainer.time_limit_min",
               "trainer.log_every", "trainer.ckpt_every", "trainer.keep", "trainer.sample_every",
               "trainer.snapshot_every", "trainer.num_samples", "trainer.collapse_window", "trainer.progress",
               "trainer.threads", "trainer.device", "trainer.compile", "trainer.channels_last", "data.audit")


def identity(cfg: Any) -> dict:
    """The resolved config without the OPERATIONAL keys: everything the weights depend on,
    except the data's content (its fingerprint is added by the trainer)."""
    plain = to_plain(cfg)
    for dotted in OPERATIONAL:
        *parents, leaf = dotted.split(".")
        node = plain
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return plain


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def to_plain(cfg: Any) -> dict:
    """The resolved config as a plain dict (safe for weights_only checkpoints and JSON)."""
    if not OmegaConf.is_config(cfg):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


__all__ = ["PretrainConfig", "DataConfig", "ModelConfig", "OptimConfig", "TrainerConfig", "MethodConfig",
           "ConfigError", "validate", "identity", "to_plain"]
