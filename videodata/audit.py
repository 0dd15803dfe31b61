"""Leakage audit: does a pretraining pool contain the target's test videos?

Three checks of the pool against the test lists of the target's splits:
- by path: the same file (after resolving links);
- by content: the same bytes under another name (SHA-256; only files whose size equals a test
  file's size are hashed, so a large pool costs a stat per file);
- by group, for UCF101-style names: a pool video `v_<Class>_gXX_cYY` whose group XX is a test group
  of split k (7(k-1)+1 .. 7k) in a class of the target: the same actors and scenes as that split's
  test videos, even when the clip itself is not in the test list.

Pretraining runs it before training on a pool (config `data.audit`), and a transfer sweep runs it
against its own test lists for the checkpoint's pool; both stop with an error naming the first
leaks (or warn, when the user opts in) and record the result next to the run.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

from runkit.hashing import file_sha256
from videodata.errors import VideoDataError
from videodata.records import VideoRecord, parse_group_clip

log = logging.getLogger(__name__)
UCF_TEST_GROUPS = {k: set(range(7 * (k - 1) + 1, 7 * k + 1)) for k in (1, 2, 3)}


class LeakageError(VideoDataError):
    """The pretraining pool overlaps a test list; names the first overlaps."""


@dataclass
class AuditResult:
    target: str
    splits: list[int]
    pool_videos: int
    test_videos: int
    hashed: int = 0                       # files whose content was hashed (size matches)
    leaks: list[dict] = field(default_factory=list)   # {"kind", "split", "pool", "test"}
    note: str = ""

    @property
    def clean(self) -> bool:
        return not self.leaks

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for leak in self.leaks:
            out[leak["kind"]] += 1
        return dict(out)

    def summary(self) -> str:
        if self.note and not self.pool_videos:
            return self.note
        head = (f"{self.pool_videos} pool videos against {self.test_videos} test videos of {self.target} "
                f"split(s) {', '.join(map(str, self.splits))} (by path, by content: {self.hashed} hashed, by group)")
        if self.clean:
            return f"no overlap: {head}"
        shown = "; ".join(f"{leak['kind']}: {leak['pool']} ~ {leak['test']} (split {leak['split']})"
                          for leak in self.leaks[:3])
        return (f"{len(self.leaks)} overlap(s) ({', '.join(f'{k} {v}' for k, v in self.counts().items())}): {head}; "
                f"first: {shown}")

    def as_dict(self) -> dict:
        return {**asdict(self), "clean": self.clean, "summary": self.summary()}


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _ucf_class(name: str) -> str | None:
    """The class of a UCF101-style file name v_<Class>_gXX_cYY.<ext> (case as written)."""
    stem = os.path.basename(name)
    if not stem.startswith("v_") or "_g" not in stem:
        return None
    return stem[2:stem.rindex("_g")]


def audit_pool(pool: Sequence[VideoRecord], tests: Mapping[int, Sequence[VideoRecord]], *, target: str,
               ucf_groups: bool, limit: int = 1000) -> AuditResult:
    """Compare `pool` with the test records of each split in `tests` (split -> records).
    `ucf_groups`: also flag pool videos from a test group of a split (UCF101's gXX naming).
    At most `limit` leaks are listed (all are counted into the result's summary up to it)."""
    result = AuditResult(target, sorted(tests), len(pool), sum(len(v) for v in tests.values()))
    test_by_path: dict[str, tuple[int, str]] = {}
    test_by_size: dict[int, list[tuple[int, str]]] = defaultdict(list)
    classes: set[str] = set()
    for split, records in tests.items():
        for rec in records:
            test_by_path[os.path.realpath(rec.path)] = (split, rec.relpath)
            test_by_size[_size(rec.path)].append((split, rec.path))
            classes.add(rec.class_name.lower())
    test_hashes: dict[str, str] = {}

    def leak(kind: str, split: int, pool_path: str, test: str) -> None:
        if len(result.leaks) < limit:
            result.leaks.append({"kind": kind, "split": split, "pool": pool_path, "test": test})

    for rec in pool:
        real = os.path.realpath(rec.path)
        if real in test_by_path:
            split, relpath = test_by_path[real]
            leak("path", split, rec.path, relpath)
            continue
        candidates = test_by_size.get(_size(rec.path), [])
        if candidates:
            digest = file_sha256(rec.path)
            result.hashed += 1
            for split, test_path in candidates:
                if test_path not in test_hashes:
                    test_hashes[test_path] = file_sha256(test_path)
                    result.hashed += 1
                if test_hashes[test_path] == digest:
                    leak("content", split, rec.path, test_path)
                    break
            else:
                candidates = []
            if candidates:
                continue
        if ucf_groups:
            group, _ = parse_group_clip(os.path.basename(rec.path))
            name_class = _ucf_class(rec.path)
            if group > 0 and name_class and name_class.lower() in classes:
                for split in tests:
                    if group in UCF_TEST_GROUPS.get(split, ()):
                        leak("group", split, rec.path, f"test group g{group:02d} of split {split}")
                        break
    return result


def check(result: AuditResult, on_leak: str, where: str) -> None:
    """Raise LeakageError on a leak unless `on_leak` is "warn" (then log it)."""
    if result.clean:
        return
    if on_leak == "warn":
        log.warning("%s: %s", where, result.summary())
        return
    raise LeakageError(f"{where}: the pretraining pool overlaps the test videos: {result.summary()}. Remove them "
                       f"from the pool, or opt in to a warning instead (pretraining: data.audit.on_leak=warn; "
                       f"transfer: --on-leak warn)")
