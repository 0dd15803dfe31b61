"""A results registry: one JSON row per result, and a leaderboard merged from many sweeps.

`result_records(sweep_dir)` turns a sweep's current ledger into one row per (protocol, init,
labels) result: its protocol key (what must be equal for two results to be ranked together:
dataset, splits, protocol, label rule, development or test lists and their hashes, metric, test
clips, the hash of the recipe sections the protocol reads), its mean and design interval
(`transfer.report.design`), every pretraining run's own mean, the hashes of the exports and of
the subset manifests, the backbone architecture, and the versions of the process. `write_report`
writes them to `report/results.jsonl`.

    python -m transfer.leaderboard SWEEP_OR_JSONL ... --out DIR [--labels a,b,...]

merges the rows of many sweeps into `leaderboard.{csv,md,html}`: one table per protocol key,
ranked by mean within it; results under different protocol keys are never ranked against each
other. Each random init (`random`, `random_torch`) appears once per backbone architecture in a
table (the sweeps of several methods on one backbone each carry the same random-init rows).
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from pretrain.export import ExportError, load_export
from runkit.atomic import atomic_write_text
from runkit.errors import UserError
from transfer.report.design import design_interval
from transfer.report.document import h, p, render_html, render_markdown, table
from transfer.classifier import RANDOM_INITS
from transfer.report.stats import RANDOM_INIT_NAMES, current_entries, protocol_sections, replicate_name, result_rows
from transfer.report.tables import to_csv

FORMAT = "vganbench.result/1"


class RegistryError(UserError):
    """A path is neither a sweep folder nor a results.jsonl file; names which."""


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _exports(plan: dict) -> list[dict]:
    runs = plan.get("replicates") or [{"checkpoint": plan.get("checkpoint"),
                                       "checkpoint_sha256": plan.get("checkpoint_sha256")}]
    return [{"path": r["checkpoint"], "sha256": r["checkpoint_sha256"]} for r in runs]


def _backbone(plan: dict) -> tuple[str, dict]:
    """(method, architecture) of the sweep's first export, ("?", {}) when it is gone."""
    try:
        export = load_export(plan["checkpoint"])
    except (ExportError, OSError, KeyError, TypeError):
        return "?", {}
    return export.method, export.arch


def result_records(sweep_dir: str | Path, metric: str = "video_acc", versions: dict | None = None) -> list[dict]:
    """One row per (protocol, init, rule) of the sweep's current cells (see the module docstring)."""
    sweep_dir = Path(sweep_dir)
    plan_path = sweep_dir / "sweep.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    spec, recipe = plan.get("spec", {}), plan.get("recipe", {})
    entries = [e for e in current_entries(sweep_dir) if e["status"] == "done"]
    rows = result_rows(entries, metric)
    manifests: dict[tuple, set] = defaultdict(set)
    tests: dict[tuple, set] = defaultdict(set)
    for e in entries:
        key = (e["cell"]["protocol"], e["cell"]["init"], e["cell"]["rule_tag"])
        if e["cell"].get("manifest_sha256"):  # older or hand-made ledgers may not carry them
            manifests[key].add(e["cell"]["manifest_sha256"])
        if e["cell"].get("test_list"):
            tests[key].add(e["cell"]["test_list"])
    method, arch = _backbone(plan)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["protocol"], r["init"], r["rule"])].append(r)
    out = []
    for (protocol, init, rule), runs in sorted(groups.items()):
        sections = {name: recipe.get(name) for name in protocol_sections(plan, protocol)}
        test_hashes = sorted(_file_hash(sweep_dir / t) for t in tests[(protocol, init, rule)])
        key = {"dataset": spec.get("data"), "splits": sorted({r["split"] for r in runs}), "protocol": protocol,
               "rule": rule, "metric": metric, "evaluation": "validation" if plan.get("validate") else "test",
               "test_lists_sha256": test_hashes, "test_clips": sorted({r["test_clips"] for r in runs}),
               "recipe_sha256": _digest({**sections, "cache": recipe.get("cache")})}
        interval = design_interval(runs, replicates=replicate_name(init))
        per_run = defaultdict(list)
        for r in runs:
            per_run[r["replicate"]].append(r["value"])
        out.append({"format": FORMAT, "sweep": str(sweep_dir), "label": sweep_dir.name, "method": method,
                    "init": init, "backbone": arch, "backbone_sha256": _digest(arch),
                    "protocol_key": key, "protocol_key_id": _digest(key),
                    "labeled_per_class": float(np.mean([r["per_class"] for r in runs])),
                    "n": len(runs), "mean": interval.mean, "ci_low": interval.ci_low, "ci_high": interval.ci_high,
                    "units": interval.units, "interval": interval.method,
                    "per_replicate": {str(k): float(np.mean(v)) for k, v in sorted(per_run.items())},
                    "exports": _exports(plan) if init not in RANDOM_INITS else [],
                    "manifests_sha256": sorted(manifests[(protocol, init, rule)]),
                    "versions": versions or {}})
    return out


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def write_records(sweep_dir: str | Path, metric: str = "video_acc", versions: dict | None = None) -> Path:
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "report" / "results.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                    for r in result_records(sweep_dir, metric, versions)))
    return path


def read_records(source: str | Path) -> list[dict]:
    """The rows of a sweep folder (computed now) or of a results.jsonl file."""
    source = Path(source)
    if (source / "sweep.json").is_file():
        return result_records(source)
    if source.is_file():
        try:
            rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{source}: not a results.jsonl file (line {exc.lineno}: {exc.msg})") from None
        if not rows or any(r.get("format") != FORMAT for r in rows):
            raise RegistryError(f"{source}: not a results.jsonl file (rows of format {FORMAT} expected)")
        return rows
    raise RegistryError(f"{source}: neither a sweep folder (with sweep.json) nor a results.jsonl file")


def leaderboard(rows: Sequence[dict]) -> list[tuple[dict, list[dict]]]:
    """(protocol key, ranked rows) per protocol key; each random init once per backbone in each."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_key[r["protocol_key_id"]].append(r)
    tables = []
    for rows_of_key in by_key.values():
        seen, kept = set(), []
        for r in rows_of_key:
            if r["init"] in RANDOM_INITS:
                if (r["init"], r["backbone_sha256"]) in seen:
                    continue
                seen.add((r["init"], r["backbone_sha256"]))
            kept.append(r)
        ranked = sorted(kept, key=lambda r: -r["mean"])
        for rank, r in enumerate(ranked, start=1):
            r["rank"] = rank
        tables.append((rows_of_key[0]["protocol_key"], ranked))
    return sorted(tables, key=lambda t: (t[0]["dataset"] or "", t[0]["protocol"], t[0]["rule"], t[0]["evaluation"]))


HEAD = ["rank", "result", "init", "mean %", "95% CI", "design", "runs", "exports"]


def _cells(r: dict) -> list[str]:
    name = (f"{RANDOM_INIT_NAMES[r['init']]} ({r['label']}'s backbone)" if r["init"] in RANDOM_INITS
            else f"{r['label']} ({r['method']})")
    exports = ", ".join(e["sha256"][:10] for e in r["exports"]) or "—"
    return [str(r["rank"]), name, r["init"], f"{100 * r['mean']:.1f}",
            f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]", r["units"], str(r["n"]), exports]


def write_leaderboard(sources: Sequence[str | Path], out: str | Path, labels: Sequence[str] = ()) -> dict[str, Path]:
    rows = []
    for i, source in enumerate(sources):
        for r in read_records(source):
            rows.append({**r, "label": labels[i] if i < len(labels) else r["label"]})
    out = Path(out)
    tables = leaderboard(rows)
    blocks = [h("Leaderboard"),
              p(f"{len(rows)} results from {len(sources)} source(s). One table per protocol key (dataset, splits, "
                "protocol, labels, test lists and their hashes, metric, test clips, recipe); results under "
                "different keys are never ranked against each other. Mean and 95% interval that fits each "
                "sweep's design; random init once per backbone architecture.")]
    flat = []
    for key, ranked in tables:
        title = (f"{key['dataset']} split(s) {','.join(map(str, key['splits']))}, {key['protocol']}, {key['rule']}, "
                 f"{key['metric']} on {key['evaluation']} lists")
        blocks += [h(title, 3), p(f"Protocol key `{ranked[0]['protocol_key_id']}`: recipe `{key['recipe_sha256']}`, "
                                  f"test lists {', '.join(t[:10] for t in key['test_lists_sha256'])}, "
                                  f"test clips {key['test_clips']}."),
                   table(HEAD, [_cells(r) for r in ranked])]
        flat += [{"protocol_key_id": r["protocol_key_id"], "rank": r["rank"], "label": r["label"],
                  "method": r["method"], "init": r["init"], "protocol": key["protocol"], "rule": key["rule"],
                  "labeled_per_class": r["labeled_per_class"], "mean": r["mean"], "ci_low": r["ci_low"],
                  "ci_high": r["ci_high"], "design": r["units"], "runs": r["n"]} for r in ranked]
    written = {"leaderboard.csv": out / "leaderboard.csv", "leaderboard.md": out / "leaderboard.md",
               "leaderboard.html": out / "leaderboard.html"}
    atomic_write_text(written["leaderboard.csv"], to_csv(flat))
    atomic_write_text(written["leaderboard.md"], render_markdown(blocks))
    atomic_write_text(written["leaderboard.html"], render_html(blocks, out, "Leaderboard"))
    return written
