"""Data-parallel pretraining: 2 CPU processes on gloo == 1 process with the same global batch.

Checked on every rank, with tolerances far below the effect of the thing under test:
- after step 1 (identical starting weights) every gradient equals the single process's to 1e-3
  of the tensor's largest entry: a sum instead of a mean over ranks is off by 100%;
- after a resume from that step-1 checkpoint and two more steps, every weight equals the single
  process's to 1e-3 of how far that weight moved in those steps. Adam's epsilon is 1e-2 here: with
  the default 1e-8 the first updates of the tiny-gradient weights are nearly sign(g) * lr, so float
  noise in g (another summation order) can move a weight by a whole step and no honest tolerance
  exists; with a large epsilon an update is smooth in g (and a doubled g doubles it).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from test_pretrain_trainer import clips, tiny_cfg  # noqa: E402

from pretrain.models import Discriminator, TwoStreamGenerator  # noqa: E402
from pretrain.trainer import Trainer  # noqa: E402
from runkit.distributed import DistInfo  # noqa: E402

STEPS = 3
ADAM_EPS = 1e-2
OPTIONS = [{}, {"reuse_fakes": False, "loss": "hinge"}, {"g_from_stored_logits": True}]


def _config(tmp: Path, steps: int, options: dict):
    cfg = tiny_cfg(tmp, steps, batch_size=8, **options)
    cfg.optim.eps = ADAM_EPS
    return cfg


def _snapshot(trainer: Trainer) -> dict:
    """Weights, buffers and the last step's gradients of G and D (plain tensors)."""
    out = {}
    for net, model in (("G", trainer.method.G), ("D", trainer.method.D)):
        out[net] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        out[f"{net}.grad"] = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return out


def _train(tmp: Path, name: str, options: dict, info: DistInfo | None = None) -> tuple[dict, dict, dict]:
    """(initial, after step 1, after step 3 resumed from the step-1 checkpoint) snapshots."""
    kwargs = {"dist_info": info} if info is not None else {}
    first = Trainer(_config(tmp, 1, options), clips(16), run_dir=tmp / name, **kwargs)
    initial = _snapshot(first)
    first.fit()
    one = _snapshot(first)
    again = Trainer(_config(tmp, STEPS, options), clips(16), run_dir=tmp / name, **kwargs)
    result = again.fit()
    assert result.resumed_from == 1 and result.step == STEPS
    return initial, one, _snapshot(again)


def _worker(rank: int, world: int, tmp: str, options: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    # a file rendezvous: no TCP port to pick, so no race with another process taking it
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        snapshots = _train(Path(tmp), "ddp", options, DistInfo(rank=rank, world_size=world))
        torch.save(snapshots, Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _bn_shadowed_keys(model: torch.nn.Module) -> set[str]:
    """A conv bias followed by BatchNorm has an exactly-zero true gradient (BN removes it), so its
    value is Adam-normalised float noise that differs between any two summation orders; so does the
    BN running mean that tracks it. They are left out of the comparisons."""
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (cname, conv), (bname, bn) in zip(children, children[1:]):
                if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm) and getattr(conv, "bias", None) is not None:
                    prefix = f"{name}." if name else ""
                    keys |= {f"{prefix}{cname}.bias", f"{prefix}{bname}.running_mean"}
    return keys


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS, ids=["paper", "fresh-hinge", "stored-logits"])
def test_two_gloo_processes_match_one(tmp_path, options):
    initial, one, final = _train(tmp_path, "single", options)
    mp.spawn(_worker, args=(2, str(tmp_path), options), nprocs=2, join=True)
    shadowed = {"G": _bn_shadowed_keys(TwoStreamGenerator(4, 16, 16)), "D": _bn_shadowed_keys(Discriminator(4, 16, 16))}
    for rank in range(2):
        got_initial, got_one, got_final = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for net in ("G", "D"):
            for key, value in initial[net].items():  # same seed: same starting point on every rank
                assert torch.equal(got_initial[net][key], value), f"rank {rank} {net}.{key} at start"
            grads = one[f"{net}.grad"]
            assert grads.keys() == got_one[f"{net}.grad"].keys()
            for key, grad in grads.items():
                if key in shadowed[net]:
                    continue
                diff = (got_one[f"{net}.grad"][key] - grad).abs().max().item()
                assert diff <= 1e-3 * grad.abs().max().item() + 1e-12, \
                    f"rank {rank}: gradient of {net}.{key} after step 1 differs by {diff:.3g} (max {grad.abs().max():.3g})"
            for key, value in final[net].items():
                if key in shadowed[net]:
                    continue
                if not value.is_floating_point():
                    assert torch.equal(got_final[net][key], value), f"rank {rank} {net}.{key}"
                    continue
                moved = (value - one[net][key]).abs().max().item()
                diff = (got_final[net][key] - value).abs().max().item()
                assert diff <= 1e-3 * moved + 1e-9, \
                    f"rank {rank}: {net}.{key} after step {STEPS} differs by {diff:.3g}; steps 2-3 moved it {moved:.3g}"
    # The networks compute the same functions (train-mode BN makes the shadowed tensors moot).
    g, d = TwoStreamGenerator(4, 16, 16), Discriminator(4, 16, 16)
    g.load_state_dict(torch.load(tmp_path / "rank1.pt", weights_only=True)[2]["G"])
    d.load_state_dict(torch.load(tmp_path / "rank1.pt", weights_only=True)[2]["D"])
    g_ref, d_ref = TwoStreamGenerator(4, 16, 16), Discriminator(4, 16, 16)
    g_ref.load_state_dict(final["G"])
    d_ref.load_state_dict(final["D"])
    z = torch.randn(6, 100, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        video, video_ref = g.train()(z), g_ref.train()(z)
        assert torch.allclose(video, video_ref, atol=1e-5), (video - video_ref).abs().max()
        logits, logits_ref = d.train()(video_ref), d_ref.train()(video_ref)
        assert torch.allclose(logits, logits_ref, atol=1e-5, rtol=1e-4), (logits - logits_ref).abs().max()
    # Only rank 0 wrote: one metrics file with one row per step, and the export.
    ddp_dir = tmp_path / "ddp"
    assert (ddp_dir / "discriminator.pt").is_file()
    rows = (ddp_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + STEPS
