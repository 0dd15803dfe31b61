"""Canonical label subsets, shipped with the suite: the same labeled videos for everyone.

For each official split of UCF101, nested subsets at 1, 3 and 10 videos per class and at 1% and
10% of each class, 5 draws each, made by the suite's own nested sampler (`transfer.subsets.
nested_subset`, draw d = seed d, so 1 ⊂ 3 ⊂ 10 per class and 1% ⊂ 10% within a draw) from the
official training lists. HMDB51's 1% of a split (36 videos) is fewer than its 51 classes, so its
budgets are per class only. Each list is a text file, one `Class/video` per line under a `#`
header, in `transfer/conf/canonical/<data>/split<k>/<budget>-draw<d>.txt`; `index.json` beside
them holds every file's SHA-256, checked whenever a sweep reads one.

    python -m transfer.canonical --data ucf101 --lists /data/ucf/ucfTrainTestlist   # (re)make them
    python transfer/sweep.py --data ucf101 --root /data/ucf --canonical --per-class 1,3,10 --subset-seeds 0,1,2,3,4

A canonical subset enters a sweep as the subset draw d of its budget (so the report's intervals
treat the 5 lists as the subset draws they are), with its file and hash on the protocol card.
Group structure is whatever the official list has: validation folds keep UCF101's groups whole.
Published lists (e.g. VideoSSL's 5 / 10 / 20 / 50% of UCF101 split 1) run with `--subset-list
NAME=PATH` instead.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Sequence

from runkit.atomic import atomic_write_json, atomic_write_text
from runkit.cli import ArgumentParser, comma_list, run
from runkit.errors import UserError
from transfer.subsets import SubsetRule, listed_subset, nested_subset, read_subset_list
from videodata.sets import hmdb51, ucf101

CANONICAL_DIR = Path(__file__).resolve().parent / "conf" / "canonical"
INDEX_NAME = "index.json"
DRAWS = 5
BUDGETS = {"ucf101": (SubsetRule(per_class=1), SubsetRule(per_class=3), SubsetRule(per_class=10),
                      SubsetRule(fraction=0.01), SubsetRule(fraction=0.1)),
           "hmdb51": (SubsetRule(per_class=1), SubsetRule(per_class=3), SubsetRule(per_class=10))}
READ_SPLIT = {"ucf101": ucf101.read_split, "hmdb51": hmdb51.read_split}


class CanonicalError(UserError):
    """A canonical list that is missing, changed since it was made, or asked for outside what ships."""


def list_path(data: str, split: int, rule: SubsetRule, draw: int, root: Path = CANONICAL_DIR) -> Path:
    return root / data / f"split{split}" / f"{rule.tag}-draw{draw}.txt"


def list_text(subset: Sequence, data: str, split: int, rule: SubsetRule, draw: int) -> str:
    head = [f"# canonical {data} subset: split {split}, {rule.tag}, draw {draw} (transfer.canonical)",
            f"# nested_subset(official training list, {rule.tag}, seed={draw}); {len(subset)} videos"]
    return "\n".join(head + [r.relpath for r in subset]) + "\n"


def make(data: str, lists_dir: str | Path, out: str | Path = CANONICAL_DIR, splits: Sequence[int] = (1, 2, 3),
         draws: int = DRAWS) -> dict:
    """Write every canonical list of `data` from its official split files under `out`, and the
    index (other sets' entries kept). Returns this set's index entry {split: {budget: {draw: sha256}}}."""
    if data not in BUDGETS:
        raise CanonicalError(f"canonical subsets exist for {sorted(BUDGETS)}, not {data!r}")
    out = Path(out)
    entry: dict = {}
    for split in splits:
        train = READ_SPLIT[data](lists_dir, split, "train")
        for rule in BUDGETS[data]:
            for draw in range(draws):
                text = list_text(nested_subset(train, rule, draw), data, split, rule, draw)
                atomic_write_text(list_path(data, split, rule, draw, out), text)
                entry.setdefault(str(split), {}).setdefault(rule.tag, {})[str(draw)] = _sha256(text)
    index = _read_index(out) if (out / INDEX_NAME).is_file() else {}
    index[data] = entry
    atomic_write_json(out / INDEX_NAME, index)
    return entry


def canonical_subset(data: str, split: int, rule: SubsetRule, draw: int, train: Sequence,
                     root: Path | None = None) -> tuple[list, str]:
    """(the records of canonical list (data, split, rule, draw) from the split's training list
    `train`, a one-line source for the protocol card); CanonicalError when it does not ship or
    its file no longer matches the index. `root`: the lists' folder (default the shipped ones)."""
    root = Path(root) if root is not None else CANONICAL_DIR
    index = _read_index(root)
    try:
        expected = index[data][str(split)][rule.tag][str(draw)]
    except KeyError:
        shipped = ", ".join(r.tag for r in BUDGETS.get(data, ()))
        raise CanonicalError(f"no canonical {data} subset for split {split}, {rule.tag}, draw {draw} (shipped: "
                             f"{shipped or 'none'} at draws 0-{DRAWS - 1}; {root / INDEX_NAME})") from None
    path = list_path(data, split, rule, draw, root)
    try:
        actual = _sha256(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CanonicalError(f"canonical list {path} cannot be read: {exc}") from None
    if actual != expected:
        raise CanonicalError(f"canonical list {path} changed since it was made (sha256 {actual[:12]}, index "
                             f"{expected[:12]}); restore it, or remake the lists with python -m transfer.canonical")
    try:
        records = listed_subset(train, read_subset_list(path), f"canonical list {path.name}")
    except ValueError as exc:
        raise CanonicalError(f"{exc} (canonical lists are for {data}'s official training lists)") from None
    return records, f"canonical {data} {path.parent.name}/{path.name} (sha256 {expected[:12]})"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_index(root: Path) -> dict:
    path = Path(root) / INDEX_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CanonicalError(f"canonical subset index {path} cannot be read: {exc}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m transfer.canonical", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, choices=sorted(BUDGETS))
    p.add_argument("--lists", required=True, help="the set's official split files (ucfTrainTestlist, "
                                                  "testTrainMulti_7030_splits)")
    p.add_argument("--splits", type=comma_list(int, "splits"), default=(1, 2, 3))
    p.add_argument("--out", default=str(CANONICAL_DIR), help=f"default: the suite's own ({CANONICAL_DIR})")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> int:
        args = parse_args(argv)
        entry = make(args.data, args.lists, args.out, args.splits)
        count = sum(len(draws) for budgets in entry.values() for draws in budgets.values())
        print(f"{count} canonical {args.data} lists in {Path(args.out) / args.data}, index {Path(args.out) / INDEX_NAME}")
        return 0

    return run(go, argv)


if __name__ == "__main__":
    sys.exit(main())
