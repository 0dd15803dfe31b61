"""One cell of the sweep = pretraining run x protocol x init x split x labels x seed, run as one job.

`SweepContext` is everything a job needs, as plain picklable values (paths are strings), so a
cell runs the same in this process (debug executor), in a subprocess (local) or on a SLURM node.
A sweep over several pretraining runs of one method (`--checkpoint a.pt,b.pt,c.pt`) gives each
cell a `replicate`: the index of its export in `ctx.replicates`, and for random init the index of
its weight draw, so random init gets one draw per replicate and the report pairs them.
This module is the bookkeeping every protocol shares: the context, the cell and its key, the
manifests, and the result with its protocol card. What a protocol does is in
`transfer.sweeps.protocols`; running a cell as a job is `transfer.sweeps.execute.run_cell`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from runkit.device import DevicePolicy
from transfer.classifier import RANDOM_INITS
from transfer.evaluate import evaluate_clip_scores, save_confusion
from transfer.ledger import Ledger
from transfer.subsets import SubsetRule, read_manifest
from videodata.cache import REPORT_NAME, ClipCache

# random-init features come from one draw of the weights per replicate, shared by every seed, so
# a probe sweep extracts them once per replicate; the cell seed still changes the subset and probe
RANDOM_FEATURE_SEED = 0
# a random-init fine-tune cell of replicate r > 0 seeds its weights and training from
# seed + r * this (replicate 0 keeps the seed itself, so a one-checkpoint sweep's cells stay)
REPLICATE_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class SweepContext:
    out_dir: str
    checkpoint: str
    checkpoint_sha256: str
    train_cache: str          # fine-tune training clips (the first frames of each labeled video)
    eval_cache: str           # test and probe clips (whole videos)
    data_key: str             # identity of the labeled videos and the cache parameters
    class_names: tuple[str, ...]
    frames: int
    size: int
    dataset: str
    recipe: dict = field(default_factory=dict)   # Recipe.as_dict(): finetune, probe, features, cache, runtime
    threads: int = 2
    show_progress: bool = False
    replicates: tuple[tuple[str, str], ...] = ()   # (export path, sha256) per pretraining run; () = the one above

    def for_replicate(self, replicate: int) -> "SweepContext":
        """The context of one pretraining run: its checkpoint and hash in place of the first's."""
        if replicate == 0 and not self.replicates:
            return self
        checkpoint, sha256 = self.replicates[replicate]
        return replace(self, checkpoint=checkpoint, checkpoint_sha256=sha256)

    @property
    def ledger(self) -> Ledger:
        return Ledger(Path(self.out_dir) / "ledger")

    def path(self, relative: str) -> Path:
        return Path(self.out_dir) / relative

    def policy(self) -> DevicePolicy:
        runtime = self.recipe["runtime"]
        return DevicePolicy.create(runtime["device"], runtime["precision"], runtime["channels_last"],
                                   runtime["compile"])

    @property
    def loader_workers(self) -> int:
        return int(self.recipe["runtime"]["loader_workers"])


@dataclass(frozen=True)
class Cell:
    protocol: str
    init: str
    split: int
    rule_tag: str
    rule_value: float
    subset_seed: int         # the draw of the labeled subset (-1: a user's list)
    seed: int                # training randomness: head init, batch order, augmentation
    manifest: str            # relative to the sweep's out_dir
    manifest_sha256: str
    test_list: str           # relative to the sweep's out_dir
    key: str                 # hash of everything the result depends on
    replicate: int = 0       # pretraining run (pretrained) or weight draw (random) of this cell

    @property
    def cell_id(self) -> str:
        subset = "" if self.subset_seed < 0 else f"-sub{self.subset_seed}"
        run = f"-rep{self.replicate}" if self.replicate else ""  # replicate 0 reads as a one-run sweep's
        return (f"{self.protocol}-{self.init}-split{self.split}-{self.rule_tag}{subset}-seed{self.seed}{run}"
                f"-{self.key[:10]}")

    @property
    def weights(self) -> str:
        """The backbone's weights as transfer.classifier names them: a "selected" cell (--trajectory)
        is pretrained weights, from the snapshot its job chooses on validation."""
        return "pretrained" if self.init == "selected" else self.init

    @property
    def training_seed(self) -> int:
        """The seed of the cell's randomness; random init's replicates draw their weights from it."""
        if self.init in RANDOM_INITS and self.replicate:
            return self.seed + self.replicate * REPLICATE_SEED_STRIDE
        return self.seed

    def as_dict(self) -> dict:
        return asdict(self)


def cell_key(ctx: SweepContext, protocol: str, init: str, split: int, rule: SubsetRule, subset_seed: int, seed: int,
             manifest_sha256: str, test_sha256: str, replicate: int = 0, snapshots: Sequence[str] = (), *,
             sections: Sequence[str]) -> str:
    """Everything that changes a cell's result: a changed recipe or checkpoint makes a new cell.
    `ctx` is the cell's replicate's context (its checkpoint hash); `sections`: the recipe sections
    the protocol reads (`Protocol.sections`)."""
    r = ctx.recipe
    # one section hashes as the section itself, several as a mapping: the keys earlier sweeps wrote
    recipe = r[sections[0]] if len(sections) == 1 else {name: r[name] for name in sections}
    fields = {"protocol": protocol, "init": init, "split": split, "rule": rule.tag,
              "subset_seed": subset_seed, "seed": seed, "manifest": manifest_sha256, "test": test_sha256,
              "checkpoint": ctx.checkpoint_sha256, "data": ctx.data_key,
              "clip": [ctx.frames, ctx.size], "recipe": recipe, "cache": r["cache"],
              "precision": r["runtime"]["precision"]}
    if replicate:  # replicate 0 hashes as before, so a one-checkpoint sweep keeps its finished cells
        fields["replicate"] = replicate
    if snapshots:  # a selected cell chooses among these: a changed run makes a new cell
        fields["snapshots"] = list(snapshots)
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------------- helpers

def cache_indices(cache: ClipCache, relpaths, what: str) -> list[int]:
    try:
        return cache.index_of(relpaths).tolist()
    except KeyError as exc:
        raise KeyError(f"videos of {what} are not in the clip cache {cache.folder}: {exc.args[0]}") from None


def load_manifest(ctx: SweepContext, relative: str, expected_sha: str | None = None):
    manifest = read_manifest(ctx.path(relative))
    if expected_sha is not None and manifest.sha256 != expected_sha:
        raise ValueError(f"manifest {manifest.path} changed since the sweep was planned "
                         f"(sha256 {manifest.short} != {expected_sha[:12]}); re-run the sweep to re-plan")
    return manifest


def _labeled_per_class(labels) -> float:
    counts = np.bincount(np.asarray(labels))
    return float(counts[counts > 0].mean())


def protocol_card(ctx: SweepContext, cell: Cell, test_clips: int, selection: str) -> dict:
    """What a result means, recorded with it (the report's protocol card)."""
    cache = ctx.recipe["cache"]
    where = ("spread evenly over the whole video" if cache["eval_max_frames"] is None
             else f"spread evenly over the first {cache['eval_max_frames']} cached frames")
    if cache["eval_stride"] > 1:
        where += f" (every {cache['eval_stride']}-th frame)"
    return {"stabilised": _stabilised(ctx),"split": cell.split, "subset": cell.rule_tag,
            "subset_source": _subset_source(ctx, cell),
            "subset_seed": cell.subset_seed, "training_seed": cell.seed, "test_clips": test_clips,
            "replicate": cell.replicate, "weights": _weights(ctx, cell),
            "test_clips_from": where, "metric": "video-level accuracy (softmax of the clips averaged); "
                                             "clip-level, top-5 and mean-class accuracy beside it",
            "selection": selection}


def _subset_source(ctx: SweepContext, cell: Cell) -> str:
    source = load_manifest(ctx, cell.manifest).source
    if source.startswith("canonical"):  # the shipped list's file and hash (transfer.canonical)
        return source
    return "user's list" if cell.subset_seed < 0 else f"seeded draw {cell.subset_seed}"


def _weights(ctx: SweepContext, cell: Cell) -> str:
    """Where the cell's backbone weights come from, for its protocol card."""
    if cell.weights == "random_torch":
        return f"random weight draw {cell.replicate} (Torch7's default init)"
    if cell.weights != "pretrained":
        return f"random weight draw {cell.replicate}"
    run = Path(ctx.checkpoint).parent
    run = run.parent if run.name == "snapshots" else run  # a selected cell's snapshot
    return f"pretraining run {cell.replicate} ({run.name})"


def _stabilised(ctx: SweepContext) -> str:
    """Whether the labeled videos were stabilised, and how many clips could not be (kept as decoded)."""
    if not ctx.recipe["cache"].get("stabilise"):
        return "no"
    report = json.loads((Path(ctx.eval_cache) / REPORT_NAME).read_text())
    counts = report["stabilisation"]
    clips = counts["clips_stabilised"] + counts["clips_plain"]
    return (f"yes, clip by clip ({counts['clip_frames']} frames); {counts['clips_plain']} of {clips} clips "
            f"could not be and were kept as decoded, in {counts['videos_with_plain_clips']} of "
            f"{report['cached']} videos")


def metrics_result(ctx: SweepContext, cell: Cell, probabilities: np.ndarray, test_labels, train_labels,
                   extra: dict, selection: str) -> dict:
    """A cell's result: the metrics of its test predictions, what it was trained on, its card."""
    metrics = evaluate_clip_scores(probabilities, test_labels, scores_are_probabilities=True)
    confusion = metrics.pop("confusion")
    save_confusion(ctx.path(f"cells/{cell.cell_id}"), confusion, ctx.class_names)
    return {**metrics, "num_classes": len(ctx.class_names), "labeled_videos": len(train_labels),
            "labeled_per_class": _labeled_per_class(train_labels),
            "manifest_sha256": cell.manifest_sha256, "checkpoint_sha256": ctx.checkpoint_sha256,
            "confusion_csv": f"cells/{cell.cell_id}/confusion.csv",
            "protocol": protocol_card(ctx, cell, probabilities.shape[1], selection), **extra}


# The test list is read in one place, `read_test_list`, and only after the cell's training and
# every choice it makes (on validation parts of the labeled subset) are done.

def read_test_list(ctx: SweepContext, cell: Cell):
    return load_manifest(ctx, cell.test_list)
