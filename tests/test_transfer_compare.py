"""Comparing sweeps: two real tiny sweeps (same tiny export, two probe recipes, debug executor,
linear-probe cells only) and a third on another split, then `transfer.compare` over them. The
numbers are checked against each sweep's own report/results.csv and report/paired.csv."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transfer.compare import main
from transfer.report.compare import CompareError, compare_sweeps
from transfer.report import write_report
from transfer.sweeps import SweepSpec, plan_sweep, run_sweep
from _tiny import TINY_RECIPE, tiny_sweep_spec, write_tiny_export

REPO_ROOT = Path(__file__).resolve().parents[1]
IMPROVED = TINY_RECIPE + ("probe.c_grid=[1.0,10.0]",)


def spec_for(root: Path, checkpoint: Path, out: str, **kw) -> SweepSpec:
    return tiny_sweep_spec(root, checkpoint, out, **{"protocols": ("linear",), **kw})


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("compare")
    checkpoint = write_tiny_export(root / "pre" / "discriminator.pt")
    done = {}
    for name, kw in (("original", {"splits": (1, 2, 3)}), ("improved", {"splits": (1, 2, 3), "overrides": IMPROVED}),
                     ("split2", {"splits": (2,), "fractions": (1.0,), "seeds": (0,)})):
        # the sweep's own tables (report/results.csv, paired.csv) without its figures and page: faster
        summary = run_sweep(spec_for(root, checkpoint, name, **kw), report=False)
        assert summary["status"]["failed"] == 0 and summary["status"]["done"] == summary["cells"]
        done[name] = Path(summary["out_dir"])
        # unequal seeds per split: drop a few cells (they become pending), then the sweep's tables
        for pattern in DROPPED.get(name, ()):
            [entry] = (done[name] / "ledger").glob(f"{pattern}-*.json")
            entry.unlink()
        write_report(done[name], figures=False)
    return {"root": root, "checkpoint": checkpoint, **done}


DROPPED = {"original": ("linear-random-split2-f0.1-sub1-seed1", "linear-pretrained-split3-f1-sub0-seed0"),
           "improved": ("linear-random-split1-f1-sub0-seed0",)}


def ledger_pairs(sweep: Path) -> dict[str, int]:
    """Per rule: the (split, seed) pairs with both inits done, counted from the ledger files."""
    seen: dict[tuple, set] = {}
    for path in (sweep / "ledger").glob("*.json"):
        entry = json.loads(path.read_text())
        if entry["status"] == "done":
            cell = entry["cell"]
            seen.setdefault((cell["rule_tag"], cell["split"], cell["seed"]), set()).add(cell["init"])
    pairs: dict[str, int] = {}
    for (rule, _, _), inits in seen.items():
        pairs[rule] = pairs.get(rule, 0) + (inits == {"pretrained", "random"})
    return pairs


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_number_is_the_sweeps_own(sweeps, tmp_path):
    out = tmp_path / "cmp"
    written = compare_sweeps([sweeps["original"], sweeps["improved"]], out, ["original", "improved"])
    for name in ("comparison.csv", "comparison_gain.csv", "comparison.md", "comparison.tex",
                 "comparison_accuracy.png", "comparison_accuracy.pdf", "comparison_gain.png", "comparison_gain.pdf"):
        assert written[name] == out / name and (out / name).stat().st_size > 0, name

    # comparison.csv: the label, then exactly the sweep's own results.csv row (same strings)
    rows = read_csv(out / "comparison.csv")
    gains = read_csv(out / "comparison_gain.csv")
    for label in ("original", "improved"):
        own = read_csv(sweeps[label] / "report" / "results.csv")
        mine = [{k: v for k, v in r.items() if k != "sweep"} for r in rows if r["sweep"] == label]
        assert own and sorted(map(str, mine)) == sorted(map(str, own)), label
        own_paired = read_csv(sweeps[label] / "report" / "paired.csv")
        mine = [{k: v for k, v in r.items() if k != "sweep"} for r in gains if r["sweep"] == label]
        assert own_paired and sorted(map(str, mine)) == sorted(map(str, own_paired)), label
    assert {r["sweep"] for r in rows} == {"original", "improved"}
    # pairs are (split, seed): 3 splits x 2 seeds, less the dropped cells
    for label in ("original", "improved"):
        got = {r["rule"]: int(r["pairs"]) for r in gains if r["sweep"] == label}
        assert got == ledger_pairs(sweeps[label]) and got != {"f0.1": 6, "f1": 6}, label
    # the two recipes really gave two sets of numbers (the probe's C grid differs)
    assert ([r["mean"] for r in rows if r["sweep"] == "original"]
            != [r["mean"] for r in rows if r["sweep"] == "improved"])

    md = (out / "comparison.md").read_text()
    # both sweeps' rows of one protocol/init/label count sit together, original first
    table = [line for line in md.splitlines() if line.startswith("| linear | pretrained |")]
    assert [re.split(r"\s*\|\s*", line)[5] for line in table[:2]] == ["original", "improved"]
    # what was compared: checkpoint sha, recipe, seeds, splits, the recipe setting that differs
    plan = json.loads((sweeps["original"] / "sweep.json").read_text())
    assert plan["checkpoint_sha256"][:12] in md
    assert "| probe.c_grid | [0.1, 1.0] | [1.0, 10.0] |" in md
    assert "| 1, 2, 3 | 0, 1 | fractions 0.1, 1 |" in md
    assert "Note:" not in md  # same data, same split, same test list
    for link in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", md):
        assert not link.startswith("/") and (out / link).is_file(), link
    assert "[report](" not in md  # no report.md in these sweep folders: no link to one
    assert "![" in md and "(comparison_accuracy.png)" in md and "(comparison_gain.png)" in md
    tex = (out / "comparison.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 2 and "original" in tex and "improved" in tex

    # label efficiency: each sweep's curves over one shared label range, from its own table rows
    from transfer.report.stats import label_efficiency
    efficiency = read_csv(out / "comparison_efficiency.csv")
    assert {r["sweep"] for r in efficiency} == {"original", "improved"}
    assert {r["init"] for r in efficiency} == {"pretrained", "random"}
    for label in ("original", "improved"):
        own = [{**r, "labeled_per_class": float(r["labeled_per_class"]), "mean": float(r["mean"])}
               for r in read_csv(sweeps[label] / "report" / "results.csv")]
        for row in (r for r in efficiency if r["sweep"] == label):
            spans = {row["protocol"]: (float(row["span_low"]), float(row["span_high"]))}
            [want] = [w for w in label_efficiency(own, span=spans)
                      if (w["protocol"], w["init"]) == (row["protocol"], row["init"])]
            assert float(row["area"]) == pytest.approx(want["area"], abs=1e-5), row
    assert "## Label efficiency" in md and "random init needs, to match at 1" in md


def test_other_split_is_compared_with_a_note(sweeps, tmp_path):
    out = tmp_path / "cmp"
    compare_sweeps([sweeps["original"], sweeps["split2"]], out, figures=False)
    md = (out / "comparison.md").read_text()
    # default labels: the folder names
    assert {r["sweep"] for r in read_csv(out / "comparison.csv")} == {"original", "split2"}
    assert "Note: these sweeps were not evaluated on the same test videos" in md
    assert "original: splits 1, 2, 3, test lists" in md and "split2: splits 2, test lists" in md
    assert "Note: these sweeps" in (out / "comparison.tex").read_text()


def test_bad_input_names_the_problem(sweeps, tmp_path):
    original, improved = sweeps["original"], sweeps["improved"]
    with pytest.raises(CompareError, match=rf"{re.escape(str(tmp_path))} is not a sweep folder: no sweep.json"):
        compare_sweeps([original, tmp_path], tmp_path / "out")
    with pytest.raises(CompareError, match=rf"sweep folder {re.escape(str(tmp_path / 'gone'))} does not exist"):
        compare_sweeps([original, tmp_path / "gone"], tmp_path / "out")
    with pytest.raises(CompareError, match=r"--labels gives 3 label\(s\) \(a, b, c\) for 2 sweep folder\(s\)"):
        compare_sweeps([original, improved], tmp_path / "out", ["a", "b", "c"])
    with pytest.raises(CompareError, match="repeats a label"):
        compare_sweeps([original, improved], tmp_path / "out", ["a", "a"])
    # planned (sweep.json, manifests) but nothing run: no done cell
    plan = plan_sweep(spec_for(sweeps["root"], sweeps["checkpoint"], "planned-only"))
    with pytest.raises(CompareError, match=rf"sweep {re.escape(str(plan.out_dir))} \(planned\) has no done cell"):
        compare_sweeps([original, plan.out_dir], tmp_path / "out", ["original", "planned"])
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_cli(sweeps, tmp_path, capsys):
    out = tmp_path / "cli"
    main([str(sweeps["original"]), str(sweeps["improved"]), "--labels", "original,improved",
          "--out", str(out), "--metric", "clip_acc"])
    assert "comparison.md" in capsys.readouterr().out
    assert "clip acc" in (out / "comparison.md").read_text()
    # a real process: exit status 2 and one clear line on stderr for a folder that is not a sweep
    done = subprocess.run([sys.executable, "-m", "transfer.compare", str(sweeps["original"]), str(tmp_path),
                           "--out", str(tmp_path / "x")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {tmp_path} is not a sweep folder: no sweep.json in it (a sweep folder "
                                   "is what `python transfer/sweep.py` writes under outputs/transfer/)")
