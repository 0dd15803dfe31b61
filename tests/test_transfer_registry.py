"""The results registry: one JSON row per result, merged into leaderboards that never rank
results of different protocols together."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from transfer.report.registry import RegistryError, leaderboard, read_records, result_records, write_leaderboard
from transfer.sweeps import run_sweep
from _tiny import tiny_sweep_spec, write_tiny_export

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory):
    """Two 'methods' (two exports of one backbone) swept with the linear and k-NN probes."""
    root = tmp_path_factory.mktemp("registry")
    sweeps = []
    for name, seed in (("alpha", 1), ("beta", 2)):
        export = write_tiny_export(root / name / "discriminator.pt", seed=seed)
        spec = tiny_sweep_spec(root, export, f"sweep-{name}", protocols=("linear", "knn"), fractions=(1.0,),
                               seeds=(0, 1))
        sweeps.append(Path(run_sweep(spec)["out_dir"]))
    return root, sweeps


def test_one_row_per_result_with_its_key_hashes_and_runs(two_methods):
    _, (alpha, _) = two_methods
    rows = [json.loads(line) for line in (alpha / "report" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["protocol_key"]["protocol"], r["init"]) for r in rows) == [
        ("knn", "pretrained"), ("knn", "random"), ("linear", "pretrained"), ("linear", "random")]
    row = next(r for r in rows if r["init"] == "pretrained" and r["protocol_key"]["protocol"] == "linear")
    plan = json.loads((alpha / "sweep.json").read_text())
    assert row["exports"] == [{"path": plan["checkpoint"], "sha256": plan["checkpoint_sha256"]}]
    assert row["n"] == 2 and row["per_replicate"].keys() == {"0"} and len(row["manifests_sha256"]) == 2
    assert row["protocol_key"]["evaluation"] == "test" and len(row["protocol_key"]["test_lists_sha256"]) == 1
    assert "torch" in row["versions"]
    assert row == {**result_records(alpha)[rows.index(row)], "versions": row["versions"]}


def test_leaderboard_ranks_within_a_protocol_key_and_shows_random_once(two_methods, tmp_path):
    _, sweeps = two_methods
    written = write_leaderboard([str(s) for s in sweeps], tmp_path, labels=["alpha", "beta"])
    tables = leaderboard([r for s in sweeps for r in read_records(s)])
    assert len(tables) == 2  # linear and k-NN never share a ranking
    for key, ranked in tables:
        assert len({r["protocol_key_id"] for r in ranked}) == 1
        assert sum(r["init"] == "random" for r in ranked) == 1  # one backbone: one random-init row
        assert [r["mean"] for r in ranked] == sorted((r["mean"] for r in ranked), reverse=True)
    md = written["leaderboard.md"].read_text()
    assert md.count("### synthetic") == 2 and "alpha" in md and "beta" in md
    assert written["leaderboard.html"].read_text().startswith("<!DOCTYPE html>")
    assert len(written["leaderboard.csv"].read_text().splitlines()) == 1 + 2 * 3


def test_bad_sources_are_one_error_line(tmp_path):
    bad = tmp_path / "results.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(RegistryError, match="not a results.jsonl file"):
        read_records(bad)
    done = subprocess.run([sys.executable, "-m", "transfer.leaderboard", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "neither a sweep folder" in done.stderr
