"""Reports of transfer sweeps, from their ledgers alone (never from the sweep's internals).

- `stats`: aggregation over splits and seeds, paired differences, t-intervals (every number);
- `tables`, `figures`: CSV / Markdown / LaTeX tables and PNG / PDF figures for papers;
- `document`: the small block model the pages are written in (Markdown and self-contained HTML);
- `page`: the per-sweep report page (`report.md`, `report.html`);
- `compare`: several sweeps on one curve;
- `design`: intervals that fit the design; `registry`: one JSON row per result, and leaderboards.

    python -m transfer.report SWEEP_DIR     # regenerate a sweep's tables, figures and page
"""
from __future__ import annotations

from pathlib import Path

from runkit.atomic import atomic_write_text
from transfer.report.figures import plot_accuracy, plot_relative_gain
from transfer.report.page import environment, write_report_page
from transfer.report.registry import write_records
from transfer.report.stats import aggregate, current_entries, paired_differences, run_values, variance_components
from transfer.report.tables import (PAIRED_HEAD, RESULTS_HEAD, VARIANCE_HEAD, paired_cells, results_cells, to_csv,
                                    to_latex, to_markdown, variance_cells)


def write_report(sweep_dir: str | Path, metric: str = "video_acc", figures: bool = True) -> dict[str, Path]:
    """Regenerate every table (and figure) of a sweep from its ledger into `<sweep>/report/`:
    `results.{csv,md,tex}`, `paired.{csv,md,tex}`, `variance.{csv,md,tex}` (sources of variance),
    `accuracy_vs_labels.{png,pdf}` (means, 95% CIs and every run), `relative_gain.{png,pdf}` (the
    paper's Fig. 4c), `results.jsonl` (the registry's rows). Returns the written paths."""
    sweep_dir = Path(sweep_dir)
    entries = current_entries(sweep_dir)
    out = sweep_dir / "report"
    table = aggregate(entries, metric)
    paired = paired_differences(entries, metric)
    variance = variance_components(entries, metric)
    caption = (f"{metric.replace('_', ' ')} on the test split: mean ± std over the runs and the 95% interval "
               f"that fits the design (splits averaged; pretraining runs, subset draws and seeds crossed).")
    written = {}
    for name, rows, head, cells, cap in (
            ("results", table, RESULTS_HEAD, results_cells, caption),
            ("paired", paired, PAIRED_HEAD, paired_cells,
             f"Paired difference pretrained − random ({metric.replace('_', ' ')}), same pretraining run or "
             f"random weight draw, split, subset and seed."),
            ("variance", variance, VARIANCE_HEAD, variance_cells,
             f"Sources of the spread of {metric.replace('_', ' ')} across runs: pretraining run, subset draw, "
             f"training seed, split and the rest (method-of-moments estimates from a crossed design; — where "
             f"the sweep's runs do not separate them).")):
        body = [cells(r) for r in rows]
        for ext, text in (("csv", to_csv(rows)), ("md", to_markdown(head, body)), ("tex", to_latex(head, body, cap))):
            path = out / f"{name}.{ext}"
            atomic_write_text(path, text)
            written[f"{name}.{ext}"] = path
    if table:
        written["results.jsonl"] = write_records(sweep_dir, metric, environment()["versions"])
    if figures and table:
        for path in plot_accuracy(table, out, metric, run_values(entries, metric)) + plot_relative_gain(paired, out):
            written[path.name] = path
    return written


def write_all(sweep_dir: str | Path, metric: str = "video_acc") -> dict[str, Path]:
    """Tables and figures (when any cell is done), then the page (`report.md`, `report.html`, last)."""
    sweep_dir = Path(sweep_dir)
    written = {}
    if any(e["status"] == "done" for e in current_entries(sweep_dir)):
        written.update(write_report(sweep_dir, metric))
    written.update(write_report_page(sweep_dir, metric))
    return written


__all__ = ["write_report", "write_all", "write_report_page"]
