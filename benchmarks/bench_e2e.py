"""End-to-end time of the main job: `bash scripts/main.sh` from nothing, then again (warm rerun).

    python benchmarks/bench_e2e.py            # cold run in a fresh temporary OUTPUTS folder, then a warm rerun
    python benchmarks/bench_e2e.py --keep     # keep that folder (its path is printed)
    python benchmarks/bench_e2e.py --no-warm  # the cold run only
    python benchmarks/bench_e2e.py --baseline c3832f9   # also the main job of an older commit, first

With `--baseline REF`, the same machine first runs REF's `scripts/main.sh` (a `git worktree` of REF
sharing this checkout's .venv, its packages first on PYTHONPATH, its setup step skipped) cold,
then this tree's; the section then compares the two: wall time less setup, and the video
accuracy of every (protocol, init, fraction) side by side, so that a speed-up is shown to keep
the numbers.

The cold run starts with an empty OUTPUTS folder, so every stage runs: the synthetic set, the clip
caches, three cpu_demo pretraining runs of up to 450 GAN iterations each (main.sh gives each a
1-minute training budget) and the 108-cell transfer sweep over them with its report. The warm rerun uses the same folder and must reuse all of it. The job's output is
streamed with the elapsed time in front of each line; stage times come from the arrival times of
the lines that mark a stage's start (main.sh's `[main]` lines, the progress bars' first lines and
the pretraining log), the transfer cells' own times from the sweep's ledger. Peak RSS is that of
the largest single process of the job (from the kernel's rusage of the reaped process tree).
`run(args)` returns the numbers as data and `section(...)` renders the RESULTS.md section.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import common
from runkit.cli import ArgumentParser
from runkit.errors import UserError
from benchmarks.common import (busy_note, fmt_load, fmt_num, fmt_ratio, fmt_seconds, load_average, machine_info,
                               md_table, notes, ratio, stamp)

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADING = "End-to-end (main job)"
BUDGET_MIN = 15.0

# (stage, pattern): a stage starts at the first output line matching its pattern. Top-level
# stages come from main.sh; a sub-stage ("pretrain/cache") only counts inside its top stage.
TOP_MARKERS = (
    ("pretrain", re.compile(r"^\[main\] 1/2 ")),
    ("transfer", re.compile(r"^\[main\] 2/2 ")),
    ("summary", re.compile(r"^\[main\] done")),
)
SUB_MARKERS = (
    ("synthetic", re.compile(r"synthetic videos")),      # videodata.synthetic's progress bar
    ("cache", re.compile(r"clip cache [0-9a-f]")),       # videodata.cache's progress bar
    ("train", re.compile(r"\]\[pretrain\.data\]\[INFO\] - pretraining on |^pretraining on ")),
    ("cells", re.compile(r"^cells\b|^\s*cells:")),       # transfer.runner's progress bar
)
STAGE_LABELS = {
    "setup": "setup (scripts/setup.sh: venv check, `pip install -e`)",
    "pretrain": "pretraining (`python pretrain/run.py`)",
    "pretrain/start": "start-up (imports, config)",
    "pretrain/synthetic": "synthetic set generation",
    "pretrain/cache": "clip cache build",
    "pretrain/train": "GAN training + export + samples",
    "transfer": "transfer sweep (`python transfer/sweep.py`)",
    "transfer/start": "start-up, planning",
    "transfer/synthetic": "synthetic set generation",
    "transfer/cache": "clip cache build (labeled videos)",
    "transfer/cells": "cells (jobs), features, report",
    "summary": "summary lines",
}
EXPORT_LINE = re.compile(r"discriminator exported to (?P<path>\S+) \(step (?P<step>\d+), (?P<stopped>\w+)\)")
SWEEP_LINE = re.compile(r"sweep folder: (?P<out>\S+)\s+\((?P<cells>\d+) cells, (?P<skipped>\d+) already done, "
                        r"(?P<seconds>[\d.]+) s\)")
STATUS_LINE = re.compile(r"^status: (?P<status>.*)$")


class E2EError(UserError, RuntimeError):
    """The main job failed; the message holds its exit status and the tail of its output."""


# ------------------------------------------------------------------------------------- parsing

@dataclass
class Timeline:
    """Stage start times from (elapsed seconds, line) pairs, fed in order."""
    events: list[tuple[float, str]] = field(default_factory=lambda: [(0.0, "setup")])
    export: dict | None = None
    sweep: dict | None = None
    status: str | None = None
    _top: str = "setup"

    def feed(self, t: float, line: str, markers_only: bool = False) -> None:
        """One output line at `t` s; `markers_only` for an unfinished line (stage starts only)."""
        text = line.strip()
        if not text:
            return
        for stage, pattern in TOP_MARKERS:
            if pattern.search(text) and not self._seen(stage):
                self._top = stage
                self.events.append((t, stage))
                return
        if self._top in ("pretrain", "transfer"):
            for sub, pattern in SUB_MARKERS:
                name = f"{self._top}/{sub}"
                if pattern.search(text) and not self._seen(name):
                    self.events.append((t, name))
        if markers_only:
            return
        m = EXPORT_LINE.search(text)
        if m:
            self.export = {"path": m["path"], "step": int(m["step"]), "stopped": m["stopped"]}
        m = SWEEP_LINE.search(text)
        if m:
            self.sweep = {"out_dir": m["out"], "cells": int(m["cells"]), "skipped": int(m["skipped"]),
                          "seconds": float(m["seconds"])}
        m = STATUS_LINE.search(text)
        if m:
            self.status = m["status"]

    def _seen(self, name: str) -> bool:
        return any(n == name for _, n in self.events)

    def durations(self, end: float) -> dict[str, float]:
        """Seconds per stage: each top stage until the next one; each sub-stage until the next
        event; a top stage with sub-stages also gets '<top>/start' (before its first sub-stage)."""
        events = list(self.events)  # arrival order (times never decrease)
        out: dict[str, float] = {}
        tops = [(t, n) for t, n in events if "/" not in n]
        for i, (t, name) in enumerate(tops):
            out[name] = (tops[i + 1][0] if i + 1 < len(tops) else end) - t
        for i, (t, name) in enumerate(events):
            if "/" in name:
                out[name] = (events[i + 1][0] if i + 1 < len(events) else end) - t
        for t, name in tops:
            subs = [s for s, n in events if n.startswith(name + "/")]
            if subs:
                out[f"{name}/start"] = min(subs) - t
        return out


def _split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (ended by \\n or a progress bar's \\r) and the unfinished rest."""
    parts = re.split(rb"\r\n|\n|\r", buffer)
    return parts[:-1], parts[-1]


def _stream(proc, start: float, timeline: Timeline, tail: list[str], label: str, echo: bool) -> None:
    """Read the job's output to its end: feed the timeline, keep the tail, echo with elapsed times."""
    pending = b""
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        now = time.perf_counter() - start
        lines, pending = _split_lines(pending + chunk) if chunk else ([pending] if pending else [], b"")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if not line.strip():
                continue
            timeline.feed(now, line)
            tail.append(line)
            del tail[:-40]
            if echo:
                print(f"[{label} {now:7.1f}s] {line}", flush=True)
        if pending.strip():
            # a progress bar's line ends with the *next* \r (seconds later): mark its stage now
            timeline.feed(now, pending.decode("utf-8", "replace"), markers_only=True)
        if not chunk:
            return


def run_job(script: Path, outputs: Path, label: str, *, echo: bool = True, env_extra: dict | None = None) -> dict:
    """Run `bash script` with OUTPUTS=outputs; stream its output; time its stages."""
    env = dict(os.environ, OUTPUTS=str(outputs), PYTHONUNBUFFERED="1", **(env_extra or {}))
    env.pop("VGANBENCH_NO_PROGRESS", None)  # the progress bars' first lines are stage markers
    load_start = load_average()
    timeline = Timeline()
    tail: list[str] = []
    start = time.perf_counter()
    # its own session: on an error or Ctrl-C here the whole job (bash and its python children) is stopped
    proc = subprocess.Popen(["bash", str(script)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _stream(proc, start, timeline, tail, label, echo)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    proc.stdout.close()
    # wait4: the exit status plus the rusage of the job's whole reaped process tree
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise E2EError(f"`bash {script}` ({label} run) exited with {proc.returncode} after {wall:.0f} s; "
                       f"last lines:\n" + "\n".join(tail[-25:]))
    return {"label": label, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20,
            "load_start": load_start, "load_end": load_average(),
            "stages": timeline.durations(wall), "export": timeline.export, "sweep": timeline.sweep,
            "status": timeline.status}


# ----------------------------------------------------------------------------- run artefacts

def pretrain_summary(outputs: Path) -> dict | None:
    """Steps, GAN throughput and mask statistics from the pretraining run's metrics.csv."""
    latest = outputs / "pretrain" / "LATEST"
    if not latest.is_file():
        return None
    metrics = Path(latest.read_text().strip()).parent / "metrics.csv"
    if not metrics.is_file():
        return None
    with open(metrics, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None

    def column(name):
        return [float(r[name]) for r in rows if r.get(name) not in (None, "")]

    rate, mask = column("clips_per_s"), column("mask_mean")
    acc_real, acc_fake = column("d_acc_real"), column("d_acc_fake")
    return {"steps": int(float(rows[-1]["step"])), "clips_per_s_median": statistics.median(rate) if rate else None,
            "mask_min": min(mask) if mask else None, "mask_max": max(mask) if mask else None,
            "d_acc_real_last": acc_real[-1] if acc_real else None,
            "d_acc_fake_last": acc_fake[-1] if acc_fake else None}


def sweep_summary(out_dir: str | Path | None) -> dict | None:
    """Cell times by protocol and mean video accuracy per (protocol, init, labels) from the ledger."""
    if not out_dir:
        return None
    ledger = Path(out_dir) / "ledger"
    if not ledger.is_dir():
        return None
    times: dict[str, list[float]] = {}
    acc: dict[tuple, list[float]] = {}
    failed = 0
    for path in sorted(ledger.glob("*.json")):
        entry = json.loads(path.read_text(encoding="utf-8"))
        cell = entry.get("cell") or {}
        if entry.get("status") != "done":
            failed += entry.get("status") == "failed"
            continue
        protocol = cell.get("protocol", "?")
        times.setdefault(protocol, []).append(float((entry.get("run") or {}).get("elapsed_s", 0.0)))
        result = entry.get("result") or {}
        if "video_acc" in result:
            key = (protocol, cell.get("init", "?"), float(cell.get("rule_value", 0.0)))
            acc.setdefault(key, []).append(100 * float(result["video_acc"]))
    return {"cell_seconds": {p: {"cells": len(v), "total_s": sum(v), "mean_s": sum(v) / len(v)}
                             for p, v in times.items()},
            "failed": failed,
            "video_acc": [{"protocol": p, "init": i, "fraction": f, "mean": sum(v) / len(v), "n": len(v)}
                          for (p, i, f), v in sorted(acc.items())]}


# ------------------------------------------------------------------------------------ the baseline

SETUP_STUB = "#!/usr/bin/env bash\necho '[setup] baseline: the checkout .venv, packages from this tree (PYTHONPATH)'\n"


@contextlib.contextmanager
def baseline_tree(ref: str, parent: Path):
    """A detached `git worktree` of `ref` that runs on this checkout's .venv: the worktree's own
    packages come first on PYTHONPATH, and its setup.sh is a stub (a `pip install -e` there would
    point the shared venv at the worktree). Removed afterwards."""
    tree = parent / f"baseline-{ref}"
    try:
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=REPO_ROOT, check=True,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise UserError(f"--baseline {ref}: git worktree add failed: {exc.stderr.strip()[:300]}") from None
    try:
        (tree / ".venv").symlink_to(REPO_ROOT / ".venv")
        (tree / "scripts" / "setup.sh").write_text(SETUP_STUB)
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO_ROOT, capture_output=True)


def without_setup(run: dict) -> float:
    return run["wall_s"] - (run["stages"].get("setup") or 0.0)


def accuracy_pairs(old: dict | None, new: dict | None) -> list[dict]:
    """(protocol, init, fraction) rows with the baseline's and this tree's mean video accuracy."""
    def index(cells):
        return {(a["protocol"], a["init"], a["fraction"]): a for a in (cells or {}).get("video_acc", [])}
    a, b = index(old), index(new)
    return [{"protocol": k[0], "init": k[1], "fraction": k[2], "baseline": a[k]["mean"] if k in a else None,
             "now": b[k]["mean"] if k in b else None} for k in sorted(set(a) | set(b))]


# ------------------------------------------------------------------------------------ the run

def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(prog=common.prog(__file__), description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--keep", action="store_true", help="keep the OUTPUTS folder (default: delete it)")
    p.add_argument("--no-warm", action="store_true", help="skip the warm rerun")
    p.add_argument("--budget-min", type=float, default=BUDGET_MIN, help="the cold run's time budget")
    p.add_argument("--script", type=Path, default=REPO_ROOT / "scripts" / "main.sh",
                   help="the job to time (it must honour OUTPUTS); default scripts/main.sh")
    p.add_argument("--tmp-root", type=Path, default=None, help="where the fresh OUTPUTS folder goes")
    p.add_argument("--quiet", action="store_true", help="do not stream the job's output")
    p.add_argument("--baseline", default=None, metavar="REF",
                   help="also time REF's main job (a git commit), cold, before this tree's")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.add_argument("--write", action="store_true", help=f"replace the '{HEADING}' section of RESULTS.md")
    args = p.parse_args(argv)
    if not args.script.is_file():
        p.error(f"--script {args.script} does not exist")
    if args.budget_min <= 0:
        p.error("--budget-min must be > 0")
    return args


def _command(args) -> str:
    flags = []
    if args.script.resolve() != (REPO_ROOT / "scripts" / "main.sh").resolve():
        flags += ["--script", str(args.script)]
    if args.no_warm:
        flags.append("--no-warm")
    if args.budget_min != BUDGET_MIN:
        flags += ["--budget-min", f"{args.budget_min:g}"]
    if args.baseline:
        flags += ["--baseline", args.baseline]
    return " ".join(["python benchmarks/bench_e2e.py", *flags])


def run(args) -> dict:
    """Cold run in a fresh folder, then (unless --no-warm) a warm rerun there; plain data back."""
    script = args.script.resolve()
    root = Path(tempfile.mkdtemp(prefix="vganbench_e2e_", dir=args.tmp_root))
    outputs = root / "now" if args.baseline else root
    print(f"[e2e] OUTPUTS={outputs}; load average {fmt_load(load_average())}", file=sys.stderr, flush=True)
    result = {"stage": "e2e", "command": _command(args), "quick": False, "script": str(script),
              "budget_s": 60 * args.budget_min, "outputs": str(root) if args.keep else None,
              "cores": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS", "2 (main.sh default)")}
    try:
        if args.baseline:
            old_outputs = root / "baseline"
            with baseline_tree(args.baseline, root) as tree:
                print(f"[e2e] baseline {args.baseline}: {tree}", file=sys.stderr, flush=True)
                old = run_job(tree / "scripts" / "main.sh", old_outputs, "baseline", echo=not args.quiet,
                              env_extra={"PYTHONPATH": str(tree)})
                result["baseline"] = {"ref": args.baseline, "run": old,
                                      "sweep_cells": sweep_summary((old.get("sweep") or {}).get("out_dir"))}
        cold = run_job(script, outputs, "cold", echo=not args.quiet)
        result["cold"] = cold
        result["pretrain"] = pretrain_summary(outputs)
        result["sweep_cells"] = sweep_summary((cold.get("sweep") or {}).get("out_dir"))
        if not args.no_warm:
            result["warm"] = run_job(script, outputs, "warm", echo=not args.quiet)
    finally:
        if args.keep:
            print(f"[e2e] kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    result["cold_vs_budget"] = ratio(result["cold"]["wall_s"], result["budget_s"])
    warm = result.get("warm")
    result["warm_vs_cold"] = ratio(warm["wall_s"], result["cold"]["wall_s"]) if warm else None
    result["warm_reuse"] = reuse_problems(warm) if warm else None
    base = result.get("baseline")
    if base:
        base["now_vs_baseline"] = ratio(without_setup(result["cold"]), without_setup(base["run"]))
        base["accuracy"] = accuracy_pairs(base["sweep_cells"], result.get("sweep_cells"))
    return result


def reuse_problems(warm: dict) -> list[str]:
    """What the warm rerun redid instead of reusing (empty: it reused everything)."""
    problems = []
    for sub, what in (("synthetic", "generated synthetic videos"), ("cache", "built a clip cache")):
        for top in ("pretrain", "transfer"):
            if f"{top}/{sub}" in warm["stages"]:
                problems.append(f"{top} {what}")
    export = warm.get("export")
    if export is None:
        problems.append("pretraining printed no export line")
    elif export["stopped"] != "already_finished":
        problems.append(f"pretraining ran again ({export['stopped']} at step {export['step']}): the cold run "
                        f"had not reached its last step")
    sweep = warm.get("sweep")
    if sweep is None:
        problems.append("the sweep printed no summary line")
    elif sweep["skipped"] != sweep["cells"]:
        problems.append(f"the sweep ran {sweep['cells'] - sweep['skipped']} of {sweep['cells']} cells again")
    return problems


# ---------------------------------------------------------------------------------- rendering

def _share(seconds: float | None, total: float) -> str:
    if seconds is None:
        return "-"
    share = 100 * seconds / total
    return "<1%" if share < 1 else f"{share:.0f}%"


def _stage_rows(result: dict) -> list[tuple]:
    cold, warm = result["cold"], result.get("warm")
    present = [n for n in STAGE_LABELS if n in cold["stages"] or (warm and n in warm["stages"])]
    rows = []
    for name in present:
        label = STAGE_LABELS[name]
        if "/" in name:
            label = "&nbsp;&nbsp;" + label
        c = cold["stages"].get(name)
        w = warm["stages"].get(name) if warm else None
        rows.append((label, fmt_seconds(c), fmt_seconds(w) if warm else "-",
                     _share(c, cold["wall_s"])))
    rows.append(("**total**", f"**{fmt_seconds(cold['wall_s'])}**",
                 f"**{fmt_seconds(warm['wall_s'])}**" if warm else "-", "100%"))
    return rows


def _shown(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path


def baseline_tables(result: dict) -> list[str]:
    """The older commit's main job beside this tree's: times, then accuracy (empty without one)."""
    base = result.get("baseline")
    if not base:
        return []
    old, new = base["run"], result["cold"]
    rows = [("main job less setup (cold)", fmt_seconds(without_setup(new)), fmt_seconds(without_setup(old)),
             f"{fmt_ratio(base['now_vs_baseline'])} of baseline")]
    for name in ("pretrain", "pretrain/synthetic", "pretrain/train", "transfer", "transfer/cells"):
        if name in new["stages"] or name in old["stages"]:
            label = ("&nbsp;&nbsp;" if "/" in name else "") + STAGE_LABELS[name]
            n, o = new["stages"].get(name), old["stages"].get(name)
            rows.append((label, fmt_seconds(n), fmt_seconds(o),
                         f"{fmt_ratio(ratio(n, o))} of baseline" if n and o else "-"))
    times = md_table(["figure", "this tree", f"baseline `{base['ref']}` **(peer)**", "ratio"], rows, "lrrr")
    acc = md_table(["protocol", "init", "fraction", "this tree (%)", f"baseline `{base['ref']}` (%)", "difference"],
                   [(a["protocol"], a["init"], f"{a['fraction']:g}", fmt_num(a["now"], 3), fmt_num(a["baseline"], 3),
                     f"{a['now'] - a['baseline']:+.1f}" if a["now"] is not None and a["baseline"] is not None else "-")
                    for a in base["accuracy"]], "lllrrr")
    return [f"This tree's main job against commit `{base['ref']}`'s, cold, one after the other on this machine "
            f"(the baseline first; each without its setup step):", times,
            "Video accuracy of the two runs (mean over the sweep's seeds):", acc]


def section(result: dict, info: dict, load_end=None) -> str:
    """The "## End-to-end (main job)" section of RESULTS.md, from `run`'s result."""
    cold, warm = result["cold"], result.get("warm")
    budget = result["budget_s"]
    headline = md_table(
        ["figure", "measured", "peer", "ratio"],
        [("cold run (empty OUTPUTS: every stage)", fmt_seconds(cold["wall_s"]),
          f"budget: {fmt_seconds(budget)}", f"{fmt_ratio(result['cold_vs_budget'])} of budget"),
         ("warm rerun (same OUTPUTS: reuse)", fmt_seconds(warm["wall_s"]) if warm else "not run",
          f"cold run: {fmt_seconds(cold['wall_s'])}", f"{fmt_ratio(result['warm_vs_cold'])} of cold" if warm else "-")],
        "lrrr")
    stages = md_table(["stage", "cold", "warm", "share of cold"], _stage_rows(result), "lrrr")
    usage = md_table(
        ["run", "wall", "CPU (user+sys)", "CPU/wall", "peak RSS (largest process)", "load average at start",
         "at end"],
        [(r["label"], fmt_seconds(r["wall_s"]), fmt_seconds(r["cpu_s"]), fmt_num(r["cpu_s"] / r["wall_s"], 2),
          f"{fmt_num(r['peak_rss_mib'] / 1024, 3)} GiB", fmt_load(r["load_start"]), fmt_load(r["load_end"]))
         for r in (cold, warm) if r],
        "lrrrrrr")
    found = []
    inside = cold["wall_s"] <= budget
    found.append(f"The cold run took {fmt_seconds(cold['wall_s'])}, {'inside' if inside else '**over**'} the "
                 f"{fmt_seconds(budget)} budget on {result['cores']} cores ({fmt_ratio(result['cold_vs_budget'])}).")
    export, pre = cold.get("export"), result.get("pretrain")
    if export:
        line = (f"The pretraining run whose export the job names last stopped at step {export['step']} "
                f"({export['stopped'].replace('_', ' ')})")
        if pre and pre.get("clips_per_s_median"):
            line += (f"; median GAN throughput {fmt_num(pre['clips_per_s_median'])} clips/s, mask mean "
                     f"{fmt_num(pre['mask_min'], 2)}-{fmt_num(pre['mask_max'], 2)} over the run, D accuracy "
                     f"real/fake at the end {fmt_num(pre['d_acc_real_last'], 2)}/{fmt_num(pre['d_acc_fake_last'], 2)}")
        found.append(line + ".")
        if export["stopped"] == "time_limit":
            found.append("Its training budget (main.sh's trainer.time_limit_min) engaged: this machine trained "
                         "fewer than the preset's iterations, so the transfer numbers of this run come from a "
                         "shorter pretraining.")
    cells = result.get("sweep_cells")
    if cells:
        parts = [f"{v['cells']} {p} cells: {fmt_seconds(v['total_s'])} ({fmt_num(v['mean_s'])} s each)"
                 for p, v in sorted(cells["cell_seconds"].items())]
        if parts:
            found.append("Transfer cells, from the sweep's ledger (time inside each cell; feature extraction and "
                         "job start-up are outside): " + "; ".join(parts) + "."
                         + (f" {cells['failed']} cell(s) failed." if cells["failed"] else ""))
        if cells["video_acc"]:
            acc = {(a["protocol"], a["init"], a["fraction"]): a["mean"] for a in cells["video_acc"]}
            fracs = sorted({a["fraction"] for a in cells["video_acc"]})
            found.append("Video accuracy of this run (mean over seeds, %), pretrained / random init: " + "; ".join(
                f"{p} " + ", ".join(f"{f:g}: {fmt_num(acc.get((p, 'pretrained', f)), 3)} / "
                                    f"{fmt_num(acc.get((p, 'random', f)), 3)}" for f in fracs)
                for p in sorted({a["protocol"] for a in cells["video_acc"]})) + ".")
    if warm:
        problems = result.get("warm_reuse") or []
        found.append("The warm rerun reused everything (no generation, no cache build, pretraining already "
                     "finished, every cell already done)." if not problems else
                     "The warm rerun did **not** reuse everything: " + "; ".join(problems) + ".")
    return common.section(
        HEADING,
        f"`{result['command']}` (or `python benchmarks/run_all.py --only e2e`): times `bash {_shown(result['script'])}` "
        f"with `OUTPUTS` set to a fresh empty folder (cold), then again in the same folder (warm). "
        f"OMP_NUM_THREADS={result['omp_threads']}.",
        stamp(info, quick=False, load_end=load_end),
        headline, *baseline_tables(result), stages, usage,
        notes([*found, busy_note(info, load_end),
               "Stage times are the arrival times of the lines that open each stage (main.sh's `[main]` lines, "
               "the first line of the synthetic-set and clip-cache progress bars, the pretraining log line "
               "`pretraining on ...`); a stage with nothing to do prints no marker and has no row. Setup "
               "includes `pip install -e` even when nothing changed.",
               "Peak RSS is the largest single process of the job (the kernel's `ru_maxrss` over the reaped "
               "process tree), not the sum over processes.",
               "CPU time and peak RSS cover the processes the job itself reaps: the workers a fork server "
               "starts (runkit.processes: synthetic set, clip caches, sweep cells) are reaped by that "
               "server and are not in them, so CPU/wall understates how busy the cores were."]))


def main(argv=None) -> int:
    return common.bench_main(argv, parse_args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
