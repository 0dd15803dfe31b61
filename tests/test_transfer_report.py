"""Aggregation, paired differences, tables and figures regenerated from a ledger."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from transfer.ledger import Ledger
from transfer.report import write_report
from transfer.report.stats import aggregate, paired_differences, summarize


def entry(protocol, init, split, seed, rule, per_class, acc):
    cell = {"protocol": protocol, "init": init, "split": split, "seed": seed, "rule_tag": rule,
            "rule_value": 0.0}
    return {"cell_id": f"{protocol}_{init}_{split}_{rule}_{seed}", "status": "done", "cell": cell,
            "result": {"video_acc": acc, "clip_acc": acc, "labeled_per_class": per_class,
                       "num_classes": 10}}


# (split, seed) -> (pretrained, random) accuracy at f1; unequal seeds per split, seed 0 in all three,
# so pairing by seed alone (or across splits) gives other pairs and other numbers
RUNS = {(1, 0): (0.50, 0.40), (1, 1): (0.60, 0.45), (1, 2): (0.70, 0.47),
        (2, 0): (0.55, 0.50), (2, 1): (0.65, 0.52),
        (3, 0): (0.80, 0.60)}


def fake_ledger():
    rows = []
    for (split, seed), (p, r) in RUNS.items():
        rows.append(entry("finetune", "pretrained", split, seed, "f1", 72, p))
        rows.append(entry("finetune", "random", split, seed, "f1", 72, r))
        rows.append(entry("finetune", "pretrained", split, seed, "f0.1", 7, p / 2))
        rows.append(entry("finetune", "random", split, seed, "f0.1", 7, r / 2))
    rows.append({"cell_id": "x", "status": "failed", "cell": {}, "result": None})
    return rows


def test_summarize_t_interval():
    s = summarize([0.5, 0.6, 0.7])
    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.1)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.6 - half, 0.6 + half))
    assert summarize([0.3]).ci_low == summarize([0.3]).ci_high == 0.3


def test_aggregate_and_paired_over_splits_and_seeds():
    table = aggregate(fake_ledger())
    assert [(r["init"], r["rule"], r["n"]) for r in table] == [
        ("pretrained", "f0.1", 6), ("pretrained", "f1", 6), ("random", "f0.1", 6), ("random", "f1", 6)]
    pretrained = [p for p, _ in RUNS.values()]
    assert table[1]["mean"] == pytest.approx(sum(pretrained) / 6)
    assert table[1]["std"] == pytest.approx(stats.tstd(pretrained))
    paired = paired_differences(fake_ledger())
    full = [r for r in paired if r["rule"] == "f1"][0]
    diffs = [0.10, 0.15, 0.23, 0.05, 0.13, 0.20]  # by hand from RUNS, one per (split, seed)
    assert full["pairs"] == 6
    assert full["diff_mean"] == pytest.approx(sum(diffs) / 6)
    random_mean = (0.40 + 0.45 + 0.47 + 0.50 + 0.52 + 0.60) / 6
    assert full["relative_gain"] == pytest.approx((sum(pretrained) / 6) / random_mean)
    low, high = stats.t.interval(0.95, 5, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert (full["ci_low"], full["ci_high"]) == pytest.approx((low, high))


def test_unpaired_cells_are_left_out_of_differences():
    # split 2 loses its random seed 1, split 3 its pretrained seed 0: 4 pairs remain
    rows = [r for r in fake_ledger()[:-1]
            if (r["cell"]["split"], r["cell"]["seed"], r["cell"]["init"]) not in {(2, 1, "random"), (3, 0, "pretrained")}]
    full = [r for r in paired_differences(rows) if r["rule"] == "f1"][0]
    assert full["pairs"] == 4
    assert full["diff_mean"] == pytest.approx((0.10 + 0.15 + 0.23 + 0.05) / 4)


def test_write_report_from_ledger_alone(tmp_path):
    led = Ledger(tmp_path / "ledger")
    for e in fake_ledger():
        if e["status"] == "done":
            led.mark_done(e["cell_id"], e["cell"], e["result"])
    written = write_report(tmp_path)
    for name in ("results.csv", "results.md", "results.tex", "paired.csv", "paired.md",
                 "accuracy_vs_labels.png", "accuracy_vs_labels.pdf", "relative_gain.png",
                 "relative_gain.pdf"):
        assert written[name].is_file() and written[name].stat().st_size > 0, name
    md = written["results.md"].read_text()
    assert "63.3 ± 10.8" in md  # pretrained at f1: mean and sample std of RUNS' six values
    assert r"\pm" in written["results.tex"].read_text()
    first = {k: p.read_bytes() for k, p in written.items() if p.suffix in (".csv", ".md", ".tex")}
    again = write_report(tmp_path, figures=False)
    assert {k: again[k].read_bytes() for k in first} == first


def test_report_keeps_only_the_cells_of_the_current_plan(tmp_path):
    import json

    led = Ledger(tmp_path / "ledger")
    current = [e for e in fake_ledger() if e["status"] == "done"]
    for e in current:
        led.mark_done(e["cell_id"], e["cell"], e["result"])
    stale = entry("finetune", "pretrained", 1, 0, "f1", 72, 0.0)
    stale["cell_id"] = "finetune_pretrained_old_recipe"
    led.mark_done(stale["cell_id"], stale["cell"], stale["result"])
    (tmp_path / "sweep.json").write_text(json.dumps({"cells": [e["cell_id"] for e in current]}))
    md = write_report(tmp_path, figures=False)["results.md"].read_text()
    assert "| 72 | 6 | 63.3 ± 10.8 |" in md and "| 72 | 7 |" not in md
