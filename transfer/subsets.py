"""Labeled subsets of a training split: nested, stratified, deterministic, written as manifests.

`nested_subset` takes a seeded permutation of every class's videos and keeps a prefix of
`max(1, round(f * n_class))` of them (or `min(K, n_class)` with `per_class=K`). For one seed the
permutation does not depend on f, so 1% ⊂ 10% ⊂ 100% by construction, and every class keeps at
least one video. scikit-learn's stratified splitters are not used: they raise when the subset is
smaller than the number of classes (1% of UCF101 split 1 = 95 videos < 101 classes) and are not
nested across fractions.

A manifest is a small text file: a header (split, seed, rule) and one `relpath<TAB>label<TAB>group`
line per selected video, in selection order (the group, UCF101's gXX or HMDB51's source movie, is
what keeps a validation part disjoint from the rest). Its SHA-256 is the subset's identity: it is
recorded in every result and is part of each cell's resume key.

`validation_split` carves a development split from a training list for `transfer/sweep.py
--validate`: a seeded quarter of its group ids held out whole, as the official splits hold out
whole groups, so recipes can be chosen without a test list.

Besides the seeded draws, a subset can be a list the user gives (`listed_subset`), e.g. the
published VideoSSL 5/10/20/50% lists of UCF101 split 1: it runs as a named subset beside them.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from runkit.atomic import atomic_write_text

MANIFEST_FORMAT = "vganbench.subset/2"
READABLE_FORMATS = ("vganbench.subset/1", MANIFEST_FORMAT)  # /1 has no group column


class Labeled(Protocol):
    relpath: str
    label: int


def group_of(record: Labeled) -> int:
    """The record's group (UCF101 gXX, HMDB51 source movie), -1 when it has none."""
    return int(getattr(record, "group", -1))


@dataclass(frozen=True)
class SubsetRule:
    """A fraction of each class (`fraction`), a fixed count per class (`per_class`), or a list
    the user gave (`listed`: its name; the videos come from the list, not from a draw)."""

    fraction: float | None = None
    per_class: int | None = None
    listed: str | None = None

    def __post_init__(self):
        if sum(v is not None for v in (self.fraction, self.per_class, self.listed)) != 1:
            raise ValueError("a subset rule needs exactly one of fraction=, per_class= or listed=")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {self.per_class}")
        if self.listed is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.listed):
            raise ValueError(f"a subset list's name must be letters, digits, '_', '.', '-'; got {self.listed!r}")

    def count(self, n_class: int) -> int:
        """How many of a class's `n_class` videos the rule keeps (at least one)."""
        if self.listed is not None:
            raise ValueError(f"subset list {self.listed!r} names its videos; it has no per-class count")
        if self.fraction is not None:
            # round half up, so 0.5 videos -> 1 and 7.5 -> 8 regardless of banker's rounding
            wanted = math.floor(self.fraction * n_class + 0.5)
        else:
            wanted = self.per_class
        return max(1, min(n_class, wanted))

    @property
    def tag(self) -> str:
        """A short, file-name-safe name: `f0.1`, `k5` or `list-<name>`."""
        if self.listed is not None:
            return f"list-{self.listed}"
        return f"f{self.fraction:g}" if self.fraction is not None else f"k{self.per_class}"

    @property
    def value(self) -> float:
        if self.listed is not None:
            return -1.0
        return float(self.fraction if self.fraction is not None else self.per_class)


def class_permutation(records: Sequence[Labeled], seed: int) -> dict[int, list[Labeled]]:
    """Every class's records in a seeded random order that does not depend on the rule."""
    by_class: dict[int, list[Labeled]] = defaultdict(list)
    for record in records:
        if record.label < 0:
            raise ValueError(f"unlabeled record {record.relpath!r} in a labeled training split")
        by_class[int(record.label)].append(record)
    permuted = {}
    for label in sorted(by_class):
        # sort first so the permutation depends on the set of videos, not on list order;
        # one RNG per class so adding a class never reshuffles the others
        members = sorted(by_class[label], key=lambda r: r.relpath)
        rng = random.Random(f"{seed}:{label}")
        rng.shuffle(members)
        permuted[label] = members
    return permuted


def nested_subset(records: Sequence[Labeled], rule: SubsetRule, seed: int) -> list[Labeled]:
    """The rule's prefix of each class's seeded permutation, classes in label order."""
    chosen: list[Labeled] = []
    for label, members in class_permutation(records, seed).items():
        chosen.extend(members[: rule.count(len(members))])
    return chosen


VALIDATION_FRACTION = 0.25


def validation_split(records: Sequence[Labeled], seed: int = 0,
                     fraction: float = VALIDATION_FRACTION) -> tuple[list[Labeled], list[Labeled]]:
    """(fit, held): a seeded `fraction` of the training list's distinct groups (UCF101's gXX are
    shared by every class, HMDB51's source movies likewise) held out whole; a video without a
    group is its own. Both keep the list's order."""
    keys = [group_of(r) if group_of(r) >= 0 else f"video:{r.relpath}" for r in records]
    distinct = sorted(set(keys), key=str)
    if len(distinct) < 2:
        raise ValueError(f"{len(distinct)} group(s) in the training list: no group-disjoint validation part")
    rng = random.Random(f"validation:{seed}")
    held_keys = set(rng.sample(distinct, max(1, round(fraction * len(distinct)))))
    fit = [r for r, k in zip(records, keys) if k not in held_keys]
    held = [r for r, k in zip(records, keys) if k in held_keys]
    missing = sorted({int(r.label) for r in records} - {int(r.label) for r in fit})
    if missing:
        raise ValueError(f"holding out groups {sorted(map(str, held_keys))} leaves classes {missing} without "
                         f"training videos")
    return fit, held


def listed_subset(records: Sequence[Labeled], relpaths: Sequence[str], source: str) -> list[Labeled]:
    """The records named by a user's list (in the list's order); every name must be a video of
    `records` (a split's training list), else ValueError naming the first few that are not."""
    by_path = {r.relpath: r for r in records}
    missing = [p for p in relpaths if p not in by_path]
    if missing:
        raise ValueError(f"{source}: {len(missing)} of {len(relpaths)} listed videos are not in the split's training "
                         f"list (first: {', '.join(missing[:3])})")
    if len(set(relpaths)) != len(relpaths):
        raise ValueError(f"{source}: a video is listed twice")
    return [by_path[p] for p in relpaths]


def read_subset_list(path: str | Path) -> list[str]:
    """A user's subset list: one video per line as `Class/v_..avi` (a label column is ignored);
    blank lines and `#` comments skipped; Windows line ends and backslashes accepted."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"subset list {path} cannot be read: {exc}") from None
    names = [line.split()[0].replace("\\", "/") for line in lines if line.strip() and not line.startswith("#")]
    if not names:
        raise ValueError(f"subset list {path} names no video")
    return names


def manifest_text(subset: Sequence[Labeled], *, split: int, seed: int, rule: SubsetRule,
                  dataset: str = "", source: str = "") -> str:
    lines = [f"# {MANIFEST_FORMAT}", f"# dataset={dataset}", f"# split={split}",
             f"# seed={seed}", f"# rule={rule.tag}", f"# videos={len(subset)}"]
    if source:
        lines.insert(5, f"# source={source}")
    lines += [f"{r.relpath}\t{int(r.label)}\t{group_of(r)}" for r in subset]
    return "\n".join(lines) + "\n"


def manifest_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Manifest:
    path: Path
    sha256: str
    relpaths: tuple[str, ...]
    labels: tuple[int, ...]
    groups: tuple[int, ...] = ()
    source: str = ""            # where the subset came from ("seeded draw 0", a list's file), if recorded

    @property
    def short(self) -> str:
        return self.sha256[:12]


def write_manifest(folder: str | Path, subset: Sequence[Labeled], *, split: int, seed: int,
                   rule: SubsetRule, dataset: str = "", name: str | None = None, source: str = "") -> Manifest:
    """Write (atomically, only if changed) `<name or split<k>_<rule>_seed<s>>.txt`; return its
    identity. `name` serves full lists (a split's whole train or test list, in list order)."""
    text = manifest_text(subset, split=split, seed=seed, rule=rule, dataset=dataset, source=source)
    path = Path(folder) / f"{name or f'split{split}_{rule.tag}_seed{seed}'}.txt"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return Manifest(path, manifest_hash(text), tuple(r.relpath for r in subset),
                    tuple(int(r.label) for r in subset), tuple(group_of(r) for r in subset), source)


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest back; a file that is not one raises ValueError naming it."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if not any(text.startswith(f"# {fmt}\n") for fmt in READABLE_FORMATS):
        raise ValueError(f"{path} is not a subset manifest (expected a '# {MANIFEST_FORMAT}' header)")
    relpaths, labels, groups, source = [], [], [], ""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("# source="):
            source = line[len("# source="):]
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        try:
            if len(fields) not in (2, 3):
                raise ValueError
            labels.append(int(fields[1]))
            groups.append(int(fields[2]) if len(fields) == 3 else -1)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: expected 'relpath<TAB>label<TAB>group', got {line!r}") from exc
        relpaths.append(fields[0])
    return Manifest(path, manifest_hash(text), tuple(relpaths), tuple(labels), tuple(groups), source)
