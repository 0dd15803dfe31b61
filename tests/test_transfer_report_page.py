"""The per-sweep report page (report.md + self-contained report.html) against the ledger.

A real tiny VGAN run (so the page sees a real run folder: metrics.csv, config.yaml, samples/)
feeds a tiny sweep (debug executor) in which one probe cell fails on purpose. The checks parse
the written page and recompute every number from the ledger files with their own code.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from transfer.sweeps import protocols as protocols_mod
from transfer.sweeps import SweepSpec, run_sweep
from _tiny import tiny_sweep_spec, write_tiny_export

# Three splits with unequal seeds per split: split 2 loses its random-init seed 1 (both fractions),
# split 3 its pretrained seed 0 at f1. Pairs must be (split, seed), never seeds across splits.
FAILS = ({"protocol": "linear", "init": "random", "split": 2, "seed": 1},
         {"protocol": "linear", "init": "pretrained", "split": 3, "seed": 0, "rule_tag": "f1"})
SPLITS = (1, 2, 3)
PROTOCOLS = ("linear",)
FAIL_MESSAGE = "probe exploded | on purpose"


def tiny_pretrain(root: Path) -> Path:
    """Four real GAN steps on random clips: a run folder exactly as pretrain.trainer writes it."""
    from pretrain.schema import PretrainConfig
    from pretrain.trainer import Trainer
    from videodata.clips import ArrayClips

    cfg = PretrainConfig(experiment_name="tiny", output_root=str(root / "pretrain"))
    cfg.model.width, cfg.model.frames, cfg.model.size = 4, 16, 16
    t = cfg.trainer
    t.steps, t.batch_size, t.log_every, t.ckpt_every, t.num_samples = 4, 4, 1, 2, 2
    t.deterministic, t.progress = True, False
    clips = ArrayClips(torch.randint(0, 256, (12, 16, 16, 16, 3), generator=torch.Generator().manual_seed(0),
                                     dtype=torch.uint8))
    return Trainer(cfg, clips, run_dir=root / "pretrain" / "tiny").fit().export_path


def spec_for(root: Path, checkpoint: Path, out: str, **kw) -> SweepSpec:
    return tiny_sweep_spec(root, checkpoint, out, **{"protocols": PROTOCOLS, "splits": SPLITS, **kw})


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("page")
    checkpoint = tiny_pretrain(root)
    real_probe = protocols_mod._run_probe

    def flaky(ctx, cell, fit):
        if any(all(getattr(cell, k) == v for k, v in fail.items()) for fail in FAILS):
            raise RuntimeError(f"{FAIL_MESSAGE}\nsecond line")
        return real_probe(ctx, cell, fit)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(protocols_mod, "_run_probe", flaky)
        summary = run_sweep(spec_for(root, checkpoint, "sweep"))
    return {"root": root, "checkpoint": checkpoint, "summary": summary, "out": Path(summary["out_dir"])}


# ------------------------------------------------------------------------------ parsing helpers

def md_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of cell texts (header first, the --- line dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|(---\|)+", line):
                current.append([c.strip().replace(r"\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif current:
            tables.append(current)
            current = []
    return tables


class _HTMLTables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.srcs, self.hrefs, self.tags = [], [], [], set()
        self._cell = None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def parse_html(text: str) -> _HTMLTables:
    parser = _HTMLTables()
    parser.feed(text)
    return parser


def by_header(tables, first: list[str]) -> list[list[str]]:
    found = [t for t in tables if t[0][:len(first)] == first]
    assert len(found) == 1, (first, [t[0] for t in tables])
    return found[0]


# ---------------------------------------------------------------- recomputing from the ledger

def plan_entries(out: Path) -> tuple[list[str], dict[str, dict]]:
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    entries = {}
    for cell_id in cells:
        path = out / "ledger" / f"{cell_id}.json"
        if path.is_file():
            entries[cell_id] = json.loads(path.read_text())
    return cells, entries


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def interval(values: list[float]) -> tuple[float, float, float, float]:
    """mean, std, CI low, CI high: scipy's t.interval, an independent route to the same numbers."""
    a = np.asarray(values, dtype=float)
    if a.size == 1 or np.ptp(a) == 0:  # scipy gives nan for a zero scale; the interval is the point
        return a[0], 0.0, a[0], a[0]
    low, high = stats.t.interval(0.95, a.size - 1, loc=a.mean(), scale=a.std(ddof=1) / math.sqrt(a.size))
    return a.mean(), a.std(ddof=1), low, high


def unit_interval(runs: list[tuple[tuple, float]]) -> tuple[float, float, float]:
    """mean, CI low, CI high of the sweep's design here (one subset draw per seed, so each seed is
    one unit): every seed's runs averaged over its splits first, then scipy's t-interval over the
    seeds' means, clipped to the metric's range."""
    by_unit = defaultdict(list)
    for unit, value in runs:
        by_unit[unit].append(value)
    mean, _, low, high = interval([float(np.mean(v)) for v in by_unit.values()])
    return mean, low, high


def expected_results(entries: dict) -> dict[tuple, list[str]]:
    groups = defaultdict(list)
    for e in entries.values():
        if e["status"] == "done":
            c = e["cell"]
            groups[(c["protocol"], c["rule_tag"], c["init"])].append(((c["subset_seed"], c["seed"]), e["result"]))
    rows = {}
    for key, runs in groups.items():
        results = [r for _, r in runs]
        v, c = (interval([r[m] for r in results]) for m in ("video_acc", "clip_acc"))
        vi, ci = (unit_interval([(u, r[m]) for u, r in runs]) for m in ("video_acc", "clip_acc"))
        clip = lambda x: min(max(x, 0.0), 1.0)  # noqa: E731
        per_class = float(np.mean([r["labeled_per_class"] for r in results]))
        per_class_text = f"{per_class:.0f}" if per_class.is_integer() else f"{per_class:.1f}"
        rows[key] = [per_class_text, str(len(results)), f"{pct(vi[0])} ± {pct(v[1])}",
                     f"[{pct(clip(vi[1]))}, {pct(clip(vi[2]))}]",
                     f"{pct(ci[0])} ± {pct(c[1])}", f"[{pct(clip(ci[1]))}, {pct(clip(ci[2]))}]",
                     pct(unit_interval([(u, r["video_top5"]) for u, r in runs])[0]),
                     pct(unit_interval([(u, r["mean_class_acc"]) for u, r in runs])[0])]
    return rows


def expected_gains(entries: dict) -> dict[tuple, list[str]]:
    pairs = defaultdict(dict)
    for e in entries.values():
        if e["status"] == "done":
            c = e["cell"]
            pairs[(c["protocol"], c["rule_tag"], c["split"], c["seed"])][c["init"]] = e["result"]["video_acc"]
    by_rule = defaultdict(list)
    for (protocol, rule, _, seed), inits in pairs.items():
        if {"pretrained", "random"} <= set(inits):
            by_rule[(protocol, rule)].append((seed, inits["pretrained"], inits["random"]))
    rows = {}
    for key, both in by_rule.items():
        pre = unit_interval([(seed, a) for seed, a, _ in both])[0]
        rnd = unit_interval([(seed, b) for seed, _, b in both])[0]
        d = unit_interval([(seed, a - b) for seed, a, b in both])
        low, high = max(d[1], -1.0), min(d[2], 1.0)  # a difference of accuracies lies in [-1, 1]
        rows[key] = [str(len(both)), pct(pre), pct(rnd), pct(d[0]), f"[{pct(low)}, {pct(high)}]", f"{pre / rnd:.2f}"]
    return rows


def check_page(out: Path) -> dict:
    """Everything the issue asks of the page; returns the parsed pieces for case-specific checks."""
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    cells, entries = plan_entries(out)

    # every file the Markdown references exists, by a path relative to the sweep folder
    links = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", md)
    assert links
    for link in links:
        assert not link.startswith(("/", "http:", "https:")), link
        assert (out / link).is_file(), link

    tables = md_tables(md)
    # ledger summary: counts recounted from the ledger files (pending = no file)
    status = {row[0]: int(row[1]) for row in by_header(tables, ["status", "cells"])[1:]}
    recount = {s: sum(1 for c in cells if entries.get(c, {}).get("status", "pending") == s)
               for s in ("pending", "running", "done", "failed")}
    assert {k: status[k] for k in recount} == recount and status["interrupted"] == 0
    failed = {cid: e for cid, e in entries.items() if e["status"] == "failed"}
    if failed:
        rows = by_header(tables, ["cell", "error"])[1:]
        assert {cid: err for cid, err in rows} == {cid: e["error"].splitlines()[0] for cid, e in failed.items()}
    else:
        assert "No failed cells." in md

    done = {cid: e for cid, e in entries.items() if e["status"] == "done"}
    if done:
        results = by_header(tables, ["protocol", "labels", "labeled/class", "init", "n"])
        got = {(r[0], r[1], r[3]): [r[2]] + r[4:] for r in results[1:]}
        assert got == expected_results(entries)
        if expected_gains(entries):
            gains = by_header(tables, ["protocol", "labels", "labeled/class", "pairs"])
            assert {(r[0], r[1]): r[3:] for r in gains[1:]} == expected_gains(entries)
        else:
            assert "no gain to show" in md
        per_cell = by_header(tables, ["cell", "labeled videos"])
        assert {r[0]: r[1:4] for r in per_cell[1:]} == {
            cid: [str(e["result"]["labeled_videos"]), pct(e["result"]["video_acc"]), pct(e["result"]["clip_acc"])]
            for cid, e in done.items()}

    manifests = by_header(tables, ["file", "split", "subset", "seed", "videos", "sha256"])
    assert len(manifests) > 1
    for row in manifests[1:]:
        assert row[5] == hashlib.sha256((out / "manifests" / row[0]).read_bytes()).hexdigest()
        assert row[6] in ("matches", "—")

    # the HTML: self-contained, and the very same tables (hence the same numbers)
    parsed = parse_html(page)
    assert "http:" not in page and "https:" not in page
    assert not parsed.hrefs and not {"script", "link", "iframe"} & parsed.tags
    assert parsed.srcs and all(re.match(r"data:image/(png|gif);base64,", s) for s in parsed.srcs)
    assert parsed.tables == tables
    assert (out / "sweep.json").read_text().strip() in md
    return {"md": md, "html": page, "tables": tables, "links": links}


# ----------------------------------------------------------------------------------------- tests

def test_sweep_writes_the_page_and_every_number_matches_the_ledger(swept):
    out, summary = swept["out"], swept["summary"]
    assert summary["status"]["done"] == 21 and summary["status"]["failed"] == 3
    # sweep.py prints summary["report"]: the page comes last
    assert list(summary["report"])[-2:] == ["report.md", "report.html"]
    assert Path(summary["report"]["report.html"]) == out / "report.html"
    found = check_page(out)
    md, tables = found["md"], found["tables"]
    assert FAIL_MESSAGE.replace("|", r"\|") in md and "second line" not in md
    results = by_header(tables, ["protocol", "labels", "labeled/class", "init", "n"])
    # 3 splits x 2 seeds, less the failed cells
    n = {(r[1], r[3]): int(r[4]) for r in results[1:]}
    assert n == {("f0.1", "pretrained"): 6, ("f0.1", "random"): 5, ("f1", "pretrained"): 5, ("f1", "random"): 5}
    gains = by_header(tables, ["protocol", "labels", "labeled/class", "pairs"])
    assert {r[1]: r[3] for r in gains[1:]} == {"f0.1": "5", "f1": "4"}
    # figures and the pretraining run's assets are referenced and shipped in the sweep folder
    for asset in ("report/accuracy_vs_labels.png", "report/relative_gain.png", "report/pretrain_samples.gif",
                  "report/pretrain_health.png"):
        assert asset in found["links"], asset
    run = swept["checkpoint"].parent
    assert (out / "report/pretrain_samples.gif").read_bytes() == (run / "samples/samples_final.gif").read_bytes()
    assert (run / "config.yaml").read_text().strip() in md
    # the last health row: the pretraining run's metrics.csv, the same numbers
    import csv

    last = list(csv.DictReader(open(run / "metrics.csv")))[-1]
    health = by_header(tables, ["step", "D loss"])
    assert health[1][:3] == [str(int(float(last["step"]))), f"{float(last['d_loss']):.3f}",
                             f"{float(last['g_loss']):.3f}"]
    # headline: what, where, versions
    for needed in ("dataset: synthetic", "seeds: 0, 1", "splits: 1 (", "`f0.1`", "protocols: linear;",
                   "inits: pretrained, random", "recipe: `demo`", "cores", f"torch {torch.__version__}",
                   "scikit-learn ", "hydra-core ", "submitit ", "timm ", "av ", "numpy "):
        assert needed in md, needed


def test_page_follows_the_ledger_when_it_changes(swept, tmp_path):
    """Drop a done cell (it becomes pending) and re-render: counts, n and CIs follow."""
    import shutil

    from transfer.report import write_all

    out = tmp_path / "copy"
    shutil.copytree(swept["out"], out, ignore=shutil.ignore_patterns("cells", "features", "jobs"))
    plan = json.loads((out / "sweep.json").read_text())
    dropped = [c for c in plan["cells"] if c.startswith("linear-pretrained-split1-f1-sub0-seed0")]
    assert len(dropped) == 1
    (out / "ledger" / f"{dropped[0]}.json").unlink()
    (out / "report.md").unlink()
    write_all(out)
    found = check_page(out)
    status = dict(by_header(found["tables"], ["status", "cells"])[1:])
    assert status["pending"] == "1" and status["done"] == "20"
    results = by_header(found["tables"], ["protocol", "labels", "labeled/class", "init", "n"])
    assert [r[4] for r in results if r[:2] == ["linear", "f1"] and r[3] == "pretrained"] == ["4"]


def test_bare_checkpoint_without_run_folder(swept):
    """A discriminator.pt with nothing beside it: the page says so instead of failing."""
    root = swept["root"]
    bare = write_tiny_export(root / "bare" / "discriminator.pt")
    summary = run_sweep(spec_for(root, bare, "bare-sweep", fractions=(1.0,), seeds=(0,), protocols=("linear",),
                                 inits=("pretrained",)))
    out = Path(summary["out_dir"])
    found = check_page(out)
    assert "No pretraining run folder alongside the checkpoint" in found["md"]
    assert "No pretraining run folder alongside the checkpoint" in found["html"]
    assert "random_init: true" in found["md"]  # the config stored in the export instead of config.yaml
    assert not any("pretrain_" in link for link in found["links"])
    # the checkpoint deleted after the sweep: still a page, saying so
    from transfer.report.page import write_report_page

    bare.unlink()
    write_report_page(out)
    found = check_page(out)
    assert "no longer exists" in found["md"]


def test_not_a_sweep_folder_is_a_clear_error(tmp_path):
    from transfer.report.page import write_report_page

    from transfer.report.stats import ReportError

    with pytest.raises(ReportError, match="sweep.json"):
        write_report_page(tmp_path)
