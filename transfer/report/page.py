"""The per-sweep report: `report.md` and a self-contained `report.html` in the sweep folder.

One job: gather what a reader needs to trust a sweep's numbers into one page — what was compared
(data, splits, seeds, label fractions, protocols, inits, recipe), when and on what hardware and
package versions, the accuracy-vs-labels and relative-gain figures, the results table with
confidence intervals, the pretraining run behind the checkpoint (sample GIF, GAN health curves,
its config), the exact sweep spec and recipe, the subset-manifest hashes and the ledger summary.

Every number comes from the ledger (through `transfer.report.stats`, the same code path as
`report/results.*`) or from the pretraining run's `metrics.csv`. The page is
built once as a list of blocks with every number already formatted; the Markdown and the HTML are
two renderings of those blocks, so they cannot disagree. The Markdown references its assets by
relative path (under `report/`); the HTML embeds every image as a base64 data URI and has no
external CSS or JavaScript.

    python -m transfer.report SWEEP_DIR      # tables, figures and the page, from the ledger
"""
from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pretrain.export import load_export
from pretrain.samples import plot_health
from runkit.atomic import atomic_write_bytes, atomic_write_text
from runkit.hashing import file_sha256
from runkit.machine import describe_machine
from transfer.ledger import Ledger
from transfer.report.document import Block, code, files, h, img, p, render_html, render_markdown, table, ul
from transfer.report.figures import trajectory_figure
from transfer.report.stats import ReportError, aggregate, current_entries, paired_differences, variance_components
from transfer.report.tables import PAIRED_HEAD, VARIANCE_HEAD, count, paired_cells, pct, variance_cells
from transfer.subsets import SubsetRule

PACKAGES = ("torch", "torchvision", "timm", "av", "scikit-learn", "submitit", "hydra-core", "numpy",
            "scipy", "matplotlib")
ASSETS = "report"                 # the folder (inside the sweep folder) that holds figures and copies
SAMPLES_NAME = "pretrain_samples.gif"
HEALTH_NAME = "pretrain_health.png"
CI_TEXT = ("95% interval that fits the sweep's design (splits averaged first, the sampled factors "
           "crossed; see *How the intervals are made*), clipped to [0, 100]; zero width for one run")


def results_head(metric: str) -> list[str]:
    name = "video acc" if metric == "video_acc" else metric.replace("_", " ")
    return ["protocol", "labels", "labeled/class", "init", "n", f"{name} % (mean ± std)", f"{name} 95% CI",
            "clip acc % (mean ± std)", "clip 95% CI", "video top-5 % (mean)", "mean-class % (mean)"]


PER_CELL_HEAD = ["cell", "labeled videos", "video acc %", "clip acc %", "seconds"]


# ------------------------------------------------------------------------------------ gathering

def environment() -> dict:
    """Hardware and package versions of the process writing the report."""
    env = describe_machine(PACKAGES)
    env["versions"] = {"python": env["python"], **env["versions"]}
    return env


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _rules(spec: dict) -> list[SubsetRule]:
    if spec.get("per_class"):
        return [SubsetRule(per_class=int(k)) for k in spec["per_class"]]
    return [SubsetRule(fraction=float(f)) for f in spec.get("fractions", ())]


def _manifest_header(path: Path) -> dict[str, str]:
    header = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            key, sep, value = line[1:].strip().partition("=")
            if sep:
                header[key] = value
    return header


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return "(no error message recorded)"


def _plan(sweep_dir: Path) -> dict:
    path = sweep_dir / "sweep.json"
    if not path.is_file():
        raise ReportError(f"{path} not found: not a sweep folder (run `python transfer/sweep.py` first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON: {exc}") from None


# --------------------------------------------------------------------------------- the sections

def _headline(sweep_dir: Path, plan: dict, entries: list[dict], env: dict, now: datetime) -> list[Block]:
    spec, recipe_name = plan.get("spec", {}), plan.get("spec", {}).get("recipe", "?")
    done = [e for e in entries if e["status"] == "done"]
    rules = _rules(spec)
    per_class = {}
    for entry in done:
        per_class.setdefault(entry["cell"]["rule_tag"], set()).add(entry["result"]["labeled_per_class"])
    labels = []
    for rule in rules:
        seen = sorted(per_class.get(rule.tag, ()))
        counted = f" ({', '.join(count(v) for v in seen)} labeled videos/class)" if seen else ""
        labels.append(f"`{rule.tag}`{counted}")
    splits = []
    for split in spec.get("splits", ()):
        sizes, test_source = [], ""
        for part in ("train", "test"):
            path = sweep_dir / "manifests" / f"split{split}_{part}.txt"
            if path.is_file():
                header = _manifest_header(path)
                sizes.append(f"{header.get('videos', '?')} {part}")
                test_source = header.get("source", "") if part == "test" else test_source
        # a set without public test labels scores on another official list (the test manifest's source)
        splits.append((f"{split} ({' / '.join(sizes)} videos)" if sizes else str(split))
                      + (f", the test list being {test_source}" if test_source else ""))
    classes = sorted({e["result"]["num_classes"] for e in done})
    data = spec.get("data", "?") + (f" at `{spec['root']}`" if spec.get("root") else "")
    overrides = spec.get("overrides") or {}
    run_times = [e["run"]["time"] for e in entries if isinstance(e.get("run"), dict) and "time" in e["run"]]
    hosts = sorted({e["run"]["host"] for e in entries if isinstance(e.get("run"), dict) and "host" in e["run"]})
    compute = sum(float(e["run"].get("elapsed_s", 0.0)) for e in done if isinstance(e.get("run"), dict))
    items = [
        f"dataset: {data}" + (f", {classes[0]} classes" if len(classes) == 1 else ""),
        f"splits: {', '.join(splits)}" + ("; **development mode (`--validate`)**: every cell is scored on a "
                                           "group-disjoint quarter held out of its split's training list "
                                           "(`split<N>_val.txt`); no test list was read" if plan.get("validate") else ""),
        f"seeds: {', '.join(str(s) for s in spec.get('seeds', ()))}",
        ("labeled videos per class: " if spec.get("per_class") else "label fractions (per class): ")
        + ", ".join(labels),
        f"protocols: {', '.join(spec.get('protocols', ()))}; inits: {', '.join(spec.get('inits', ()))}",
        f"recipe: `{recipe_name}`" + (f" with overrides `{json.dumps(overrides, sort_keys=True)}`"
                                      if overrides else ""),
        f"checkpoint: `{plan.get('checkpoint', '?')}` (sha256 `{str(plan.get('checkpoint_sha256', '?'))[:16]}…`)"
        + _other_runs(plan),
        f"cells: {len(plan.get('cells', []))}; executor: {spec.get('executor', '?')}"
        + (f" (cluster profile `{spec['cluster']}`)" if spec.get("executor") == "slurm" else ""),
    ]
    when = [f"this report: {now.strftime('%Y-%m-%d %H:%M:%S UTC')}"]
    if run_times:
        when.append(f"ledger entries written from {_utc(min(run_times))} to {_utc(max(run_times))}")
    if done:
        when.append(f"cell compute: {_duration(compute)} over {len(done)} done cells")
    gpus = ", ".join(env["gpus"]) if env["gpus"] else "none visible"
    gpus += f" (torch built for CUDA {env['cuda']})" if env.get("cuda") else " (CPU-only torch build)"
    hardware = [f"machine writing this report: `{env['host']}` ({env['os']}), CPU {env['cpu']}, "
                f"{env['cores']} cores ({env['usable_cores']} usable by this process), GPU: {gpus}"]
    if hosts:
        hardware.append(f"cells ran on: {', '.join(f'`{h}`' for h in hosts)}")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return [h("What was compared"), ul(items), h("When and where"), ul(when + hardware),
            p(f"Package versions (the report writer's environment): {versions}.")]


def _results(sweep_dir: Path, entries: list[dict], metric: str) -> list[Block]:
    done = [e for e in entries if e["status"] == "done"]
    blocks = [h("Results")]
    if not done:
        return blocks + [p("No cell of this sweep is done yet: no results to show (see the ledger summary).")]
    figures = []
    for stem, alt in (("accuracy_vs_labels", "accuracy vs labeled videos per class"),
                      ("relative_gain", "relative gain, pretrained over random")):
        if (sweep_dir / ASSETS / f"{stem}.png").is_file():
            figures.append(img(f"{ASSETS}/{stem}.png", alt))
    if figures:
        blocks.append(p(f"{metric.replace('_', ' ').capitalize()} (mean, error bars the 95% CI, dots every run) against "
                        "labeled videos per class (log axis); below it, the pretrained mean over the random-init mean "
                        "on the runs both finished, per protocol."))
        blocks += figures
    video = aggregate(entries, metric)
    extra = {}
    for name in ("clip_acc", "video_top5", "mean_class_acc"):
        if all(name in e["result"] for e in done):
            extra[name] = {(r["protocol"], r["init"], r["rule"]): r for r in aggregate(entries, name)}
    rows = []
    for r in sorted(video, key=lambda r: (r["protocol"], r["labeled_per_class"], r["rule"], r["init"])):
        key = (r["protocol"], r["init"], r["rule"])
        c, top5, mc = (extra.get(n, {}).get(key) for n in ("clip_acc", "video_top5", "mean_class_acc"))
        rows.append([r["protocol"], r["rule"], count(r['labeled_per_class']), r["init"], str(r["n"]),
                     f"{pct(r['mean'])} ± {pct(r['std'])}", f"[{pct(r['ci_low'])}, {pct(r['ci_high'])}]",
                     f"{pct(c['mean'])} ± {pct(c['std'])}" if c else "not recorded",
                     f"[{pct(c['ci_low'])}, {pct(c['ci_high'])}]" if c else "—",
                     pct(top5["mean"]) if top5 else "—", pct(mc["mean"]) if mc else "—"])
    blocks += [p(f"Test accuracy in %. Video level: the softmax of every test clip of a video averaged "
                 f"({metric.replace('_', ' ')}); clip level: each clip alone; top-5 and mean-class accuracy at the "
                 f"video level. Mean ± sample std and the {CI_TEXT}."), table(results_head(metric), rows)]
    paired = paired_differences(entries, metric)
    if paired:
        blocks += [p(f"Gain pretrained − random ({metric.replace('_', ' ')}, in points): the paired "
                     "difference over the runs (same pretraining run or random weight draw, split, subset and "
                     "training seed) where both inits finished, its 95% interval (made as the accuracies' "
                     "below), and the ratio of the two means. A `--trajectory` sweep adds rows for the "
                     "snapshot each cell chose on validation (\"selected\")."),
                   table(PAIRED_HEAD, [paired_cells(r) for r in paired])]
    else:
        blocks.append(p("No (split, seed) pair has both inits done: no gain to show."))
    blocks += _interval_note(video) + _variance(entries, metric)
    tables = [(f"{name}.{ext}", f"{ASSETS}/{name}.{ext}") for name in ("results", "paired", "variance")
              for ext in ("csv", "md", "tex") if (sweep_dir / ASSETS / f"{name}.{ext}").is_file()]
    tables += [(f"{stem}.pdf", f"{ASSETS}/{stem}.pdf") for stem in ("accuracy_vs_labels", "relative_gain")
               if (sweep_dir / ASSETS / f"{stem}.pdf").is_file()]
    if tables:
        blocks += [p("The same tables and figures for papers:"), files(tables)]
    return blocks


def _other_runs(plan: dict) -> str:
    """The further pretraining runs of a replicated sweep (the page describes the first one)."""
    runs = plan.get("replicates") or []
    if len(runs) < 2:
        return ""
    return (f"; {len(runs)} pretraining runs (replicates 0-{len(runs) - 1}; below, the first): "
            + ", ".join(f"`{r['checkpoint']}`" for r in runs[1:]))


def _interval_note(table: list[dict]) -> list[Block]:
    """How each row's interval was made: its units, the method, clamped components, and what it
    does not cover (one pretraining run)."""
    blocks = [h("How the intervals are made", 3),
              p("A run is one cell (pretraining run, split, subset draw, training seed). Each (pretraining "
                "run, subset draw, seed) unit is averaged over its splits first (splits are a fixed factor). "
                "When the units form a complete cross of the sampled factors (pretraining runs, subset draws, "
                "training seeds; one draw per seed counts as one factor), Var(mean) = Σ_A σ²_A / Π_{f∈A} n_f "
                "over every main effect and interaction A, with method-of-moments components from the mean "
                "squares (a component estimated below 0 is set to 0, which widens the interval) and "
                "Satterthwaite's degrees of freedom; otherwise (a failed cell, or nested draws) a Student-t "
                "interval over the means of the outermost factor's levels. "
                "`tests/test_design_intervals.py` checks 95% coverage in simulated designs.")]
    groups: dict[str, list[str]] = {}
    for r in table:
        how = {"crossed": "crossed", "t": "Student-t", "nested": "t over level means",
               "incomplete": "incomplete grid: t over level means", "single": "one unit, no interval"}[r["interval"]]
        note = f"{r['units']}; {how}" + (f", df {r['df']:.1f}" if r["interval"] != "single" else "")
        if r["clamped"]:
            note += f"; set to 0: {', '.join(r['clamped'])}"
        groups.setdefault(note, []).append(f"{r['protocol']} {r['init']} {r['rule']}")
    blocks.append(ul([f"{', '.join(rows)}: {note}" for note, rows in groups.items()]))
    single = sorted({f"{r['protocol']} {r['rule']}" for r in table if r["init"] == "pretrained" and r["replicates"] == 1})
    if single:
        blocks.append(p("One pretraining run behind the pretrained rows: their intervals cover the subset draw and "
                        "the training seed, not the spread between pretraining runs (which can be larger). Pass "
                        "several exports, `--checkpoint a.pt,b.pt,c.pt`, to cover it."))
    return blocks


def _variance(entries: list[dict], metric: str) -> list[Block]:
    rows = variance_components(entries, metric)
    blocks = [h("Sources of variance", 3)]
    if any(r["separable"] for r in rows):
        blocks.append(p("How much of the spread across runs comes from the pretraining run (or random weight "
                        "draw), the labeled subset that was drawn, the training seed, the split, and the rest "
                        "(their interactions and noise): method-of-moments estimates of the crossed design "
                        "within each split (negative estimates set to 0), as shares of the total, and the "
                        "total's std in points. With one subset draw per seed the two are one source (in the "
                        "subset column; the seed's is —)."))
    else:
        blocks.append(p("This sweep's runs do not cross two sampled factors (one pretraining run and each seed "
                        "its own subset draw, or a user's list), so the sources cannot be told apart: run with "
                        "several `--checkpoint` exports or `--subset-seeds` to separate them. The total std "
                        "across runs, in points:"))
    return blocks + [table(VARIANCE_HEAD, [variance_cells(r) for r in rows])]


def _protocol(entries: list[dict], plan: dict) -> list[Block]:
    """The protocol card: what every number above means, from the cells' own records."""
    done = [e for e in entries if e["status"] == "done"]
    cards = [e["result"]["protocol"] for e in done if "protocol" in e["result"]]
    blocks = [h("Protocol card")]
    if not cards:
        return blocks + [p("No done cell recorded its protocol.")]
    spec = plan.get("spec", {})
    sources = sorted({c["subset_source"].split(" ")[0] + (" list" if c["subset_seed"] < 0 else "") for c in cards})
    selections = sorted({(e["cell"]["protocol"], e["result"]["protocol"]["selection"]) for e in done
                         if "protocol" in e["result"]})
    items = [f"splits: {', '.join(str(s) for s in sorted({c['split'] for c in cards}))} "
             f"(dataset {spec.get('data', '?')}; official split lists)",
             "labeled subsets: " + ("nested per-class draws from the split's training list, seeds "
                                    + ", ".join(str(s) for s in sorted({c['subset_seed'] for c in cards if c['subset_seed'] >= 0}))
                                    if "seeded" in sources else "")
             + ("; " if len(sources) > 1 else "")
             + (", ".join(sorted({c["subset"][5:] for c in cards if c["subset_seed"] < 0})) + " (user's lists)"
                if any(c["subset_seed"] < 0 for c in cards) else ""),
             "training seeds: " + ", ".join(str(s) for s in sorted({c["training_seed"] for c in cards}))
             + ("; crossed with every subset draw" if plan.get("crossed") else "; each seed drew its own subset"),
             "stabilised videos: " + "; ".join(sorted({c.get("stabilised", "not recorded") for c in cards})),
             "test clips per video: " + ", ".join(str(n) for n in sorted({c["test_clips"] for c in cards}))
             + ", " + "; ".join(sorted({c["test_clips_from"] for c in cards})),
             "metrics: " + cards[0]["metric"],
             "choices made from data, per protocol: " + "; ".join(f"{prot}: {sel}" for prot, sel in selections),
             "the test list is read only for each cell's final evaluation, after its training and choices; the "
             "multi-clip protocol over the whole video is this suite's own (the original code has no evaluation script)"]
    return blocks + [ul(items)]


def _health_rows(run_dir: Path) -> tuple[list[dict], tuple]:
    """The run's metrics.csv rows and its method's health panels ([] and () when unreadable)."""
    try:
        rows = _read_metrics(run_dir / "metrics.csv")
    except (OSError, ValueError, KeyError):
        return [], ()
    return rows, _health_panels(run_dir, rows)


def _health_panels(run_dir: Path, rows: list[dict]) -> tuple:
    """The panels the run's method defines (its `health.json`, written by the trainer), else one
    panel of every metrics column (a run from before the file existed)."""
    try:
        panels = json.loads((run_dir / "health.json").read_text())["panels"]
        return tuple((title, tuple((key, label) for key, label in keys)) for title, keys in panels)
    except (OSError, ValueError, KeyError, TypeError):
        return (("metrics", tuple((k, k) for k in rows[-1] if k != "step")),) if rows else ()


def _trajectory(sweep_dir: Path, entries: list[dict]) -> list[Block]:
    """The snapshots the "selected" cells (--trajectory) chose, each on its own subset's validation."""
    chosen = [e for e in entries if e["status"] == "done" and "snapshot" in e["result"]]
    if not chosen:
        return []
    blocks = [h("Checkpoint trajectory"),
              p("Each `selected` cell probed every snapshot of its pretraining run on group-disjoint validation "
                "folds of its own labeled subset (frozen features; a linear probe at the C grid's middle value, "
                "a k-NN at the first k for k-NN cells), never the test list, and ran from the best one (ties: "
                "the later step); `pretrained` is the last snapshot and random init the floor for both. "
                "A subset without a group-disjoint validation part keeps the last snapshot.")]
    curves = [e["result"]["snapshot"] for e in chosen if e["result"]["snapshot"]["rows"]]
    run_dir = Path(chosen[0]["result"]["snapshot"]["path"]).parent
    run_dir = run_dir.parent if run_dir.name == "snapshots" else run_dir
    if curves:
        health, panels = _health_rows(run_dir)
        trajectory_figure(curves, health, panels, sweep_dir / ASSETS)
        blocks.append(img(f"{ASSETS}/trajectory.png", "validation accuracy against pretraining step"))
    rows = []
    for e in sorted(chosen, key=lambda e: e["cell_id"]):
        snap = e["result"]["snapshot"]
        best = max((r[snap["criterion"]] for r in snap["rows"]), default=None) if snap["criterion"] else None
        rows.append([e["cell_id"], str(snap["step"]), pct(best) if best is not None else "—", snap["reason"]])
    return blocks + [table(["cell", "chosen step", "validation %", "how"], rows)]


def _audit(sweep_dir: Path, plan: dict) -> list[Block]:
    """The leakage audit of the checkpoint's pretraining pool against this sweep's test lists,
    and the pretraining run's own audit when it ran one."""
    blocks = [h("Leakage audit")]
    audit = plan.get("audit")
    if not audit:
        return blocks + [p("This sweep was planned before the leakage audit existed: not checked.")]
    verdict = "clean" if audit.get("clean") else "OVERLAP"
    blocks.append(p(f"Pretraining pool against this sweep's test lists (by path, by content hash and, for "
                    f"UCF101, by test group gXX of each split): **{verdict}**: {audit['summary']}."))
    run_audit = Path(plan.get("checkpoint", "")).parent / "audit.json"
    if run_audit.is_file():
        try:
            before = json.loads(run_audit.read_text())
            blocks.append(p(f"Before pretraining (`data.audit`), the run checked its pool against "
                            f"{before.get('target', '?')}: {before.get('summary', '?')}."))
        except (OSError, ValueError):
            blocks.append(p(f"`{run_audit}` cannot be read."))
    leaks = audit.get("leaks") or []
    if leaks:
        blocks.append(table(["kind", "split", "pretraining video", "test video"],
                            [[leak["kind"], str(leak["split"]), leak["pool"], leak["test"]] for leak in leaks[:20]]))
    return blocks


def _read_metrics(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def _pretraining(sweep_dir: Path, plan: dict) -> list[Block]:
    blocks = [h("Pretraining run")]
    checkpoint = Path(plan.get("checkpoint", ""))
    if not checkpoint.is_file():
        return blocks + [p(f"The checkpoint `{checkpoint}` no longer exists: nothing to show about its "
                           "pretraining run.")]
    export = load_export(checkpoint)
    blocks.append(p(f"Checkpoint `{checkpoint}`: discriminator at step {export.step}, clips of "
                    f"{export.frames} frames at {export.size}×{export.size}, data fingerprint "
                    f"`{export.data_fingerprint}`, sha256 `{export.sha256[:16]}…`."))
    if plan.get("checkpoint_sha256") and plan["checkpoint_sha256"] != export.sha256:
        blocks.append(p(f"Warning: the file has changed since the sweep was planned (sha256 then "
                        f"`{plan['checkpoint_sha256'][:16]}…`): what follows describes the current file, "
                        "not necessarily the one the cells used."))
    run_dir = checkpoint.parent
    metrics, config = run_dir / "metrics.csv", run_dir / "config.yaml"
    samples = run_dir / "samples" / "samples_final.gif"
    if not samples.is_file():
        candidates = sorted((run_dir / "samples").glob("samples_*.gif")) if (run_dir / "samples").is_dir() else []
        samples = candidates[-1] if candidates else samples
    if not (metrics.is_file() or config.is_file() or samples.is_file()):
        return blocks + [p(f"No pretraining run folder alongside the checkpoint: `{run_dir}` holds no "
                           "`config.yaml`, `metrics.csv` or `samples/` (a bare `discriminator.pt`), so there "
                           "are no samples or GAN health curves to show. The config stored in the export:"),
                         code(yaml.safe_dump(export.config, sort_keys=False, allow_unicode=True), "yaml")]
    blocks.append(p(f"Run folder: `{run_dir}`."))
    assets = sweep_dir / ASSETS
    if samples.is_file():
        atomic_write_bytes(assets / SAMPLES_NAME, samples.read_bytes())
        blocks += [p(f"Generated samples (fixed noise; copied from `{samples.relative_to(run_dir)}`): each row is "
                     "one video, then (two-stream) its mask and its static background."),
                   img(f"{ASSETS}/{SAMPLES_NAME}", "generated sample videos")]
    else:
        blocks.append(p(f"No sample GIF under `{run_dir / 'samples'}`."))
    if metrics.is_file():
        try:
            rows = _read_metrics(metrics)
        except (OSError, ValueError, KeyError) as exc:
            rows, problem = [], f"`{metrics}` cannot be read: {exc}"
        else:
            problem = f"`{metrics}` has no rows."
        if rows:
            panels = _health_panels(run_dir, rows)
            plot_health(rows, panels, assets / HEALTH_NAME)
            last = rows[-1]
            keys = [(k, label) for _, pairs in panels for k, label in pairs if k in last]
            keys += [("clips_per_s", "clips/s")] if "clips_per_s" in last else []
            blocks += [p(f"Training health of the `{export.method}` run (from `metrics.csv`, each point the mean "
                         "over a logging window; the panels are the method's own, from the run's `health.json`). "
                         "For VGAN: D and G losses, D accuracy on real and on generated clips, and the mean of "
                         "the foreground mask (near 0 or 1 means the mask collapsed)."),
                       img(f"{ASSETS}/{HEALTH_NAME}", "training health curves"),
                       p(f"Last logged window ({len(rows)} rows):"),
                       table(["step"] + [label for _, label in keys],
                             [[f"{int(last['step'])}"] + [f"{last[k]:.3f}" for k, _ in keys]])]
        else:
            blocks.append(p(problem))
    else:
        blocks.append(p(f"No `metrics.csv` in `{run_dir}`: no GAN health curves."))
    if config.is_file():
        blocks += [p("The pretraining config (`config.yaml`, verbatim):"), code(config.read_text(), "yaml")]
    else:
        blocks += [p("No `config.yaml` in the run folder; the config stored in the export:"),
                   code(yaml.safe_dump(export.config, sort_keys=False, allow_unicode=True), "yaml")]
    return blocks


def _configs(sweep_dir: Path, plan: dict) -> list[Block]:
    recipe = plan.get("recipe", {})
    return [h("Exact configs"),
            p("The transfer recipe as resolved (recipe file plus `--set` overrides), which every cell's "
              "key hashes:"),
            code(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), "yaml"),
            p("The sweep plan (`sweep.json`, verbatim: spec, recipe, checkpoint, data key, cell ids):"),
            code((sweep_dir / "sweep.json").read_text(), "json")]


def _manifests(sweep_dir: Path, plan: dict, entries: list[dict]) -> list[Block]:
    spec = plan.get("spec", {})
    recorded: dict[str, set[str]] = {}
    for entry in entries:
        cell = entry.get("cell") or {}
        if "manifest" in cell:
            recorded.setdefault(cell["manifest"], set()).add(cell["manifest_sha256"])
    names = []
    for split in spec.get("splits", ()):
        names += [f"split{split}_train.txt", f"split{split}_{'val' if plan.get('validate') else 'test'}.txt"]
    # every labeled subset the ledger's cells name (a crossed sweep's draws, a user's list)
    names += sorted({m.split("/", 1)[-1] for m in recorded} - set(names))
    rows = []
    for name in names:
        path = sweep_dir / "manifests" / name
        if not path.is_file():
            rows.append([name, "—", "—", "—", "—", "missing", "—"])
            continue
        head, sha = _manifest_header(path), file_sha256(path)
        seen = recorded.get(f"manifests/{name}")
        ledger = "—" if not seen else ("matches" if seen == {sha} else "MISMATCH")
        full = name.rsplit("_", 1)[-1] in ("train.txt", "test.txt", "val.txt")
        subset = f"full {name.rsplit('_', 1)[-1][:-4]} list" if full else head.get("rule", "?")
        rows.append([name, head.get("split", "?"), subset, "—" if full else head.get("seed", "?"),
                     head.get("videos", "?"), sha, ledger])
    return [h("Subset manifests"),
            p("SHA-256 of each manifest file under `manifests/` (a split's full train and test lists and "
              "every labeled subset); `ledger` says whether the hash the ledger's cells recorded matches "
              "the file now."),
            table(["file", "split", "subset", "seed", "videos", "sha256", "ledger"], rows)]


def _ledger(sweep_dir: Path, plan: dict, entries: list[dict]) -> list[Block]:
    ledger = Ledger(sweep_dir / "ledger")
    groups = ledger.summary(plan.get("cells", []))
    counts = {k: len(v) for k, v in groups.items()}
    blocks = [h("Ledger summary"),
              p(f"{len(plan.get('cells', []))} cells in the plan. `interrupted` is a `running` entry whose "
                "process is gone (it resumes from its checkpoint on the next run)."),
              table(["status", "cells"], [[k, str(v)] for k, v in counts.items()])]
    by_id = {e["cell_id"]: e for e in entries}
    if groups["failed"]:
        blocks += [p("Failed cells (first line of the recorded error; the full traceback tail is in "
                     "`ledger/<cell>.json`):"),
                   table(["cell", "error"], [[cid, _first_line(by_id.get(cid, {}).get("error"))]
                                             for cid in groups["failed"]])]
    else:
        blocks.append(p("No failed cells."))
    done = sorted((e for e in entries if e["status"] == "done"), key=lambda e: e["cell_id"])
    if done:
        rows = [[e["cell_id"], str(e["result"].get("labeled_videos", "?")), pct(e["result"]["video_acc"]),
                 pct(e["result"]["clip_acc"]) if "clip_acc" in e["result"] else "—",
                 f"{float(e['run'].get('elapsed_s', 0.0)):.1f}" if isinstance(e.get("run"), dict) else "—"]
                for e in done]
        blocks += [h("Per-cell results", 3), table(PER_CELL_HEAD, rows)]
    return blocks


def build_page(sweep_dir: str | Path, metric: str = "video_acc", *, env: dict | None = None,
               now: datetime | None = None) -> list[Block]:
    """Every block of the page (assets it references are written under `<sweep>/report/`)."""
    sweep_dir = Path(sweep_dir)
    plan = _plan(sweep_dir)
    entries = current_entries(sweep_dir)
    now = now or datetime.now(timezone.utc)
    name = sweep_dir.name
    return ([h(f"Transfer sweep report: {name}", 1),
             p(f"Does VGAN pretraining help when labels are scarce? This sweep compares the pretrained "
               f"discriminator with the same network from random init, across label fractions. Sweep "
               f"folder `{sweep_dir}`; every number below comes from its ledger (`ledger/`) or from the "
               f"pretraining run's `metrics.csv`.")]
            + _headline(sweep_dir, plan, entries, env or environment(), now)
            + _results(sweep_dir, entries, metric)
            + _protocol(entries, plan)
            + _audit(sweep_dir, plan)
            + _trajectory(sweep_dir, entries)
            + _pretraining(sweep_dir, plan)
            + _ledger(sweep_dir, plan, entries)
            + _manifests(sweep_dir, plan, entries)
            + _configs(sweep_dir, plan))


def write_report_page(sweep_dir: str | Path, metric: str = "video_acc") -> dict[str, Path]:
    """Write `<sweep>/report.md` and `<sweep>/report.html` (atomically); returns both paths.
    Run `transfer.report.write_report` first so the tables and figures it references exist."""
    sweep_dir = Path(sweep_dir)
    blocks = build_page(sweep_dir, metric)
    md, page = sweep_dir / "report.md", sweep_dir / "report.html"
    atomic_write_text(md, render_markdown(blocks))
    atomic_write_text(page, render_html(blocks, sweep_dir, f"Transfer sweep report: {sweep_dir.name}"))
    return {"report.md": md, "report.html": page}
