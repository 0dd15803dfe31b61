"""Data-parallel pretraining: 2 CPU processes on gloo == 1 process with the same global batch."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from test_pretrain_trainer import clips, tiny_cfg  # noqa: E402

from pretrain.models import Discriminator, TwoStreamGenerator  # noqa: E402
from pretrain.trainer import VGANTrainer  # noqa: E402
from runkit.checkpoint import CheckpointManager  # noqa: E402
from runkit.distributed import DistInfo  # noqa: E402

STEPS = 3
LR = 2e-4  # the optimiser's step size bounds how far any weight can move per step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tmp: str, options: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = tiny_cfg(Path(tmp), STEPS, batch_size=8, **options)
        trainer = VGANTrainer(cfg, clips(16), run_dir=Path(tmp) / "ddp",
                              dist_info=DistInfo(rank=rank, world_size=world))
        trainer.fit()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"reuse_fakes": False, "loss": "hinge"}], ids=["paper", "fresh-hinge"])
def test_two_gloo_processes_match_one(tmp_path, options):
    single = VGANTrainer(tiny_cfg(tmp_path, STEPS, batch_size=8, **options), clips(16), run_dir=tmp_path / "single")
    single.fit()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), options), nprocs=2, join=True)

    ddp_dir = tmp_path / "ddp"
    state = CheckpointManager(ddp_dir / "checkpoints").load_latest()
    assert state["step"] == STEPS
    ref = single.state_dict()
    # A conv bias followed by BatchNorm has an exactly-zero true gradient (BN removes it), so
    # its value is Adam-normalised float noise that differs between any two summation orders;
    # so does the BN running mean that tracks it. Every other tensor must agree.
    for net, model in (("G", single.G), ("D", single.D)):
        shadowed = _bn_shadowed_keys(model)
        for key, value in ref[net].items():
            if key in shadowed:
                continue
            if value.is_floating_point():
                scale = value.abs().max().item() + 1e-12
                diff = (state[net][key] - value).abs().max().item()
                assert diff <= max(1e-2 * scale, 0.25 * LR * STEPS), f"{net}.{key}: max diff {diff:.3g} vs scale {scale:.3g}"
            else:
                assert torch.equal(state[net][key], value), f"{net}.{key}"
    # The networks compute the same functions (train-mode BN makes the shadowed tensors moot).
    g, d = TwoStreamGenerator(4, 16, 16), Discriminator(4, 16, 16)
    g.load_state_dict(state["G"])
    d.load_state_dict(state["D"])
    z = torch.randn(6, 100, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        video, video_ref = g(z), single.G.train()(z)
        assert torch.allclose(video, video_ref, atol=1e-3), (video - video_ref).abs().max()
        logits, logits_ref = d(video_ref), single.D.train()(video_ref)
        assert torch.allclose(logits, logits_ref, atol=1e-3, rtol=1e-3), (logits - logits_ref).abs().max()
    # Only rank 0 wrote: one metrics file with one row per step, and the export.
    assert (ddp_dir / "discriminator.pt").is_file()
    rows = (ddp_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + STEPS


def _bn_shadowed_keys(model: torch.nn.Module) -> set[str]:
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (cname, conv), (bname, bn) in zip(children, children[1:]):
                if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm) and getattr(conv, "bias", None) is not None:
                    prefix = f"{name}." if name else ""
                    keys |= {f"{prefix}{cname}.bias", f"{prefix}{bname}.running_mean"}
    return keys
