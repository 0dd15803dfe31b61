"""Several pretraining runs of one method in one sweep (`--checkpoint a.pt,b.pt,c.pt`).

Each run is a replicate: its cells carry its index and its export's hash, random init gets one
weight draw per replicate, the report's rows cover every replicate and pair pretrained replicate
r with random draw r.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transfer.report.stats import aggregate, paired_differences
from transfer.sweeps import plan_sweep, run_sweep
from transfer.sweeps.protocols import feature_set
from transfer.sweeps.spec import SweepError
from _tiny import tiny_sweep_spec, write_tiny_export


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicates")
    exports = [write_tiny_export(root / f"run{i}" / "discriminator.pt", seed=10 + i) for i in range(3)]
    spec = tiny_sweep_spec(root, ",".join(map(str, exports)), "sweep", protocols=("linear",), fractions=(1.0,),
                           seeds=(0, 1))
    summary = run_sweep(spec)
    return root, exports, spec, summary


def test_every_replicate_runs_every_cell_with_its_own_export(replicated):
    root, exports, spec, summary = replicated
    assert summary["status"]["done"] == 3 * 2 * 2  # replicates x inits x seeds
    plan = json.loads((Path(summary["out_dir"]) / "sweep.json").read_text())
    assert [r["checkpoint"] for r in plan["replicates"]] == [str(e) for e in exports]
    entries = [json.loads(p.read_text()) for p in sorted((Path(summary["out_dir"]) / "ledger").glob("*.json"))]
    by_replicate = {}
    for e in entries:
        by_replicate.setdefault(e["cell"]["replicate"], set()).add(e["result"]["checkpoint_sha256"])
    assert sorted(by_replicate) == [0, 1, 2]
    shas = [r["checkpoint_sha256"] for r in plan["replicates"]]
    assert [by_replicate[i] for i in range(3)] == [{s} for s in shas]
    cards = {(e["cell"]["init"], e["cell"]["replicate"]): e["result"]["protocol"]["weights"] for e in entries}
    assert cards[("random", 2)] == "random weight draw 2" and cards[("pretrained", 1)].startswith("pretraining run 1")


def test_random_init_draws_new_weights_per_replicate(replicated):
    root, exports, spec, summary = replicated
    plan = plan_sweep(spec)
    draws = [feature_set(plan.ctx.for_replicate(r), "random", "manifests/split1_train.txt", r)[0].features
             for r in range(2)]
    again = feature_set(plan.ctx.for_replicate(0), "random", "manifests/split1_train.txt", 0)[0].features
    assert not np.allclose(draws[0], draws[1]) and np.array_equal(draws[0], again)


def test_report_rows_cover_the_replicates_and_pair_them(replicated):
    root, exports, spec, summary = replicated
    entries = [json.loads(p.read_text()) for p in (Path(summary["out_dir"]) / "ledger").glob("*.json")]
    table = aggregate(entries)
    assert {r["replicates"] for r in table} == {3}
    assert {(r["init"], r["units"]) for r in table} == {
        ("pretrained", "3 pretraining runs x 2 subset draws (one seed each)"),
        ("random", "3 random weight draws x 2 subset draws (one seed each)")}
    paired = paired_differences(entries)[0]
    assert paired["pairs"] == 6 and paired["units"] == "3 pretraining runs x 2 subset draws (one seed each)"
    md = (Path(summary["out_dir"]) / "report.md").read_text()
    assert "3 pretraining runs (replicates 0-2" in md
    assert "One pretraining run behind" not in md


def test_one_checkpoint_keeps_its_cell_ids(replicated):
    root, exports, spec, summary = replicated
    one = plan_sweep(tiny_sweep_spec(root, exports[0], "sweep-one", protocols=("linear",), fractions=(1.0,),
                                     seeds=(0, 1)))
    many = plan_sweep(spec)
    assert {c.cell_id for c in one.cells} == {c.cell_id for c in many.cells if c.replicate == 0}
    assert all("-rep" not in c.cell_id for c in one.cells)


def test_replicate_errors(replicated, tmp_path):
    root, exports, spec, summary = replicated
    with pytest.raises(SweepError, match="given twice"):
        plan_sweep(tiny_sweep_spec(root, f"{exports[0]},{exports[0]}", "x"))
    copy = tmp_path / "copy" / "discriminator.pt"
    copy.parent.mkdir()
    copy.write_bytes(exports[0].read_bytes())
    with pytest.raises(SweepError, match="same file contents"):
        plan_sweep(tiny_sweep_spec(root, f"{exports[0]},{copy}", "x"))
    other = write_tiny_export(tmp_path / "small" / "discriminator.pt", size=32)
    with pytest.raises(SweepError, match="share a clip shape"):
        plan_sweep(tiny_sweep_spec(root, f"{exports[0]},{other}", "x"))
    with pytest.raises(SweepError, match="--trajectory: .* keeps no snapshots"):
        plan_sweep(tiny_sweep_spec(root, f"{exports[0]},{exports[1]}", "x", trajectory=True))


def test_random_fine_tune_replicates_seed_their_own_weights(replicated):
    root, exports, spec, summary = replicated
    cells = {(c.init, c.replicate, c.seed): c for c in plan_sweep(spec).cells}
    assert cells[("pretrained", 2, 1)].training_seed == 1  # the pretraining run is the weights
    assert cells[("random", 0, 1)].training_seed == 1      # as a one-checkpoint sweep
    seeds = {cells[("random", r, 1)].training_seed for r in range(3)}
    assert len(seeds) == 3
