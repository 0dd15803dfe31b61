"""Canonical label subsets shipped with the suite (transfer.canonical)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from transfer import canonical
from transfer.canonical import BUDGETS, CANONICAL_DIR, DRAWS, CanonicalError, canonical_subset, list_path
from transfer.subsets import SubsetRule, read_subset_list
from videodata import ucf101


@pytest.mark.shared_data
def test_the_shipped_ucf101_lists_are_remade_exactly_from_the_official_lists(ucf_lists, tmp_path):
    entry = canonical.make("ucf101", ucf_lists, tmp_path)
    shipped = json.loads((CANONICAL_DIR / "index.json").read_text())["ucf101"]
    assert entry == shipped and len(entry) == 3
    assert sum(len(d) for budgets in entry.values() for d in budgets.values()) == 3 * 5 * DRAWS
    for split in (1, 2, 3):
        train = {r.relpath: r for r in ucf101.read_split(ucf_lists, split, "train")}
        for draw in range(DRAWS):
            lists = {r.tag: read_subset_list(list_path("ucf101", split, r, draw)) for r in BUDGETS["ucf101"]}
            # nested within a draw, every class kept, all from the official training list
            assert set(lists["k1"]) <= set(lists["k3"]) <= set(lists["k10"])
            assert set(lists["f0.01"]) <= set(lists["f0.1"])
            assert len(lists["k1"]) == 101 and len({train[p].label for p in lists["k1"]}) == 101
            assert set(lists["k10"]) <= set(train)
        # draws differ
        assert read_subset_list(list_path("ucf101", split, SubsetRule(per_class=3), 0)) != \
            read_subset_list(list_path("ucf101", split, SubsetRule(per_class=3), 1))


def test_a_changed_or_missing_list_is_refused(tmp_path):
    root = tmp_path / "canonical"
    shutil.copytree(CANONICAL_DIR, root)
    rule = SubsetRule(per_class=1)
    path = list_path("ucf101", 1, rule, 0, root)
    with pytest.raises(CanonicalError, match="not in the split's training list"):
        canonical_subset("ucf101", 1, rule, 0, [], root)  # the list itself is intact: the records do not match
    path.write_text(path.read_text() + "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    with pytest.raises(CanonicalError, match="changed since it was made"):
        canonical_subset("ucf101", 1, rule, 0, [], root)
    with pytest.raises(CanonicalError, match="no canonical ucf101 subset for split 1, k2"):
        canonical_subset("ucf101", 1, SubsetRule(per_class=2), 0, [], root)
    with pytest.raises(CanonicalError, match="draw 5"):
        canonical_subset("ucf101", 1, rule, 5, [], root)


def test_an_hmdb51_sweep_runs_on_its_canonical_lists(tmp_path, monkeypatch):
    """The make command on HMDB51's split files (the synthetic mirror's), then a sweep over them:
    its subsets are the lists, draw d of a budget as subset draw d, named on the protocol card."""
    from _tiny import TINY_SET, tiny_sweep_spec, write_tiny_export
    from transfer.ledger import Ledger
    from transfer.subsets import read_manifest
    from transfer.sweeps import SweepError, plan_sweep, run_sweep
    from videodata.synthetic import SyntheticConfig, generate

    layout = generate(SyntheticConfig(root=str(tmp_path / "data"), **{**TINY_SET, "layout": "hmdb51"}))
    lists_root = tmp_path / "lists"
    assert canonical.main(["--data", "hmdb51", "--lists", str(layout.lists_dir), "--splits", "1",
                           "--out", str(lists_root)]) == 0
    monkeypatch.setattr(canonical, "CANONICAL_DIR", lists_root)
    checkpoint = write_tiny_export(tmp_path / "pre" / "discriminator.pt")
    spec = tiny_sweep_spec(tmp_path, checkpoint, "canon", data="hmdb51", root=str(tmp_path / "data"), synthetic={},
                           fractions=(), per_class=(1,), seeds=(0,), subset_seeds=(0, 1), protocols=("linear",),
                           inits=("pretrained",), canonical=True)
    summary = run_sweep(spec, report=False)
    assert summary["status"]["done"] == 2
    out = Path(summary["out_dir"])
    for draw in (0, 1):
        listed = read_subset_list(lists_root / "hmdb51" / "split1" / f"k1-draw{draw}.txt")
        manifest = read_manifest(out / "manifests" / f"split1_k1_seed{draw}.txt")
        assert list(manifest.relpaths) == listed and manifest.source.startswith("canonical hmdb51 split1/k1-draw")
    cards = [e["result"]["protocol"] for e in Ledger(out / "ledger").entries()]
    assert sorted(c["subset_seed"] for c in cards) == [0, 1]
    assert all(c["subset_source"].startswith("canonical hmdb51") for c in cards)
    with pytest.raises(SweepError, match="--canonical: no canonical hmdb51 subset for split 1, k2"):
        plan_sweep(tiny_sweep_spec(tmp_path, checkpoint, "canon2", data="hmdb51", root=str(tmp_path / "data"),
                                   synthetic={}, fractions=(), per_class=(2,), seeds=(0,), canonical=True))
    with pytest.raises(SweepError, match="--canonical with --validate"):
        plan_sweep(tiny_sweep_spec(tmp_path, checkpoint, "canon3", data="hmdb51", root=str(tmp_path / "data"),
                                   synthetic={}, per_class=(1,), seeds=(0,), canonical=True, validate=True))
