"""Aggregation, paired differences, tables and figures regenerated from a ledger."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from transfer.ledger import Ledger
from transfer.report import write_report
from transfer.report.stats import (Summary, aggregate, current_entries, paired_differences, result_rows, run_values,
                                   summarize, variance_components)


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


def _per_seed_means(index):
    """RUNS averaged over each seed's splits first (the design's units), by hand."""
    by_seed = {}
    for (split, seed), values in RUNS.items():
        by_seed.setdefault(seed, []).append(values[index] if index is not None else values[0] - values[1])
    return [float(np.mean(v)) for _, v in sorted(by_seed.items())]


def test_aggregate_and_paired_over_splits_and_seeds():
    table = aggregate(fake_ledger())
    assert [(r["init"], r["rule"], r["n"]) for r in table] == [
        ("pretrained", "f0.1", 6), ("pretrained", "f1", 6), ("random", "f0.1", 6), ("random", "f1", 6)]
    pretrained = [p for p, _ in RUNS.values()]
    # seeds ran on different splits (0: 1,2,3; 1: 1,2; 2: 1): each seed's run is averaged over its
    # splits, and the interval is a t-interval over the 3 seeds' means, not over 6 runs
    units = _per_seed_means(0)
    assert table[1]["mean"] == pytest.approx(np.mean(units))
    assert table[1]["std"] == pytest.approx(stats.tstd(pretrained))  # the runs' spread, as described
    low, high = stats.t.interval(0.95, 2, loc=np.mean(units), scale=stats.sem(units))
    assert (table[1]["ci_low"], table[1]["ci_high"]) == pytest.approx((low, min(high, 1.0)))
    assert table[1]["interval"] == "incomplete" and table[1]["df"] == 2
    paired = paired_differences(fake_ledger())
    full = [r for r in paired if r["rule"] == "f1"][0]
    diffs = _per_seed_means(None)  # by hand from RUNS: each (split, seed)'s difference, per seed
    assert full["pairs"] == 6
    assert full["diff_mean"] == pytest.approx(np.mean(diffs))
    assert full["relative_gain"] == pytest.approx(np.mean(units) / np.mean(_per_seed_means(1)))
    low, high = stats.t.interval(0.95, 2, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert (full["ci_low"], full["ci_high"]) == pytest.approx((low, high))


def test_unpaired_cells_are_left_out_of_differences():
    # split 2 loses its random seed 1, split 3 its pretrained seed 0: 4 pairs remain
    rows = [r for r in fake_ledger()[:-1]
            if (r["cell"]["split"], r["cell"]["seed"], r["cell"]["init"]) not in {(2, 1, "random"), (3, 0, "pretrained")}]
    full = [r for r in paired_differences(rows) if r["rule"] == "f1"][0]
    assert full["pairs"] == 4
    # seed 0's pairs (split 1: 0.10, split 2: 0.05) are one unit, averaged first
    assert full["diff_mean"] == pytest.approx(((0.10 + 0.05) / 2 + 0.15 + 0.23) / 3)


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
    assert "64.7 ± 10.8" in md  # pretrained at f1: the design's mean and the sample std of RUNS' six values
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
    assert "| 72 | 6 | 64.7 ± 10.8 |" in md and "| 72 | 7 |" not in md


# ------------------------------------------------------------------ statistics, number by number

def run(protocol="finetune", init="pretrained", split=1, seed=0, rule="f0.1", acc=0.5, per_class=7.0,
        subset_seed=None, clips=None, status="done", **result):
    cell = {"protocol": protocol, "init": init, "split": split, "seed": seed, "rule_tag": rule, "rule_value": 0.1}
    if subset_seed is not None:
        cell["subset_seed"] = subset_seed
    res = {"video_acc": acc, "clip_acc": acc / 2, "labeled_per_class": per_class, "num_classes": 10, **result}
    if clips is not None:
        res["clips_per_video"] = clips
    cell_id = f"{protocol}-{init}-{split}-{subset_seed}-{seed}-{rule}"
    return {"cell_id": cell_id, "status": status, "cell": cell, "result": res}


def test_summarize_edges_and_confidence_level():
    with pytest.raises(ValueError, match="^cannot summarize an empty set of values$"):
        summarize([])
    assert summarize([0.4]) == Summary(1, 0.4, 0.0, 0.4, 0.4)
    s = summarize([1, 2, 3, 6], confidence=0.9)
    half = stats.t.ppf(0.95, 3) * np.std([1, 2, 3, 6], ddof=1) / 2
    assert s.n == 4 and isinstance(s.n, int) and s.mean == 3.0
    assert (s.ci_low, s.ci_high) == pytest.approx((3.0 - half, 3.0 + half))
    # float32 accuracies (e.g. from a tensor) are averaged in float64: 1e8 + 1 is exact there
    assert summarize(np.array([1e8, 1.0, -1e8], dtype=np.float32)).mean == pytest.approx(1 / 3)


def test_result_rows_fields_defaults_and_errors():
    rows = result_rows([run(seed=4, clips=10), run(status="running"), run(seed=5, subset_seed=2)], "clip_acc")
    assert rows == [
        {"protocol": "finetune", "init": "pretrained", "split": 1, "replicate": 0, "subset_seed": 4, "seed": 4, "rule": "f0.1",
         "rule_value": 0.1, "per_class": 7.0, "num_classes": 10, "value": 0.25, "test_clips": 10},
        {"protocol": "finetune", "init": "pretrained", "split": 1, "replicate": 0, "subset_seed": 2, "seed": 5, "rule": "f0.1",
         "rule_value": 0.1, "per_class": 7.0, "num_classes": 10, "value": 0.25, "test_clips": 0}]
    with pytest.raises(KeyError, match=r"ledger entry finetune-pretrained-1-None-0-f0.1 has no metric 'top9'"):
        result_rows([run()], "top9")


def test_aggregate_protocol_card_and_order():
    entries = [run(split=2, seed=3, subset_seed=1, acc=0.6, clips=10), run(split=1, seed=3, subset_seed=0, acc=0.4,
                                                                           clips=10),
               run(split=2, seed=1, subset_seed=1, acc=0.5, clips=5),
               run(init="random", rule="f1", per_class=70.0, acc=0.3), run(init="random", acc=0.2),
               run(protocol="linear", rule="list-pub", per_class=2.0, acc=0.7),
               run(rule="f0.5", per_class=3.0, acc=0.1)]
    table = aggregate(entries)
    assert [(r["protocol"], r["init"], r["rule"]) for r in table] == [
        ("finetune", "pretrained", "f0.5"), ("finetune", "pretrained", "f0.1"), ("finetune", "random", "f0.1"),
        ("finetune", "random", "f1"), ("linear", "pretrained", "list-pub")]
    row = table[1]
    assert (row["n"], row["splits"], row["subsets"], row["seeds"], row["test_clips"]) == (3, "1,2", "draws 0,1", "1,3",
                                                                                          "5,10")
    # 3 of the 2 x 2 (subset draw x seed) units: incomplete, so the mean of the subset draws' means
    assert row["mean"] == pytest.approx((0.4 + (0.6 + 0.5) / 2) / 2) and row["interval"] == "incomplete"
    assert row["labeled_per_class"] == 7.0 and row["num_classes"] == 10
    assert table[4]["subsets"] == "list pub" and table[4]["n"] == 1 and table[4]["std"] == 0.0
    assert run_values(entries) == {("finetune", "pretrained", "f0.1"): [0.6, 0.4, 0.5],
                                   ("finetune", "random", "f1"): [0.3], ("finetune", "random", "f0.1"): [0.2],
                                   ("linear", "pretrained", "list-pub"): [0.7],
                                   ("finetune", "pretrained", "f0.5"): [0.1]}
    assert run_values(entries, "clip_acc")[("finetune", "random", "f1")] == [0.15]


def test_paired_differences_pair_by_split_subset_and_seed():
    entries = [run(subset_seed=0, seed=0, acc=0.6), run(init="random", subset_seed=0, seed=0, acc=0.4),
               run(subset_seed=1, seed=0, acc=0.9), run(init="random", subset_seed=1, seed=0, acc=0.6),
               run(subset_seed=2, seed=0, acc=0.5),  # its random run is missing: no pair
               run(rule="f1", per_class=70.0, acc=0.5), run(init="random", rule="f1", per_class=70.0, acc=0.0),
               run(protocol="linear", acc=0.3), run(protocol="linear", init="random", acc=0.2)]
    table = paired_differences(entries)
    assert [(r["protocol"], r["rule"]) for r in table] == [("finetune", "f0.1"), ("finetune", "f1"), ("linear", "f0.1")]
    draws = table[0]
    assert draws["pairs"] == 2 and draws["diff_mean"] == pytest.approx(0.25)
    assert (draws["treated_mean"], draws["baseline_mean"]) == pytest.approx((0.75, 0.5))
    assert draws["relative_gain"] == pytest.approx(1.5) and draws["labeled_per_class"] == 7.0
    assert draws["diff_std"] == pytest.approx(np.std([0.2, 0.3], ddof=1))
    assert math.isnan(table[1]["relative_gain"])  # a zero baseline has no relative gain
    assert table[1]["pairs"] == 1 and table[1]["ci_low"] == table[1]["ci_high"] == pytest.approx(0.5)
    # the two inits compared are arguments: random over pretrained is the negative difference
    swapped = paired_differences(entries, "clip_acc", treated="random", baseline="pretrained")
    assert swapped[0]["diff_mean"] == pytest.approx(-0.125) and swapped[0]["relative_gain"] == pytest.approx(0.5 / 0.75)


def grid_entries(grid, split=1, **kw):
    return [run(split=split, subset_seed=a, seed=b, acc=float(v), **kw)
            for a, row in enumerate(grid) for b, v in enumerate(row)]


def anova(grid):
    """Textbook two-way ANOVA without replication, from sums of squares."""
    g = np.asarray(grid, dtype=float)
    s, r = g.shape
    ss_total = ((g - g.mean()) ** 2).sum()
    ss_rows = r * ((g.mean(axis=1) - g.mean()) ** 2).sum()
    ss_cols = s * ((g.mean(axis=0) - g.mean()) ** 2).sum()
    ms_resid = (ss_total - ss_rows - ss_cols) / ((s - 1) * (r - 1))
    return (max(0.0, (ss_rows / (s - 1) - ms_resid) / r), max(0.0, (ss_cols / (r - 1) - ms_resid) / s), ms_resid)


def test_variance_components_by_hand_and_against_the_textbook():
    # 2 x 2 by hand: row means .55/.25 -> MS_subset .09; column means equal -> MS_seed 0;
    # interaction (.6 - .5 - .2 + .3)^2 / 4 = .01; subset (.09 - .01) / 2 = .04; seed clipped at 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one split: no variance over splits is attempted (no NaN warning)
        [row] = variance_components(grid_entries([[0.6, 0.5], [0.2, 0.3]]))
    assert row["separable"] is True and row["runs"] == 4 and row["split_var"] == 0.0
    assert (row["subset_var"], row["seed_var"], row["residual_var"]) == pytest.approx((0.04, 0.0, 0.01))
    assert row["total_var"] == pytest.approx(0.1 / 3)
    grid = [[0.61, 0.52, 0.40], [0.35, 0.50, 0.47], [0.58, 0.44, 0.66], [0.30, 0.41, 0.39]]  # 4 draws x 3 seeds
    [row] = variance_components(grid_entries(grid))
    assert (row["subset_var"], row["seed_var"], row["residual_var"]) == pytest.approx(anova(grid))
    assert (row["protocol"], row["init"], row["rule"], row["labeled_per_class"]) == ("finetune", "pretrained",
                                                                                     "f0.1", 7.0)


def test_variance_components_across_splits():
    g1, g2 = [[0.6, 0.5], [0.2, 0.3]], [[0.9, 1.0], [0.9, 1.0]]
    [row] = variance_components(grid_entries(g1, split=1) + grid_entries(g2, split=2))
    # per split (subset, seed, rest): (.04, 0, .01) and (0, .005, 0); the split means .4 and .95 vary
    # by .15125, of which the within-split terms explain mean(.04/2 + .01/4, .005/2) = .0125
    assert (row["subset_var"], row["seed_var"], row["residual_var"]) == pytest.approx((0.02, 0.0025, 0.005))
    assert row["split_var"] == pytest.approx(0.15125 - 0.0125) and row["runs"] == 8
    [close] = variance_components(grid_entries(g1, split=1) + grid_entries(g1, split=2))
    assert close["split_var"] == 0.0  # identical splits: clipped at zero, not negative
    # 3 draws x 2 seeds in one split, 2 x 4 in another: each term divides by its own count
    g3 = [[0.61, 0.52], [0.35, 0.50], [0.58, 0.44]]
    g4 = [[0.9, 0.7, 0.8, 0.95], [0.6, 0.75, 0.7, 0.65]]
    [row] = variance_components(grid_entries(g3, split=1) + grid_entries(g4, split=2))
    (a3, b3, e3), (a4, b4, e4) = anova(g3), anova(g4)
    expected = np.mean([a3 / 3 + b3 / 2 + e3 / 6, a4 / 2 + b4 / 4 + e4 / 8])
    split_means = [np.mean(g3), np.mean(g4)]
    assert row["split_var"] == pytest.approx(np.var(split_means, ddof=1) - expected)
    assert (row["subset_var"], row["seed_var"], row["residual_var"]) == pytest.approx(
        ((a3 + a4) / 2, (b3 + b4) / 2, (e3 + e4) / 2))


def test_variance_components_say_when_they_cannot_separate():
    complete = grid_entries([[0.6, 0.5], [0.2, 0.3]])
    cases = {"a missing run": complete[:3], "one draw": grid_entries([[0.6, 0.5, 0.4]]),
             "one seed": grid_entries([[0.6], [0.5]]),
             "one split incomplete": complete + grid_entries([[0.6, 0.5], [0.2]], split=2)}
    for name, entries in cases.items():
        [row] = variance_components(entries)
        assert row["separable"] is False, name
        assert all(math.isnan(row[k]) for k in ("subset_var", "seed_var", "split_var", "residual_var")), name
        assert row["runs"] == len(entries) and row["total_var"] == pytest.approx(
            np.var([e["result"]["video_acc"] for e in entries], ddof=1)), name
    [single] = variance_components(complete[:1])
    assert single["total_var"] == 0.0 and single["separable"] is False


def test_variance_component_rows_are_ordered_like_the_tables():
    entries = ([run(init="random", rule="f0.2", per_class=14.0)]  # not separable, and first: the rest still come
               + grid_entries([[0.6, 0.5], [0.2, 0.3]], init="random") + grid_entries([[0.6, 0.5], [0.2, 0.3]])
               + grid_entries([[0.1, 0.2], [0.3, 0.5]], rule="f1", per_class=70.0)
               + grid_entries([[0.1, 0.2], [0.3, 0.5]], rule="f0.5", per_class=3.0))
    rows = variance_components(entries)
    assert [(r["init"], r["rule"], r["separable"]) for r in rows] == [
        ("pretrained", "f0.5", True), ("pretrained", "f0.1", True), ("pretrained", "f1", True),
        ("random", "f0.1", True), ("random", "f0.2", False)]
    assert variance_components(entries, "clip_acc")[1]["subset_var"] == pytest.approx(0.01)


def test_current_entries_without_a_plan_is_the_whole_ledger(tmp_path):
    led = Ledger(tmp_path / "ledger")
    for e in grid_entries([[0.6, 0.5]]):
        led.mark_done(e["cell_id"], e["cell"], e["result"])
    assert sorted(e["cell_id"] for e in current_entries(tmp_path)) == sorted(
        e["cell_id"] for e in grid_entries([[0.6, 0.5]]))


def test_label_efficiency_by_hand():
    """Curves piecewise linear in log labels: at labels 1, 10, 100 per class, random init reads
    0.2, 0.4, 0.6 and pretrained 0.5, 0.6, 0.7."""
    from transfer.report.stats import area_over_log_labels, label_efficiency, labels_to_reach, value_at

    def rows(init, values):
        return [{"protocol": "finetune", "init": init, "labeled_per_class": k, "mean": v}
                for k, v in zip((1.0, 10.0, 100.0), values)]
    random_curve = [(1.0, 0.2), (10.0, 0.4), (100.0, 0.6)]
    assert value_at(random_curve, math.sqrt(10)) == pytest.approx(0.3)  # halfway in log labels
    assert value_at(random_curve, 0.5) is None and value_at(random_curve, 200) is None  # no extrapolation
    # a straight line in log labels from 0.2 to 0.6: its mean is the midpoint
    assert area_over_log_labels(random_curve, 1, 100) == pytest.approx(0.4)
    assert area_over_log_labels(random_curve, 1, 10) == pytest.approx(0.3)
    assert area_over_log_labels(random_curve, 0.5, 10) is None
    assert labels_to_reach(random_curve, 0.5) == (pytest.approx(math.sqrt(1000)), "")  # 10^1.5
    assert labels_to_reach(random_curve, 0.1) == (1.0, "<=")
    assert labels_to_reach(random_curve, 0.9) == (100.0, ">")
    table = rows("random", (0.2, 0.4, 0.6)) + rows("pretrained", (0.5, 0.6, 0.7))
    by_init = {r["init"]: r for r in label_efficiency(table, at=(1, 7))}
    pre = by_init["pretrained"]
    assert pre["area"] == pytest.approx(0.6)
    assert pre["accuracy_at_1"] == pytest.approx(0.5)
    # random reaches 0.5 at 10^1.5 ~ 31.6 labels per class: one pretrained label is worth ~32
    assert pre["random_labels_at_1"] == pytest.approx(10 ** 1.5) and pre["random_labels_at_1_qualifier"] == ""
    at7 = 0.5 + 0.1 * math.log10(7)
    assert pre["accuracy_at_7"] == pytest.approx(at7)
    assert pre["random_labels_at_7"] == pytest.approx(10 ** (1 + (at7 - 0.4) / 0.2))
    assert by_init["random"]["random_labels_at_1"] == pytest.approx(1.0)  # the floor matches itself
    # a given span (the range every compared sweep measured) replaces each table's own
    assert label_efficiency(table, span={"finetune": (1, 10)})[0]["area"] == pytest.approx(0.55)


def test_label_efficiency_edges():
    from transfer.report.stats import area_over_log_labels, label_efficiency, labels_to_reach, value_at

    bent = [(1.0, 0.2), (10.0, 0.5), (100.0, 0.6)]  # not a straight line in log labels
    assert value_at(bent, math.sqrt(1000)) == pytest.approx(0.55)  # from its own segment, not the chord
    # two rules at the same label count are one point of the curve, their mean, wherever they lie
    from transfer.report.stats import curve
    rows = [{"protocol": "linear", "init": "random", "labeled_per_class": k, "mean": v}
            for k, v in ((1.0, 0.2), (5.0, 0.4), (5.0, 0.6), (10.0, 0.8))]
    assert curve(rows, "linear", "random") == [(1.0, 0.2), (5.0, pytest.approx(0.5)), (10.0, 0.8)]
    assert value_at(curve(rows, "linear", "random"), 5.0) == pytest.approx(0.5)
    assert value_at(curve(rows[1:], "linear", "random"), 5.0) == pytest.approx(0.5)
    assert value_at([(7.0, 0.5)], 7.0) == 0.5 and value_at([(7.0, 0.5)], 8.0) is None
    assert value_at([], 7.0) is None
    straight = [(1.0, 0.2), (10.0, 0.4), (100.0, 0.6)]
    assert area_over_log_labels(straight, 10, 100) == pytest.approx(0.5)
    assert area_over_log_labels(bent, 1, 100) == pytest.approx((0.35 + 0.55) / 2)
    assert area_over_log_labels(straight, 1, 1000) is None  # beyond the last point
    assert area_over_log_labels(straight, 10, 10) is None and area_over_log_labels(straight, 20, 10) is None
    assert area_over_log_labels([], 1, 10) is None
    assert labels_to_reach([], 0.5) == (None, "")
    assert labels_to_reach(straight, 0.3) == (pytest.approx(math.sqrt(10)), "")
    assert labels_to_reach(straight, 0.4) == (pytest.approx(10.0), "")  # reached exactly at a point
    assert labels_to_reach(bent, 0.55) == (pytest.approx(10 ** 1.5), "")
    table = [{"protocol": p, "init": i, "labeled_per_class": k, "mean": v}
             for p in ("finetune", "linear") for i, shift in (("random", 0.0), ("pretrained", 0.2))
             for k, v in ((1.0, 0.2 + shift), (10.0, 0.4 + shift))]
    table = [r for r in table if not (r["protocol"] == "linear" and r["init"] == "random")]
    rows = label_efficiency(table, at=(1, 50))
    assert [(r["protocol"], r["init"], r["span_low"], r["span_high"]) for r in rows] == [
        ("finetune", "pretrained", 1.0, 10.0), ("finetune", "random", 1.0, 10.0), ("linear", "pretrained", 1.0, 10.0)]
    at50 = rows[0]
    assert at50["accuracy_at_50"] is None  # outside the measured labels: nothing is extrapolated
    assert (at50["random_labels_at_50"], at50["random_labels_at_50_qualifier"]) == (None, "")
    assert (rows[0]["random_labels_at_1"], rows[0]["random_labels_at_1_qualifier"]) == (pytest.approx(10.0), "")
    no_baseline = rows[2]  # linear has no random init to compare with
    assert no_baseline["accuracy_at_1"] == pytest.approx(0.4)
    assert (no_baseline["random_labels_at_1"], no_baseline["random_labels_at_1_qualifier"]) == (None, "")


def test_variance_components_with_pretraining_runs():
    """y = p_run + a_subset + b_seed exactly, 2 runs x 3 draws x 2 seeds: each share is its effect's
    variance and nothing is left; with one draw per seed, the run and the draw separate."""
    p, a, b = np.array([0.1, -0.1]), np.array([0.1, 0.3, 0.2]), np.array([0.05, -0.05])
    entries = []
    for r in range(2):
        for i in range(3):
            for j in range(2):
                e = run(subset_seed=i, seed=j, acc=0.5 + p[r] + a[i] + b[j])
                e["cell"]["replicate"] = r
                e["cell_id"] += f"-{r}{i}{j}"
                entries.append(e)
    [row] = variance_components(entries)
    assert (row["pretraining_var"], row["subset_var"], row["seed_var"]) == pytest.approx(
        (np.var(p, ddof=1), np.var(a, ddof=1), np.var(b, ddof=1)))
    assert row["residual_var"] == pytest.approx(0.0, abs=1e-12)
    one_draw_each = [e for e in entries if e["cell"]["subset_seed"] == e["cell"]["seed"]]
    [row] = variance_components(one_draw_each)
    assert row["separable"] and row["pretraining_var"] == pytest.approx(np.var(p, ddof=1))
    assert math.isnan(row["seed_var"])


def test_label_efficiency_bootstrap_resamples_pretraining_runs():
    from transfer.report.stats import bootstrap_label_efficiency, label_efficiency

    def rows_for(offsets):
        out = []
        for r, offset in enumerate(offsets):
            for rule, k, pre, rnd in (("k1", 1.0, 0.30, 0.10), ("k10", 10.0, 0.80, 0.60)):
                for init, acc in (("pretrained", pre + offset), ("random", rnd)):
                    out.append({"protocol": "linear", "init": init, "rule": rule, "replicate": r, "subset_seed": 0,
                                "seed": 0, "split": 1, "per_class": k, "value": acc})
        return out

    rows = rows_for([-0.05, 0.0, 0.05])
    boot = bootstrap_label_efficiency(rows, at=(1,), draws=400, seed=3)
    table = aggregate([{"cell_id": str(i), "status": "done",
                        "cell": {"protocol": r["protocol"], "init": r["init"], "split": 1, "seed": 0, "replicate": r["replicate"],
                                 "rule_tag": r["rule"], "rule_value": 0.0},
                        "result": {"video_acc": r["value"], "labeled_per_class": r["per_class"], "num_classes": 10}}
                       for i, r in enumerate(rows)])
    point = {(r["protocol"], r["init"]): r for r in label_efficiency(table, at=(1,))}
    low, high = boot[("linear", "pretrained")]["area"]
    assert low < point[("linear", "pretrained")]["area"] < high and high - low > 0.02
    low, high = boot[("linear", "pretrained")]["random_labels_at_1"]
    assert low < point[("linear", "pretrained")]["random_labels_at_1"] < high
    assert boot[("linear", "pretrained")]["unit"] == "pretraining runs" and boot[("linear", "random")]["units"] == 3
    assert bootstrap_label_efficiency(rows, at=(1,), draws=400, seed=3) == boot  # seeded
    same = bootstrap_label_efficiency(rows_for([0.0, 0.0, 0.0]), at=(1,), draws=50)
    assert same[("linear", "pretrained")]["area"][0] == pytest.approx(same[("linear", "pretrained")]["area"][1])


def test_a_trajectory_sweep_gets_selected_minus_random_rows():
    from transfer.report.stats import paired_differences
    from transfer.report.tables import paired_cells

    def entry(init, seed, value):
        return {"cell_id": f"linear-{init}-{seed}", "status": "done",
                "cell": {"protocol": "linear", "init": init, "split": 1, "seed": seed, "subset_seed": seed,
                         "rule_tag": "f1", "rule_value": 1.0},
                "result": {"video_acc": value, "labeled_per_class": 5.0, "num_classes": 2, "clips_per_video": 2}}

    entries = [entry(init, seed, value + 0.01 * seed) for seed in (0, 1, 2)
               for init, value in (("pretrained", 0.6), ("selected", 0.7), ("random", 0.4))]
    rows = paired_differences(entries)
    assert [(r["treated_init"], r["baseline"]) for r in rows] == [("pretrained", "random"), ("selected", "random")]
    assert [round(r["diff_mean"], 6) for r in rows] == [0.2, 0.3]
    assert [paired_cells(r)[0] for r in rows] == ["linear", "linear, selected"]
    assert [r["treated_init"] for r in paired_differences(entries, treated="pretrained")] == ["pretrained"]
