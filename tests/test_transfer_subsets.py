"""Label-fraction subsets: nested, stratified, deterministic; manifests and their hashes."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transfer.subsets import (SubsetRule, group_of, listed_subset, manifest_hash, manifest_text, nested_subset,
                              read_manifest, read_subset_list, write_manifest)


@dataclass(frozen=True)
class Rec:
    relpath: str
    label: int


def make_records(counts: list[int]) -> list[Rec]:
    return [Rec(f"C{label}/v_C{label}_g{i // 4 + 1:02d}_c{i % 4 + 1:02d}.avi", label)
            for label, n in enumerate(counts) for i in range(n)]


class_counts = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=12)
fractions = st.floats(min_value=0.001, max_value=1.0)


@settings(max_examples=60, deadline=None)
@given(class_counts, fractions, fractions, st.integers(0, 10_000))
def test_nested_for_the_same_seed(counts, f1, f2, seed):
    records = make_records(counts)
    small, large = sorted((f1, f2))
    a = {r.relpath for r in nested_subset(records, SubsetRule(fraction=small), seed)}
    b = {r.relpath for r in nested_subset(records, SubsetRule(fraction=large), seed)}
    assert a <= b


@settings(max_examples=60, deadline=None)
@given(class_counts, fractions, st.integers(0, 10_000))
def test_stratified_every_class_at_least_one(counts, fraction, seed):
    records = make_records(counts)
    subset = nested_subset(records, SubsetRule(fraction=fraction), seed)
    per_class = Counter(r.label for r in subset)
    assert set(per_class) == set(range(len(counts)))
    for label, n in enumerate(counts):
        # within one video of f * n, never below one, never above the class
        assert 1 <= per_class[label] <= n and abs(per_class[label] - max(1.0, fraction * n)) <= 0.5 + 1e-9


# (fraction or per-class count, videos in the class) -> videos kept, worked out by hand:
# round half up, at least one, at most the class
COUNTS = [((0.01, 72), 1), ((0.1, 72), 7), ((1.0, 72), 72), ((0.01, 121), 1), ((0.1, 121), 12),
          ((0.05, 10), 1), ((0.25, 10), 3), ((0.15, 10), 2), ((0.35, 10), 4), ((0.5, 3), 2),
          ((0.001, 5), 1), ((0.999, 5), 5), (("k", 5, 72), 5), (("k", 100, 72), 72), (("k", 1, 3), 1)]


@pytest.mark.parametrize("case,expected", COUNTS)
def test_rule_counts_by_hand(case, expected):
    if case[0] == "k":
        rule, n = SubsetRule(per_class=case[1]), case[2]
    else:
        rule, n = SubsetRule(fraction=case[0]), case[1]
    assert rule.count(n) == expected
    subset = nested_subset(make_records([n, 2]), rule, seed=7)
    assert Counter(r.label for r in subset)[0] == expected


@settings(max_examples=30, deadline=None)
@given(class_counts, fractions, st.integers(0, 10_000), st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_input_order(counts, fraction, seed, rnd):
    records = make_records(counts)
    shuffled = list(records)
    rnd.shuffle(shuffled)
    rule = SubsetRule(fraction=fraction)
    assert nested_subset(records, rule, seed) == nested_subset(shuffled, rule, seed)


@settings(max_examples=30, deadline=None)
@given(class_counts, st.integers(1, 50), st.integers(1, 50), st.integers(0, 1000))
def test_per_class_nested_and_capped(counts, k1, k2, seed):
    records = make_records(counts)
    lo, hi = sorted((k1, k2))
    a = nested_subset(records, SubsetRule(per_class=lo), seed)
    b = nested_subset(records, SubsetRule(per_class=hi), seed)
    assert {r.relpath for r in a} <= {r.relpath for r in b}
    assert Counter(r.label for r in a) == {c: min(lo, n) for c, n in enumerate(counts)}


def test_one_percent_of_ucf_sized_split_does_not_raise():
    # 101 classes, 72-121 videos each: 1% is ~1 per class, fewer videos than classes would be
    # the case for a stratified sklearn split, which raises.
    counts = [72 + (i * 7) % 50 for i in range(101)]
    subset = nested_subset(make_records(counts), SubsetRule(fraction=0.01), seed=0)
    assert Counter(r.label for r in subset) == {c: 1 for c in range(101)}


def test_seeds_differ():
    records = make_records([30] * 5)
    rule = SubsetRule(fraction=0.2)
    assert nested_subset(records, rule, 0) != nested_subset(records, rule, 1)


def test_manifest_hash_changes_with_split_and_seed(tmp_path):
    records = make_records([10] * 3)
    rule = SubsetRule(fraction=0.5)
    base = write_manifest(tmp_path, nested_subset(records, rule, 0), split=1, seed=0, rule=rule)
    other_seed = write_manifest(tmp_path, nested_subset(records, rule, 1), split=1, seed=1, rule=rule)
    other_split = write_manifest(tmp_path, nested_subset(records, rule, 0), split=2, seed=0, rule=rule)
    assert len({base.sha256, other_seed.sha256, other_split.sha256}) == 3
    # even at 100% (same set of videos) a different seed is a different training order
    full = SubsetRule(fraction=1.0)
    assert (manifest_hash(manifest_text(nested_subset(records, full, 0), split=1, seed=0, rule=full))
            != manifest_hash(manifest_text(nested_subset(records, full, 1), split=1, seed=1, rule=full)))


def test_manifest_roundtrip_and_idempotent_write(tmp_path):
    records = make_records([5, 6])
    rule = SubsetRule(per_class=2)
    subset = nested_subset(records, rule, 3)
    first = write_manifest(tmp_path, subset, split=1, seed=3, rule=rule, dataset="toy")
    mtime = first.path.stat().st_mtime_ns
    again = write_manifest(tmp_path, subset, split=1, seed=3, rule=rule, dataset="toy")
    assert again == first and first.path.stat().st_mtime_ns == mtime
    back = read_manifest(first.path)
    assert back.sha256 == first.sha256
    assert back.relpaths == tuple(r.relpath for r in subset)
    assert back.labels == tuple(r.label for r in subset)
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_rules_and_files_raise(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        SubsetRule()
    with pytest.raises(ValueError, match="fraction"):
        SubsetRule(fraction=1.5)
    with pytest.raises(ValueError, match="unlabeled"):
        nested_subset([Rec("a.avi", -1)], SubsetRule(fraction=1.0), 0)
    bogus = tmp_path / "x.txt"
    bogus.write_text("hello\n")
    with pytest.raises(ValueError, match="not a subset manifest"):
        read_manifest(bogus)


# ------------------------------------------------------------ rules, lists and manifests, detail by detail

@dataclass(frozen=True)
class GroupedRec:
    relpath: str
    label: int
    group: int


def test_rule_validation_messages_and_bounds():
    with pytest.raises(ValueError, match=r"^a subset rule needs exactly one of fraction=, per_class= or listed=$"):
        SubsetRule(fraction=0.5, per_class=2)
    with pytest.raises(ValueError, match=r"^fraction must be in \(0, 1\], got 0.0$"):
        SubsetRule(fraction=0.0)
    assert SubsetRule(fraction=1.0).count(7) == 7
    with pytest.raises(ValueError, match=r"^per_class must be >= 1, got 0$"):
        SubsetRule(per_class=0)
    for name in ("VideoSSL-5pc", "ucf101_split1.10", "5", "Z"):
        assert SubsetRule(listed=name).tag == f"list-{name}"
    for name in ("", "-x", "_x", ".x", "a b", "a/b", "ünïcode"):
        with pytest.raises(ValueError, match=r"^a subset list's name must be letters, digits"):
            SubsetRule(listed=name)
    with pytest.raises(ValueError, match=r"^subset list 'pub' names its videos; it has no per-class count$"):
        SubsetRule(listed="pub").count(10)


def test_group_of_defaults_to_minus_one():
    assert group_of(GroupedRec("a.avi", 0, 7)) == 7
    assert group_of(Rec("a.avi", 0)) == -1
    text = manifest_text([GroupedRec("a.avi", 1, 3), Rec("b.avi", 2)], split=1, seed=0, rule=SubsetRule(per_class=1))
    assert text.splitlines()[-2:] == ["a.avi\t1\t3", "b.avi\t2\t-1"]


def test_listed_subset_keeps_the_list_order_and_names_what_is_missing():
    records = [Rec(f"C/v_{i}.avi", i % 2) for i in range(6)]
    chosen = listed_subset(records, ["C/v_4.avi", "C/v_1.avi"], "pub.txt")
    assert chosen == [records[4], records[1]]
    with pytest.raises(ValueError) as info:
        listed_subset(records, ["C/v_0.avi", "x1", "x2", "x3", "x4"], "pub.txt")
    assert str(info.value) == ("pub.txt: 4 of 5 listed videos are not in the split's training list "
                               "(first: x1, x2, x3)")
    with pytest.raises(ValueError, match=r"^pub.txt: a video is listed twice$"):
        listed_subset(records, ["C/v_0.avi", "C/v_0.avi"], "pub.txt")


def test_read_subset_list_accepts_what_published_lists_look_like(tmp_path):
    path = tmp_path / "videossl_5.txt"
    path.write_bytes("\ufeff# VideoSSL 5%\r\nApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n\r\n"
                     "   \r\nBand\\v_Band_g09_c02.avi\r\n".encode("utf-8"))
    assert read_subset_list(path) == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Band/v_Band_g09_c02.avi"]
    only_comments = tmp_path / "empty.txt"
    only_comments.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match=r"^subset list .*empty.txt names no video$"):
        read_subset_list(only_comments)
    with pytest.raises(ValueError, match=r"^subset list .*absent.txt cannot be read: "):
        read_subset_list(tmp_path / "absent.txt")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Caf\u00e9/v.avi\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"^subset list .*latin.txt cannot be read: .*codec"):
        read_subset_list(latin)


def test_manifest_header_lines_exactly():
    records = [GroupedRec("A/v1.avi", 0, 1)]
    plain = manifest_text(records, split=2, seed=5, rule=SubsetRule(fraction=0.5))
    assert plain.splitlines() == ["# vganbench.subset/2", "# dataset=", "# split=2", "# seed=5", "# rule=f0.5",
                                  "# videos=1", "A/v1.avi\t0\t1"]
    listed = manifest_text(records, split=1, seed=0, rule=SubsetRule(listed="pub"), dataset="ucf101",
                           source="lists/pub.txt")
    assert listed.splitlines()[:7] == ["# vganbench.subset/2", "# dataset=ucf101", "# split=1", "# seed=0",
                                       "# rule=list-pub", "# source=lists/pub.txt", "# videos=1"]
    assert manifest_hash(plain) == hashlib.sha256(plain.encode("utf-8")).hexdigest()


def test_write_manifest_names_and_contents(tmp_path):
    records = [GroupedRec("A/v 1.avi", 0, 4), GroupedRec("B/v2.avi", 1, 5)]
    rule = SubsetRule(per_class=1)
    drawn = write_manifest(tmp_path, records, split=3, seed=9, rule=rule, dataset="hmdb51", source="s.txt")
    assert drawn.path == tmp_path / "split3_k1_seed9.txt"
    assert drawn.path.read_text() == manifest_text(records, split=3, seed=9, rule=rule, dataset="hmdb51",
                                                   source="s.txt")
    assert (drawn.relpaths, drawn.labels, drawn.groups) == (("A/v 1.avi", "B/v2.avi"), (0, 1), (4, 5))
    assert drawn.short == drawn.sha256[:12] == manifest_hash(drawn.path.read_text())[:12]
    plain = write_manifest(tmp_path, records, split=3, seed=9, rule=rule, name="train_list")
    assert plain.path == tmp_path / "train_list.txt"
    assert plain.path.read_text() == manifest_text(records, split=3, seed=9, rule=rule)
    back = read_manifest(drawn.path)
    assert back == drawn  # path, hash, relpaths (a space in a name survives), labels, groups


def test_read_manifest_reads_format_1_and_names_the_bad_line(tmp_path):
    old = tmp_path / "old.txt"
    old.write_text("# vganbench.subset/1\n# split=1\n# rule=k1\nA/v1.avi\t3\nB/v2.avi\t4\n")
    back = read_manifest(old)
    assert (back.relpaths, back.labels, back.groups) == (("A/v1.avi", "B/v2.avi"), (3, 4), (-1, -1))
    for bad_line in ("C/v3.avi", "C/v3.avi\tx\t1", "C/v3.avi\t1\t2\t3", "C/v3.avi\t1\tg"):
        bad = tmp_path / "bad.txt"
        bad.write_text(f"# vganbench.subset/2\n# split=1\nA/v1.avi\t3\t1\n{bad_line}\n")
        with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:4: expected 'relpath<TAB>label<TAB>group'"):
            read_manifest(bad)
    newer = tmp_path / "newer.txt"
    newer.write_text("# vganbench.subset/20\nA/v1.avi\t3\t1\n")
    with pytest.raises(ValueError, match="not a subset manifest"):
        read_manifest(newer)
