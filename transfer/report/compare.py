"""Compare several transfer sweeps on one curve (e.g. the original recipe against an improved one).

Each sweep folder's ledger goes through the same `transfer.report.stats.aggregate` / `paired_differences`
as its own `report/results.*` and `report/paired.*`, so every number here equals the number in
that sweep's report; this module adds no statistics, it lays the sweeps side by side:

- `comparison.{csv,md,tex}`: mean, std, 95% t-interval and n per sweep × protocol × init ×
  labeled videos per class (the CSV: the sweep's label, then exactly the columns of
  `results.csv`), and the gain pretrained − random per sweep with its paired interval
  (`comparison_gain.csv`: the label, then the columns of `paired.csv`);
- `comparison_accuracy.{png,pdf}`: accuracy against labeled videos per class, one panel per
  protocol, colour = sweep, line style and marker = init;
- `comparison_gain.{png,pdf}`: pretrained ÷ random, colour = sweep, marker and line style = protocol;
- `comparison_efficiency.csv` (and a table in `comparison.md`): label efficiency of each curve: its mean
  accuracy over log labels across the range every compared curve measured (the area under the
  curve, normalised), and "label equivalence": how many labeled videos per class random init
  needs to match a method at 1 and at 7 per class (log-linear interpolation between measured
  points, `transfer.report.stats.label_efficiency`; never extrapolated);
- `comparison.md` also says what was compared (checkpoint sha, recipe and the settings that differ,
  data, splits, seeds) and embeds the figures by relative path.

Sweeps over different data or splits are allowed (the tables carry a note); a folder without
`sweep.json` or a sweep without a done cell is an error that names it.

    python -m transfer.compare SWEEP_DIR [SWEEP_DIR ...] --labels original,improved --out DIR
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pretrain.export import ExportError, load_export
from runkit.atomic import atomic_write_text
from transfer.report.document import files, h, img, p, render_markdown, table
from transfer.report.figures import (FIG_WIDTH_IN, accuracy_axes, draw_accuracy, draw_gain, pyplot, save_figure,
                                     style_axes)
from transfer.classifier import RANDOM_INITS
from transfer.report.stats import (METRICS, RANDOM_INIT_NAMES, ReportError, aggregate, bootstrap_label_efficiency,
                                   current_entries, label_efficiency, paired_differences, protocol_info, result_rows,
                                   run_values)
from transfer.report.tables import PAIRED_HEAD, RESULTS_HEAD, paired_cells, results_cells, to_csv, to_latex

TEXT_WIDTH_IN = 6.9  # a figure* spanning both columns of a two-column paper
INIT_STYLE = {"pretrained": {"linestyle": "-", "marker": "o"},
              "random": {"linestyle": "--", "marker": "s", "fillstyle": "none"},
              "random_torch": {"linestyle": ":", "marker": "D", "fillstyle": "none"}}
# the sweep's label goes where a reader compares the sweeps: right after the row's labels
RESULTS_AT, PAIRED_AT = 4, 3
COMPARE_HEAD = RESULTS_HEAD[:RESULTS_AT] + ["sweep"] + RESULTS_HEAD[RESULTS_AT:]
GAIN_HEAD = PAIRED_HEAD[:PAIRED_AT] + ["sweep"] + PAIRED_HEAD[PAIRED_AT:]
TEXT_COLUMNS = ("protocol", "init", "labels", "sweep")
SHORT_NOTE = "Note: these sweeps were not evaluated on the same test videos"


class CompareError(ReportError):
    """The sweeps cannot be compared (not a sweep folder, nothing done, bad labels); names why."""


@dataclass(frozen=True)
class ComparedSweep:
    label: str
    folder: Path
    plan: dict              # sweep.json
    table: list[dict]       # aggregate(...) of its current cells
    paired: list[dict]      # paired_differences(...)
    done: int
    runs: dict = None       # run_values(...): every run's value, the dots beside the means
    rows: list = None       # result_rows(...): every run, for the label-efficiency bootstrap
    backbone: str = ""      # hash of the first export's architecture: random init is one curve per backbone

    @property
    def spec(self) -> dict:
        return self.plan.get("spec", {})

    def data(self) -> str:
        """The data the sweep read: dataset, its root, and the synthetic generator's overrides."""
        spec = self.spec
        text = spec.get("data", "?")
        if spec.get("root"):
            text += f" at {spec['root']}"
        if spec.get("synthetic"):
            text += f" {json.dumps(spec['synthetic'], sort_keys=True)}"
        return text

    def splits(self) -> tuple:
        return tuple(self.spec.get("splits", ()))

    def test_lists(self) -> str:
        """SHA-256 over the sweep's test-list manifests: equal only when both test on the same videos."""
        digest = hashlib.sha256()
        for split in self.splits():
            name = f"split{split}_val.txt" if self.plan.get("validate") else f"split{split}_test.txt"
            path = self.folder / "manifests" / name
            digest.update(path.read_bytes() if path.is_file() else b"missing")
        return digest.hexdigest()

    def labels_text(self) -> str:
        spec = self.spec
        if spec.get("per_class"):
            return "per class " + ", ".join(str(k) for k in spec["per_class"])
        return "fractions " + ", ".join(f"{f:g}" for f in spec.get("fractions", ()))

    def recipe_text(self) -> str:
        overrides = self.spec.get("overrides") or {}
        # the overrides' hash as in the default sweep folder name; what differs is listed setting by setting
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
        return f"`{self.spec.get('recipe', '?')}`" + (f" + overrides `{digest}`" if overrides else "")


def load_sweep(folder: str | Path, label: str, metric: str = "video_acc") -> ComparedSweep:
    folder = Path(folder)
    plan_path = folder / "sweep.json"
    if not folder.is_dir():
        raise CompareError(f"sweep folder {folder} does not exist")
    if not plan_path.is_file():
        raise CompareError(f"{folder} is not a sweep folder: no sweep.json in it "
                           "(a sweep folder is what `python transfer/sweep.py` writes under outputs/transfer/)")
    try:
        plan = json.loads(plan_path.read_text())
    except json.JSONDecodeError as exc:
        raise CompareError(f"{plan_path} is not valid JSON: {exc}") from exc
    entries = current_entries(folder)
    done = sum(1 for e in entries if e["status"] == "done")
    if not done:
        raise CompareError(f"sweep {folder} ({label}) has no done cell in its plan: nothing to compare "
                           "(run it first; `python transfer/sweep.py <its arguments> --status` lists its cells)")
    try:
        table_rows, paired = aggregate(entries, metric), paired_differences(entries, metric, treated="pretrained")
    except KeyError as exc:
        raise CompareError(f"sweep {folder} ({label}): {exc.args[0]}") from exc
    return ComparedSweep(label, folder, plan, table_rows, paired, done, run_values(entries, metric),
                         result_rows(entries, metric), _backbone_hash(plan))


def _backbone_hash(plan: dict) -> str:
    """The architecture of the sweep's export (random init's network), "" when it is gone."""
    try:
        arch = load_export(plan["checkpoint"]).arch
    except (ExportError, OSError, KeyError, TypeError):
        return ""
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:12]


def resolve_labels(folders: Sequence[str | Path], labels: Sequence[str] | None) -> list[str]:
    """The given labels (one per sweep, unique, non-empty) or, by default, the folder names."""
    if labels is None:
        labels = [Path(f).resolve().name for f in folders]
        if len(set(labels)) != len(labels):
            raise CompareError(f"two sweep folders share a name ({', '.join(labels)}): give --labels")
        return labels
    labels = [label.strip() for label in labels]
    if len(labels) != len(folders):
        raise CompareError(f"--labels gives {len(labels)} label(s) ({', '.join(labels)}) for "
                           f"{len(folders)} sweep folder(s): give exactly one label per sweep")
    if not all(labels):
        raise CompareError("--labels has an empty label")
    if len(set(labels)) != len(labels):
        raise CompareError(f"--labels repeats a label ({', '.join(labels)}): each sweep needs its own")
    return labels


# ------------------------------------------------------------------------------- what differs

def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_differences(sweeps: Sequence[ComparedSweep]) -> list[list[str]]:
    """Rows (setting, value per sweep) for every resolved-recipe setting that is not the same in all."""
    flat = [_flatten(s.plan.get("recipe", {})) for s in sweeps]
    keys = sorted(set().union(*flat))
    return [[key] + [json.dumps(f[key]) if key in f else "(not set)" for f in flat]
            for key in keys if len({json.dumps(f.get(key), sort_keys=True) for f in flat}) > 1]


def data_note(sweeps: Sequence[ComparedSweep]) -> str | None:
    """A sentence when the sweeps did not test on the same videos (other data, splits or lists)."""
    # the root is left out: the same lists under another (or a relative) path are the same test set
    same = {(s.spec.get("data"), json.dumps(s.spec.get("synthetic") or {}, sort_keys=True), s.splits(),
             s.test_lists()) for s in sweeps}
    if len(same) == 1:
        return None
    show_data = len({s.data() for s in sweeps}) > 1
    described = "; ".join(f"{s.label}: " + (f"{s.data()}, " if show_data else "")
                          + f"splits {', '.join(str(k) for k in s.splits())}, test lists {s.test_lists()[:12]}"
                          for s in sweeps)
    return f"{SHORT_NOTE} ({described}); their accuracies are not directly comparable."


# ------------------------------------------------------------------------------------ tables

def comparison_rows(sweeps: Sequence[ComparedSweep]) -> tuple[list[dict], list[dict]]:
    """(results rows, gain rows), each row the sweep's own row with its label in front, ordered so
    the sweeps' rows for one protocol, init and label count sit together."""
    order = {s.label: i for i, s in enumerate(sweeps)}
    results = [{"sweep": s.label, **row} for s in sweeps for row in s.table]
    gains = [{"sweep": s.label, **row} for s in sweeps for row in s.paired]
    results.sort(key=lambda r: (r["protocol"], r["init"], r["labeled_per_class"], r["rule"], order[r["sweep"]]))
    gains.sort(key=lambda r: (r["protocol"], r.get("baseline") != "random", r.get("baseline", ""),
                              r["labeled_per_class"], r["rule"], order[r["sweep"]]))
    return results, gains


def _align(head: Sequence[str]) -> str:
    return "".join("l" if column in TEXT_COLUMNS else "r" for column in head)


def _with_sweep(cells: list[str], at: int, label: str) -> list[str]:
    return cells[:at] + [label] + cells[at:]


def _results_body(rows: list[dict]) -> list[list[str]]:
    return [_with_sweep(results_cells(r), RESULTS_AT, r["sweep"]) for r in rows]


def _gain_body(rows: list[dict]) -> list[list[str]]:
    return [_with_sweep(paired_cells(r), PAIRED_AT, r["sweep"]) for r in rows]


# ----------------------------------------------------------------------------------- figures

def plot_comparison_accuracy(sweeps: Sequence[ComparedSweep], out: Path, metric: str) -> list[Path]:
    """One panel per protocol (shared axes); in each, one line per sweep × init."""
    plt = pyplot()
    everything = [row for s in sweeps for row in s.table]
    protocols = sorted({row["protocol"] for row in everything})
    width = FIG_WIDTH_IN if len(protocols) == 1 else TEXT_WIDTH_IN
    fig, axes = plt.subplots(1, len(protocols), figsize=(width, 2.6), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    # random init is drawn once per backbone: the sweeps of several methods on one backbone carry
    # the same random-init runs, and three identical grey curves would read as three results
    random_from = {}
    for sweep in sweeps:
        random_from.setdefault(sweep.backbone or sweep.label, sweep.label)
    several = len(random_from) > 1
    for ax, protocol in zip(axes[0], protocols):
        lines = []
        for i, sweep in enumerate(sweeps):
            by_init: dict[str, list[dict]] = defaultdict(list)
            for row in sweep.table:
                if row["protocol"] == protocol:
                    by_init[row["init"]].append(row)
            if random_from[sweep.backbone or sweep.label] != sweep.label:
                for init in RANDOM_INITS:
                    by_init.pop(init, None)
            lines += [((RANDOM_INIT_NAMES[init] + (f" ({sweep.label}'s backbone)" if several else ""))
                       if init in RANDOM_INITS else f"{sweep.label}, {init}", rows,
                       {"color": "grey" if init in RANDOM_INITS and not several else f"C{i % 10}",
                        **INIT_STYLE.get(init, {})})
                      for init, rows in sorted(by_init.items())]
        for i, sweep in enumerate(sweeps):  # each sweep's lines with its own runs as dots
            own = [line for line in lines if line[2]["color"] == f"C{i % 10}"
                   or (line[2]["color"] == "grey" and random_from.get(sweep.backbone or sweep.label) == sweep.label)]
            draw_accuracy(ax, own, sweep.runs)
        all_runs: dict = defaultdict(list)
        for sweep in sweeps:
            for key, values in (sweep.runs or {}).items():
                all_runs[key] += values
        accuracy_axes(ax, everything, all_runs)  # the same ticks and limits in every panel
        if len(protocols) > 1:
            ax.set_title(protocol_info(sweeps[0].plan, protocol)["title"], fontsize=8)
    axes[0][0].set_ylabel(f"{metric.replace('_', ' ')} (%)")
    _shared_legend(fig, axes[0], narrow=len(protocols) == 1)
    return save_figure(fig, out, "comparison_accuracy")


def plot_comparison_gain(sweeps: Sequence[ComparedSweep], out: Path) -> list[Path]:
    """Pretrained ÷ random: one line per sweep × protocol."""
    fig, ax = pyplot().subplots(figsize=(FIG_WIDTH_IN, 2.4), layout="constrained")
    lines = []
    for i, sweep in enumerate(sweeps):
        by_protocol: dict[tuple, list[dict]] = defaultdict(list)
        for row in sweep.paired:  # one line per protocol and random-init baseline
            by_protocol[(row["protocol"], row.get("baseline", "random"))].append(row)
        lines += [(f"{sweep.label}, {protocol_info(sweep.plan, protocol)['title']}"
                   + ("" if baseline == "random" else f" vs {baseline}"), rows,
                   {"color": f"C{i % 10}", "marker": "o", **protocol_info(sweep.plan, protocol)["style"]})
                  for (protocol, baseline), rows in sorted(by_protocol.items())]
    draw_gain(ax, lines)
    ax.axhline(1.0, color="grey", linewidth=0.7, linestyle=":")
    rows = [row for s in sweeps for row in s.paired]
    if rows:
        style_axes(ax, [r["labeled_per_class"] for r in rows])
    ax.set_ylabel("pretrained ÷ random")
    _shared_legend(fig, [ax], narrow=True)
    return save_figure(fig, out, "comparison_gain")


def _shared_legend(fig, axes, narrow: bool) -> None:
    """One legend above the panels, each label once, the data lines first and chance last
    (the figure uses constrained layout, which makes room for it)."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    order = sorted(handles, key=lambda label: label.startswith("chance"))  # stable: lines keep their order
    if order:
        # As many columns as fit the figure's width at 6 pt (~0.05 in a character + the marker),
        # so long sweep labels wrap into more rows instead of running off the page.
        column_in = 0.05 * max(len(label) for label in order) + 0.45
        fit = max(1, int(fig.get_figwidth() // column_in))
        fig.legend([handles[k] for k in order], order, loc="outside upper center",
                   ncol=min(len(order), 2 if narrow else 5, fit), fontsize=6, frameon=False)


# -------------------------------------------------------------------------------------- entry

EFFICIENCY_AT = (1, 7)
EFFICIENCY_HEAD = ["protocol", "sweep", "init", "mean over log labels (%)", "labels/class range",
                   *(f"at {k} per class (%)" for k in EFFICIENCY_AT),
                   *(f"random init needs, to match at {k}" for k in EFFICIENCY_AT)]


def efficiency_rows(sweeps: Sequence[ComparedSweep]) -> list[dict]:
    """label_efficiency of every sweep, over one label range per protocol: the range every
    compared curve of that protocol measured, so the areas compare like with like."""
    spans: dict[str, tuple[float, float]] = {}
    for protocol in {r["protocol"] for s in sweeps for r in s.table}:
        curves = [sorted(r["labeled_per_class"] for r in s.table if r["protocol"] == protocol and r["init"] == init)
                  for s in sweeps for init in {r["init"] for r in s.table if r["protocol"] == protocol}]
        curves = [c for c in curves if c]
        spans[protocol] = (max(c[0] for c in curves), min(c[-1] for c in curves))
    rows = []
    for s in sweeps:
        intervals = bootstrap_label_efficiency(s.rows or [], EFFICIENCY_AT, span=spans)
        for row in label_efficiency(s.table, EFFICIENCY_AT, span=spans):
            boot = intervals.get((row["protocol"], row["init"]), {})
            flat = {f"{name}_ci_{side}": value[i] for name, value in boot.items() if isinstance(value, tuple)
                    for i, side in enumerate(("low", "high"))}
            rows.append({"sweep": s.label, **row, **flat,
                         "bootstrap_units": f"{boot['units']} {boot['unit']}" if boot else ""})
    order = {s.label: i for i, s in enumerate(sweeps)}
    return sorted(rows, key=lambda r: (r["protocol"], r["init"] in RANDOM_INITS, order[r["sweep"]], r["init"]))


def _percent(value, interval=None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}" + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")


def _labels(value, qualifier: str, interval=None) -> str:
    if value is None:
        return "n/a"
    text = {"<=": f"≤ {value:.3g}", ">": f"> {value:.3g} (never, in range)"}.get(qualifier, f"{value:.3g}")
    return text + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")


def efficiency_cells(row: dict) -> list[str]:
    boot = {name: (row[f"{name}_ci_low"], row[f"{name}_ci_high"])
            for name in ("area", *(f"{kind}_at_{k:g}" for kind in ("accuracy", "random_labels") for k in EFFICIENCY_AT))
            if f"{name}_ci_low" in row}
    equivalents = ["(the floor)" if row["init"] == row.get("baseline", "random") else
                   _labels(row[f"random_labels_at_{k:g}"], row[f"random_labels_at_{k:g}_qualifier"],
                           boot.get(f"random_labels_at_{k:g}"))
                   for k in EFFICIENCY_AT]
    return [row["protocol"], row["sweep"], row["init"], _percent(row["area"], boot.get("area")),
            f"{row['span_low']:.3g}–{row['span_high']:.3g}",
            *(_percent(row[f"accuracy_at_{k:g}"], boot.get(f"accuracy_at_{k:g}")) for k in EFFICIENCY_AT),
            *equivalents]


def _sweeps_table(sweeps: Sequence[ComparedSweep], out: Path) -> list[list[str]]:
    rows = []
    for s in sweeps:
        rel = os.path.relpath(s.folder.resolve(), out.resolve())
        page = s.folder / "report.md"
        where = f"`{rel}`" + (f" ([report]({rel}/report.md))" if page.is_file() else "")
        rows.append([s.label, where, f"`{Path(s.plan.get('checkpoint', '?')).name}` "
                                     f"sha256 `{str(s.plan.get('checkpoint_sha256', '?'))[:12]}`",
                     s.recipe_text(), s.data(), ", ".join(str(k) for k in s.splits()),
                     ", ".join(str(k) for k in s.spec.get("seeds", ())), s.labels_text(),
                     f"{', '.join(s.spec.get('protocols', ()))} × {', '.join(s.spec.get('inits', ()))}",
                     f"{s.done} / {len(s.plan.get('cells', []))}"])
    return rows


SWEEPS_HEAD = ["sweep", "folder", "checkpoint", "recipe", "data", "splits", "seeds", "labels",
               "protocols × inits", "done cells"]


def compare_sweeps(folders: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
                   metric: str = "video_acc", figures: bool = True) -> dict[str, Path]:
    """Write the comparison of the sweeps in `folders` into `out`; returns the written paths."""
    if not folders:
        raise CompareError("no sweep folder given")
    if metric not in METRICS:
        raise CompareError(f"unknown metric {metric!r}; choose from {METRICS}")
    labels = resolve_labels(folders, labels)
    sweeps = [load_sweep(folder, label, metric) for folder, label in zip(folders, labels)]
    out = Path(out)
    results, gains = comparison_rows(sweeps)
    note = data_note(sweeps)
    name = metric.replace("_", " ")
    written: dict[str, Path] = {}

    def write(filename: str, text: str) -> None:
        atomic_write_text(out / filename, text)
        written[filename] = out / filename

    efficiency = efficiency_rows(sweeps)
    write("comparison.csv", to_csv(results))
    write("comparison_gain.csv", to_csv(gains))
    write("comparison_efficiency.csv", to_csv(efficiency))
    # the captions carry the short note: the details (paths, JSON) are not LaTeX-safe text
    short = f" {SHORT_NOTE} (other data, splits or test lists; see comparison.md)." if note else ""
    caption = (f"{name} on the test split per sweep: mean ± std and 95% t-interval over seeds and splits. "
               f"Sweeps: {', '.join(labels)}.{short}")
    gain_caption = f"Paired difference pretrained − random ({name}), same split and seed, per sweep.{short}"
    write("comparison.tex", to_latex(COMPARE_HEAD, _results_body(results), caption, _align(COMPARE_HEAD)) + "\n"
          + to_latex(GAIN_HEAD, _gain_body(gains), gain_caption, _align(GAIN_HEAD)))
    if figures:
        for path in plot_comparison_accuracy(sweeps, out, metric) + plot_comparison_gain(sweeps, out):
            written[path.name] = path

    differing = recipe_differences(sweeps)
    blocks = [h(f"Transfer sweep comparison: {' vs '.join(labels)}", 1),
              p(f"{len(sweeps)} sweeps side by side; every number comes from each sweep's own ledger "
                "through the same aggregation as its `report/results.csv` and `report/paired.csv`."),
              h("Sweeps compared"), table(SWEEPS_HEAD, _sweeps_table(sweeps, out))]
    if note:
        blocks.append(p(note))
    if differing:
        blocks += [p("Resolved recipe settings that differ between the sweeps (all others are equal):"),
                   table(["setting"] + labels, differing)]
    else:
        blocks.append(p("The sweeps' resolved recipes are identical."))
    blocks.append(h("Accuracy"))
    if figures:
        blocks += [p(f"{name.capitalize()} against labeled videos per class (log axis), one panel per protocol; "
                     "colour = sweep, solid/filled = pretrained, dashed/open = random init; error bars the 95% CI."),
                   img("comparison_accuracy.png", "accuracy vs labeled videos per class, per sweep")]
    blocks += [p(f"Test accuracy in % ({name}): mean ± sample std and the 95% interval that fits each sweep's "
                 "design (splits averaged first, pretraining runs, subset draws and seeds crossed; each sweep's "
                 "own report says how each row's was made)." + (f" {SHORT_NOTE} (above)." if note else "")),
               table(COMPARE_HEAD, _results_body(results)), h("Gain from pretraining")]
    if figures:
        blocks += [p("Pretrained mean over random-init mean on the (split, seed) pairs both finished; "
                     "colour = sweep, marker = protocol."),
                   img("comparison_gain.png", "pretrained over random, per sweep")]
    if gains:
        blocks += [p(f"Pretrained − random ({name}, in points) over the runs where both inits finished, paired "
                     "on (pretraining run or random weight draw, split, subset draw, seed), its 95% interval made "
                     "the same way, and the ratio of the two means."),
                   table(GAIN_HEAD, _gain_body(gains))]
    blocks += [h("Label efficiency"),
               p(f"Each curve's mean {name} over log labeled videos per class across the range every compared "
                 "curve measured (the area under the curve over log labels, divided by the range), its value "
                 f"at {' and '.join(str(k) for k in EFFICIENCY_AT)} per class, and how many labeled videos per "
                 "class the same sweep's random init needs to reach that value: log-linear between measured "
                 "points, never extrapolated (≤: random init already matches it at its fewest labels; >: not "
                 "within the measured range). Random init is the floor every method is read against. In "
                 "brackets, 95% percentile intervals of a cluster bootstrap (1,000 draws) that resamples each "
                 "sweep's outermost sampled factor (its pretraining runs when it has several, else its subset "
                 "draws) with every run of a drawn unit; a draw in which random init never reaches the value "
                 "counts at the range's end, so such an interval's top is a floor."),
               table(EFFICIENCY_HEAD, [efficiency_cells(r) for r in efficiency])]
    missing = [s.label for s in sweeps if not s.paired]
    if missing:
        blocks.append(p(f"No (split, seed) pair with both inits done in: {', '.join(missing)} (no gain row)."))
    blocks += [p("The same tables and figures for papers:"),
               files([(n, n) for n in ("comparison.csv", "comparison_gain.csv", "comparison_efficiency.csv",
                                       "comparison.tex",
                                       "comparison_accuracy.pdf", "comparison_gain.pdf") if n in written])]
    write("comparison.md", render_markdown(blocks))
    return written
