"""What a sweep runs: `SweepSpec`, checked before any work (in `--dry-run` too)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runkit.errors import UserError
from runkit.paths import resolve_path
from transfer.canonical import BUDGETS as CANONICAL_SETS
from transfer.classifier import INITS
from transfer.sweeps.protocols import PROTOCOLS
from transfer.subsets import SubsetRule
from videodata.sets import SETS

DATASETS = ("synthetic", *SETS)
LEAK_ACTIONS = ("error", "warn")
EXECUTORS = ("local", "slurm", "debug")


class SweepError(UserError):
    """The sweep cannot start (no checkpoint, no data, bad arguments); the message says why."""


@dataclass(frozen=True)
class SweepSpec:
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    per_class: tuple[int, ...] = ()
    seeds: tuple[int, ...] = (0, 1)                 # training seeds (init of the head, order, augmentation)
    subset_seeds: tuple[int, ...] = ()              # labeled-subset draws; () = each seed draws its own
    subset_lists: tuple[str, ...] = ()              # NAME=PATH: a user's subset list, run beside the draws
    splits: tuple[int, ...] = (1,)
    inits: tuple[str, ...] = ("pretrained", "random")  # transfer.classifier.INITS (random_torch: Torch7's init)
    protocols: tuple[str, ...] = ("finetune", "linear")
    checkpoint: str | None = None                   # one export, or several (pretraining runs) comma-separated
    data: str = "synthetic"
    root: str | None = None
    recipe: str = "demo"
    overrides: tuple[str, ...] = ()                 # recipe overrides, `finetune.iterations=500`
    out: str | None = None
    output_root: str = "outputs"                    # the main job's outputs: data/, cache/, pretrain/, transfer/
    cache_root: str | None = None                   # default <output_root>/cache
    pretrain_root: str | None = None                # default <output_root>/pretrain
    executor: str = "local"
    cluster: str = "local"
    max_parallel: int = 1
    threads: int = 2                                # torch CPU threads per job
    cache_workers: int = 2
    show_progress: bool = True
    synthetic: dict = field(default_factory=dict)   # SyntheticConfig overrides (tests)
    on_leak: str = "error"                          # the pretraining pool overlaps a test list: error | warn
    trajectory: bool = False                        # probe every snapshot of the checkpoint's run, pick by validation
    validate: bool = False                          # development mode: test on a held-out part of each training list
    canonical: bool = False                         # subsets from the shipped canonical lists (transfer.canonical)

    def under_outputs(self, name: str) -> Path:
        return resolve_path(self.output_root) / name

    @property
    def cache_dir(self) -> Path:
        return resolve_path(self.cache_root) if self.cache_root else self.under_outputs("cache")

    @property
    def pretrain_dir(self) -> Path:
        return resolve_path(self.pretrain_root) if self.pretrain_root else self.under_outputs("pretrain")

    @property
    def crossed(self) -> bool:
        """Subset draws and training seeds vary separately (a full cross): their variances separate."""
        return bool(self.subset_seeds)

    def seed_pairs(self) -> list[tuple[int, int]]:
        """(subset seed, training seed) of every seeded cell: the cross product, or each seed with
        itself when --subset-seeds is not given (one seed draws both)."""
        if self.subset_seeds:
            return [(sub, seed) for sub in self.subset_seeds for seed in self.seeds]
        return [(seed, seed) for seed in self.seeds]

    def evaluation_list(self, split: int) -> str:
        """The manifest name of the list a split's cells are scored on: its test list, or with
        --validate the held-out part of its training list."""
        return f"split{split}_val" if self.validate else f"split{split}_test"

    def checkpoints(self) -> list[str]:
        """The --checkpoint entries: several comma-separated exports are replicates of one method."""
        return [c.strip() for c in (self.checkpoint or "").split(",") if c.strip()]

    def rules(self) -> list[SubsetRule]:
        try:
            if self.per_class:
                return [SubsetRule(per_class=int(k)) for k in self.per_class]
            return [SubsetRule(fraction=float(f)) for f in self.fractions]
        except ValueError as exc:
            flag = "--per-class" if self.per_class else "--fractions"
            raise SweepError(f"{flag}: {exc}") from None

    def listed(self) -> list[tuple[SubsetRule, Path]]:
        """The user's subset lists as (rule, file)."""
        out = []
        for item in self.subset_lists:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise SweepError(f"--subset-list {item!r}: expected NAME=PATH (e.g. videossl5=lists/ucf101_5p.txt)")
            try:
                rule = SubsetRule(listed=name)
            except ValueError as exc:
                raise SweepError(f"--subset-list {item!r}: {exc}") from None
            file = resolve_path(path)
            if not file.is_file():
                raise SweepError(f"--subset-list {name}: {file} does not exist")
            out.append((rule, file))
        if len({r.tag for r, _ in out}) != len(out):
            raise SweepError("--subset-list: two lists share a name")
        return out

    def check(self) -> None:
        """Every check that needs no data, checkpoint or recipe file."""
        if self.data not in DATASETS:
            raise SweepError(f"--data must be one of {DATASETS}, got {self.data!r}")
        if self.data in SETS and not self.root:
            raise SweepError(f"--data {self.data} needs --root (the folder holding {SETS[self.data].holds})")
        for name, given, allowed in (("--protocols", self.protocols, tuple(PROTOCOLS)), ("--inits", self.inits, INITS)):
            bad = [p for p in given if p not in allowed]
            if bad or not given:
                raise SweepError(f"{name}: {', '.join(bad) or 'none given'}; choose from {', '.join(allowed)}")
        if not self.seeds:
            raise SweepError("--seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.subset_seeds)) != len(self.subset_seeds):
            raise SweepError("--seeds and --subset-seeds: a seed is given twice")
        if self.on_leak not in LEAK_ACTIONS:
            raise SweepError(f"--on-leak must be one of {LEAK_ACTIONS}, got {self.on_leak!r}")
        target = SETS[self.data if self.data in SETS else self.synthetic.get("layout", "ucf101")]
        bad_splits = [s for s in self.splits if s not in target.splits]
        if bad_splits or not self.splits:
            has = ("UCF101-style sets have splits 1, 2 and 3" if target.splits == (1, 2, 3)
                   else f"{target.title} has split(s) {', '.join(map(str, target.splits))}")
            raise SweepError(f"--splits: {', '.join(map(str, bad_splits)) or 'none given'}; {has}")
        if not (self.fractions or self.per_class or self.subset_lists):
            raise SweepError("--fractions: give at least one fraction (or --per-class, --subset-list)")
        if self.executor not in EXECUTORS:
            raise SweepError(f"--executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.max_parallel < 1 or self.threads < 1:
            raise SweepError(f"--max-parallel and --threads must be >= 1, got {self.max_parallel}, {self.threads}")
        given = self.checkpoints()
        if len(set(given)) != len(given):
            raise SweepError("--checkpoint: an export is given twice (each pretraining run once)")
        self.rules()  # validates every fraction / count
        self.listed()
        if self.canonical and self.data not in CANONICAL_SETS:
            raise SweepError(f"--canonical: canonical subsets ship for {', '.join(CANONICAL_SETS)}, not --data {self.data}")
        if self.canonical and self.validate:
            raise SweepError("--canonical with --validate: the canonical lists are drawn from the whole training "
                             "list, which --validate splits; run --validate with fresh draws")
