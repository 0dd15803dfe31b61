"""The backbone export (`discriminator.pt`): its only writer and its only reader, and the
`LATEST` pointer to the newest finished export.

    {"format": "vganbench.discriminator/1", "state_dict": {...}, "arch": {...build_backbone},
     "clip": {"frames": T, "size": S}, "step": int, "data_fingerprint": str, "config": dict,
     "method": "vgan" | ...}

Every pretraining method exports its backbone in this one format (the discriminator's conv stack,
`pretrain.models.VideoBackbone`, a discriminator's real/fake head riding along ignored by transfer;
method=mae's video ViT, `pretrain.vit.VideoViT`, arch `kind: vit`), so every transfer protocol works
on every method unchanged. Every value is a tensor,
number, string or container of those: the file loads with `torch.load(weights_only=True)` and can
never carry code.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pretrain.models import VideoBackbone, build_backbone
from pretrain.torchvision_video import TorchvisionBackbone, load_weights, parse_spec
from runkit.atomic import atomic_torch_save, atomic_write_text
from runkit.errors import UserError
from runkit.hashing import file_sha256
from runkit.paths import resolve_path

EXPORT_FORMAT = "vganbench.discriminator/1"
EXPORT_NAME = "discriminator.pt"
LATEST_NAME = "LATEST"
EXPECTED = f"a {EXPORT_NAME} written by `python pretrain/run.py` (format {EXPORT_FORMAT})"


class ExportError(UserError):
    """A backbone export is missing, unreadable, unsafe or not in the expected format."""


@dataclass(frozen=True)
class BackboneExport:
    path: Path
    state_dict: dict[str, torch.Tensor]
    arch: dict
    frames: int
    size: int
    step: int
    data_fingerprint: str
    config: dict
    method: str
    sha256: str

    @property
    def short(self) -> str:
        return self.sha256[:12]

    def backbone(self, pretrained: bool = True) -> VideoBackbone:
        """The backbone with the exported weights, or (pretrained=False) the same architecture
        from its own fresh init (seed torch first for a reproducible draw)."""
        model = build_backbone(self.arch)
        if pretrained:
            wanted = {k: v for k, v in self.state_dict.items() if k.startswith("features.")}
            missing, unexpected = model.load_state_dict(wanted, strict=False)
            if missing or unexpected:
                raise ExportError(f"{self.path}: weights do not fit the exported architecture "
                                  f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
        return model


def write_export(path: str | Path, backbone: VideoBackbone, *, step: int, data_fingerprint: str,
                 config: dict, method: str) -> Path:
    """Save `backbone` (a VideoBackbone or Discriminator, no parametrisations) as an export."""
    arch = backbone.arch.as_dict()
    payload = {"format": EXPORT_FORMAT,
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()},
               "arch": arch, "clip": {"frames": arch["frames"], "size": arch["size"]},
               "step": int(step), "data_fingerprint": str(data_fingerprint), "config": config,
               "method": method}
    atomic_torch_save(payload, path)
    return Path(path)


def export_random(path: str | Path, arch: dict, *, seed: int = 0, step: int = 0) -> Path:
    """A backbone from fresh init saved as an export (a baseline checkpoint; tests, benchmarks)."""
    torch.manual_seed(seed)
    return write_export(path, build_backbone(arch), step=step, data_fingerprint="random-init",
                        config={"random_init": True, "seed": seed}, method="random")


def load_export(path: str | Path) -> BackboneExport:
    """Read an export safely (`weights_only=True`); every problem is an ExportError in one line."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"checkpoint {path} does not exist; expected {EXPECTED} "
                          f"(run `python pretrain/run.py` first)")
    if path.is_dir():
        raise ExportError(f"checkpoint {path} is a folder; expected {EXPECTED}")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # torch.save writes a zip archive (legacy: a pickle)
        raise ExportError(f"{path} is not a PyTorch checkpoint file (neither a zip archive nor a pickle); "
                          f"expected {EXPECTED}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise ExportError(f"{path} holds Python objects other than tensors and plain values, so it "
                              f"cannot be loaded safely: not a backbone export; expected {EXPECTED}") from None
        raise ExportError(f"{path} is not a PyTorch checkpoint file; expected {EXPECTED}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError,
            IndexError, KeyError, TypeError) as exc:
        raise ExportError(f"{path} is not a readable PyTorch checkpoint file ({type(exc).__name__}); "
                          f"expected {EXPECTED}") from None
    if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ExportError(f"{path} is not a backbone export (format {found!r}); expected {EXPECTED}")
    missing = [k for k in ("state_dict", "arch", "clip") if k not in blob]
    if missing:
        raise ExportError(f"backbone export {path} lacks {missing}; expected {EXPECTED}")
    clip = blob["clip"]
    return BackboneExport(path=path, state_dict=blob["state_dict"], arch=dict(blob["arch"]),
                          frames=int(clip["frames"]), size=int(clip["size"]),
                          step=int(blob.get("step", -1)), data_fingerprint=str(blob.get("data_fingerprint", "")),
                          config=dict(blob.get("config", {})), method=str(blob.get("method", "vgan")),
                          sha256=file_sha256(path))


def write_latest(output_root: str | Path, export_path: Path) -> Path:
    """Point `<output_root>/LATEST` at `export_path` (atomically)."""
    pointer = resolve_path(output_root) / LATEST_NAME
    atomic_write_text(pointer, str(Path(export_path).resolve()) + "\n")
    return pointer


def latest_export(output_root: str | Path = "outputs/pretrain") -> Path:
    """The export `<output_root>/LATEST` points at; ExportError saying what to run when none."""
    pointer = resolve_path(output_root) / LATEST_NAME
    if not pointer.is_file():
        raise ExportError(f"no pretrained backbone: {pointer} not found. Run `python pretrain/run.py` "
                          f"first (or pass --checkpoint PATH/{EXPORT_NAME})")
    path = Path(pointer.read_text().strip())
    if not path.is_file():
        raise ExportError(f"{pointer} points at {path}, which does not exist; run `python pretrain/run.py` again")
    return path


def export_torchvision(spec: str, out_root: str | Path, *, seed: int = 0) -> Path:
    """Write (once) the backbone export of `spec` under `out_root/torchvision-<name>-<weights hash
    or "init<seed>">/backbone.pt` and return its path. Without a weights file the export holds
    torchvision's fresh init from `seed`."""
    name, weights = parse_spec(spec)
    tag = file_sha256(weights)[:12] if weights is not None else f"init{seed}"
    out = Path(out_root) / f"torchvision-{name}-{tag}" / "backbone.pt"
    if out.is_file():
        return out
    torch.manual_seed(seed)
    backbone = TorchvisionBackbone(name)
    if weights is not None:
        backbone.load_state_dict(load_weights(name, weights))
    source = str(weights) if weights is not None else f"torchvision fresh init, seed {seed}"
    return write_export(out, backbone, step=0, data_fingerprint=f"torchvision:{tag}",
                        config={"torchvision": name, "weights": source}, method=f"torchvision:{name}")
