"""The transfer sweep as a library: plan cells, run them as submitit jobs, report.

    spec = SweepSpec(fractions=(0.01, 0.1, 1.0))
    plan = plan_sweep(spec)              # data, checkpoint, manifests, cells (no training)
    run_sweep(spec)                      # jobs -> ledger -> report/

Jobs: one per fine-tune cell (it keeps its own checkpoints), and one per (protocol, init,
split) for the probes — that job extracts the frozen features once and fits every fraction and
seed on them. On SLURM the jobs form one array (at most the profile's `array_parallelism` at
once); locally at most `max_parallel` subprocesses run at a time. Re-running the same sweep
skips done cells, retries failed ones and resumes killed fine-tune cells from their checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import yaml

from runkit.atomic import atomic_write_json
from runkit.logging import progress
from transfer.cells import (FEATURE_PROTOCOLS, PROTOCOLS, Cell, SweepContext, cell_key, feature_set,
                            run_cell)
from transfer.classifier import INITS, load_export
from transfer.ledger import Ledger
from transfer.subsets import SubsetRule, nested_subset, write_manifest

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE_DIR = Path(__file__).resolve().parent / "conf" / "recipe"
DATASETS = ("synthetic", "ucf101")


class SweepError(RuntimeError):
    """The sweep cannot start (no checkpoint, no data, bad arguments); the message says why."""


@dataclass(frozen=True)
class SweepSpec:
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    per_class: tuple[int, ...] = ()
    seeds: tuple[int, ...] = (0, 1)
    splits: tuple[int, ...] = (1,)
    inits: tuple[str, ...] = ("pretrained", "random")
    protocols: tuple[str, ...] = ("finetune", "linear")
    checkpoint: str | None = None
    data: str = "synthetic"
    root: str | None = None
    recipe: str = "demo"
    overrides: dict = field(default_factory=dict)   # {"finetune": {...}, "probe": {...}, ...}
    out: str | None = None
    output_root: str = "outputs"                    # the main job's outputs: data/, cache/, pretrain/, transfer/
    cache_root: str | None = None                   # default <output_root>/cache
    pretrain_root: str | None = None                # default <output_root>/pretrain
    executor: str = "local"
    cluster: str = "local"
    max_parallel: int = 1
    threads: int = 2
    cache_workers: int = 2
    show_progress: bool = True
    synthetic: dict = field(default_factory=dict)   # SyntheticConfig overrides (tests)

    def under_outputs(self, name: str) -> Path:
        return _resolve(self.output_root) / name

    @property
    def cache_dir(self) -> Path:
        return _resolve(self.cache_root) if self.cache_root else self.under_outputs("cache")

    @property
    def pretrain_dir(self) -> Path:
        return _resolve(self.pretrain_root) if self.pretrain_root else self.under_outputs("pretrain")

    def rules(self) -> list[SubsetRule]:
        if self.per_class:
            return [SubsetRule(per_class=int(k)) for k in self.per_class]
        return [SubsetRule(fraction=float(f)) for f in self.fractions]

    def check(self) -> None:
        if self.data not in DATASETS:
            raise SweepError(f"--data must be one of {DATASETS}, got {self.data!r}")
        if self.data == "ucf101" and not self.root:
            raise SweepError("--data ucf101 needs --root (the folder holding UCF-101/ and ucfTrainTestlist/)")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad:
            raise SweepError(f"unknown protocols {bad}; choose from {PROTOCOLS}")
        bad = [i for i in self.inits if i not in INITS]
        if bad:
            raise SweepError(f"unknown inits {bad}; choose from {INITS}")
        if not self.seeds or not self.splits or not (self.fractions or self.per_class):
            raise SweepError("need at least one seed, one split and one fraction (or --per-class)")
        self.rules()  # validates every fraction / count


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def load_recipe(name: str, overrides: dict | None = None) -> dict:
    """`transfer/conf/recipe/<name>.yaml` (or a YAML path), with section-wise overrides."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        raise SweepError(f"recipe {name!r} not found ({path}); known recipes: {known}")
    recipe = yaml.safe_load(path.read_text()) or {}
    for section, values in (overrides or {}).items():
        if section not in RECIPE_SECTIONS:
            raise SweepError(f"unknown recipe section {section!r} in overrides")
        recipe.setdefault(section, {}).update(values)
    check_recipe(recipe, str(path))
    return recipe


RECIPE_SECTIONS = ("finetune", "probe", "features", "cache")


def check_recipe(recipe: dict, where: str) -> None:
    """Fail at start-up, naming the key, rather than inside every job of the sweep."""
    from transfer.features import FeatureSpec
    from transfer.finetune import FinetuneRecipe
    from transfer.probe import ProbeRecipe

    if not isinstance(recipe, dict):
        raise SweepError(f"recipe {where}: expected a mapping of sections {list(RECIPE_SECTIONS)}")
    unknown = sorted(set(recipe) - set(RECIPE_SECTIONS))
    if unknown:
        raise SweepError(f"recipe {where}: unknown section(s) {unknown}; known: {list(RECIPE_SECTIONS)}")
    schemas = {"finetune": (FinetuneRecipe, FinetuneRecipe.from_dict),
               "probe": (ProbeRecipe, ProbeRecipe.from_dict),
               "features": (FeatureSpec, lambda values: FeatureSpec(**values))}
    for section, (schema, build) in schemas.items():
        values = recipe.get(section)
        if not isinstance(values, dict):
            raise SweepError(f"recipe {where}: section {section!r} is missing or not a mapping")
        defaults = {f.name: f.default for f in fields(schema)}
        _check_keys(where, section, values, defaults)
        try:
            build(values)
        except (TypeError, ValueError) as exc:
            raise SweepError(f"recipe {where}: bad {section!r} values: {exc}") from exc
    cache = recipe.get("cache") or {}
    if not isinstance(cache, dict):
        raise SweepError(f"recipe {where}: section 'cache' is not a mapping")
    _check_keys(where, "cache", cache, {"max_frames": 0}, nullable=("max_frames",))


def _check_keys(where: str, section: str, values: dict, defaults: dict, nullable: tuple = ()) -> None:
    bad = sorted(set(values) - set(defaults))
    if bad:
        raise SweepError(f"recipe {where}: unknown key(s) {bad} in section {section!r}; known: {sorted(defaults)}")
    for key, value in values.items():
        default = defaults[key]
        # YAML reads `1e-3` (no dot) as a string; bool is an int to Python but never a number here
        if value is None and key in nullable:
            ok = True
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple))
        else:
            ok = isinstance(value, type(default))
        if not ok:
            hint = " (YAML needs a dot in a float: 1.0e-3, not 1e-3)" if isinstance(value, str) else ""
            kind = {bool: "true or false", int: "an integer", float: "a number", tuple: "a list"}.get(
                type(default), f"a {type(default).__name__}")
            raise SweepError(f"recipe {where}: {section}.{key} = {value!r} should be {kind}{hint}")


def resolve_checkpoint(spec: SweepSpec) -> Path:
    if spec.checkpoint:
        path = _resolve(spec.checkpoint)
        if not path.is_file():
            raise SweepError(f"checkpoint {path} does not exist")
        return path
    pointer = spec.pretrain_dir / "LATEST"
    if not pointer.is_file():
        raise SweepError(f"no pretrained discriminator: {pointer} not found. Run `python pretrain/run.py` "
                         f"first (or pass --checkpoint PATH/discriminator.pt)")
    path = Path(pointer.read_text().strip())
    if not path.is_file():
        raise SweepError(f"{pointer} points at {path}, which does not exist; run `python pretrain/run.py` again")
    return path


@dataclass
class DataLayout:
    video_root: Path
    lists_dir: Path
    fingerprint: str


def resolve_data(spec: SweepSpec) -> DataLayout:
    if spec.data == "synthetic":
        from videodata.synthetic import SyntheticConfig, generate

        root = _resolve(spec.root) if spec.root else spec.under_outputs("data/synthetic")
        cfg = SyntheticConfig(root=str(root), progress=spec.show_progress, **spec.synthetic)
        layout = generate(cfg)
        return DataLayout(Path(layout.video_root), Path(layout.lists_dir), f"synthetic:{cfg.fingerprint}")
    root = _resolve(spec.root)
    video_root, lists_dir = root / "UCF-101", root / "ucfTrainTestlist"
    if not lists_dir.is_dir():
        raise SweepError(f"no UCF101 split lists at {lists_dir} (expected <root>/ucfTrainTestlist)")
    return DataLayout(video_root, lists_dir, "ucf101")


@dataclass
class SweepPlan:
    spec: SweepSpec
    ctx: SweepContext
    cells: list[Cell]
    records: list            # every labeled video the sweep touches (train ∪ test of its splits)
    recipe: dict

    @property
    def out_dir(self) -> Path:
        return Path(self.ctx.out_dir)


def default_out(spec: SweepSpec, checkpoint: Path) -> Path:
    name = f"{spec.data}-{checkpoint.parent.name}-{spec.recipe}"
    if spec.overrides:
        name += "-" + hashlib.sha256(json.dumps(spec.overrides, sort_keys=True).encode()).hexdigest()[:8]
    return spec.under_outputs("transfer") / name


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Resolve checkpoint and data, write manifests, enumerate cells (nothing is trained)."""
    from videodata.ucf101 import load_split, read_class_index

    spec.check()
    checkpoint = resolve_checkpoint(spec)
    export = load_export(checkpoint)
    recipe = load_recipe(spec.recipe, spec.overrides)
    data = resolve_data(spec)
    out = _resolve(spec.out) if spec.out else default_out(spec, checkpoint)
    class_names = tuple(read_class_index(data.lists_dir))
    records, per_split = {}, {}
    for split in spec.splits:
        train = load_split(data.video_root, data.lists_dir, split, "train")
        test = load_split(data.video_root, data.lists_dir, split, "test")
        per_split[split] = (train, test)
        for record in (*train, *test):
            records.setdefault(record.relpath, record)
    max_frames = recipe.get("cache", {}).get("max_frames")
    data_key = hashlib.sha256(json.dumps({"data": data.fingerprint, "videos": sorted(records),
                                          "size": export.size, "max_frames": max_frames}).encode()).hexdigest()[:16]
    ctx = SweepContext(out_dir=str(out), checkpoint=str(checkpoint), checkpoint_sha256=export.sha256,
                       cache_dir="", cache_fingerprint=data_key, class_names=class_names,
                       frames=export.frames, size=export.size, dataset=spec.data,
                       finetune=recipe["finetune"], probe=recipe["probe"], features=recipe["features"],
                       threads=spec.threads, show_progress=spec.show_progress and spec.executor != "slurm")
    manifests = out / "manifests"
    cells = []
    full_rule = SubsetRule(fraction=1.0)
    for split, (train, test) in per_split.items():
        write_manifest(manifests, train, split=split, seed=-1, rule=full_rule, dataset=spec.data,
                       name=f"split{split}_train")
        test_manifest = write_manifest(manifests, test, split=split, seed=-1, rule=full_rule,
                                       dataset=spec.data, name=f"split{split}_test")
        for rule in spec.rules():
            for seed in spec.seeds:
                subset = nested_subset(train, rule, seed)
                manifest = write_manifest(manifests, subset, split=split, seed=seed, rule=rule, dataset=spec.data)
                for protocol in spec.protocols:
                    for init in spec.inits:
                        key = cell_key(ctx, protocol, init, split, rule, seed, manifest.sha256, test_manifest.sha256)
                        cells.append(Cell(protocol, init, split, rule.tag, rule.value, seed,
                                          f"manifests/{manifest.path.name}", manifest.sha256,
                                          f"manifests/{test_manifest.path.name}", key))
    atomic_write_json(out / "sweep.json", {"spec": _plain(spec), "recipe": recipe,
                                           "checkpoint": str(checkpoint), "checkpoint_sha256": export.sha256,
                                           "data_key": data_key, "cells": [c.cell_id for c in cells]})
    return SweepPlan(spec, ctx, cells, list(records.values()), recipe)


def _plain(spec: SweepSpec) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()}


def build_cache(plan: SweepPlan, workers: int = 2) -> SweepPlan:
    """Decode every labeled video once at the checkpoint's resolution (reused across sweeps)."""
    from videodata.cache import ClipCache

    cache = ClipCache.build(plan.records, plan.spec.cache_dir, size=plan.ctx.size,
                            max_frames=plan.recipe.get("cache", {}).get("max_frames"), workers=workers,
                            show_progress=plan.spec.show_progress)
    plan.ctx = replace(plan.ctx, cache_dir=str(cache.folder))
    return plan


# ----------------------------------------------------------------------------------------- jobs

def run_cells(ctx: SweepContext, cells: Sequence[Cell]) -> list[dict]:
    """A job: run cells in order (a probe job first makes sure its features exist, once)."""
    outcomes = []
    ledger = ctx.ledger
    todo = [c for c in cells if not ledger.is_done(c.cell_id)]
    feature_lists = sorted({(c.init, f"manifests/split{c.split}_train.txt", c.test_list)
                            for c in todo if c.protocol in FEATURE_PROTOCOLS})
    for init, train_list, test_list in feature_lists:
        try:
            feature_set(ctx, init, train_list)
            feature_set(ctx, init, test_list)
        except Exception as exc:  # noqa: BLE001 - each cell below records the failure itself
            log.error("feature extraction for %s/%s failed: %s", init, train_list, exc)
    for cell in cells:
        outcomes.append(run_cell(ctx, cell))
    return outcomes


def group_jobs(cells: Sequence[Cell]) -> list[list[Cell]]:
    """Probe cells of one (protocol, init, split) share a job; each fine-tune cell is its own."""
    groups: dict[tuple, list[Cell]] = {}
    singles = []
    for cell in cells:
        if cell.protocol in FEATURE_PROTOCOLS:
            groups.setdefault((cell.protocol, cell.init, cell.split), []).append(cell)
        else:
            singles.append([cell])
    return list(groups.values()) + singles


def _job_outcomes(job) -> list[dict] | None:
    try:
        return job.result()
    except Exception as exc:  # noqa: BLE001 - a crashed job (killed process) is reported, not raised
        log.error("job %s ended without a result: %s", job.job_id, str(exc).splitlines()[-1] if str(exc) else exc)
        return None


def _queued_jobs(out_dir: Path) -> dict[str, str]:
    """cell id -> SLURM job id, for the cells of this sweep (jobs.json) whose job is still pending
    or running. A job whose logs are not in this sweep's jobs/ folder is not ours (a job id that a
    reinstalled cluster hands out again)."""
    from slurm.jobs import TERMINAL_STATES, queue_info

    jobs_file = out_dir / "jobs.json"
    if not jobs_file.is_file():
        return {}
    alive: dict[str, bool] = {}
    queued = {}
    for cell_id, job_id in json.loads(jobs_file.read_text()).items():
        if job_id not in alive:
            info = queue_info(job_id)
            state = info.get("JobState", "").split(" ")[0]
            ours = bool(info.get("StdOut")) and Path(info["StdOut"]).parent.resolve() == (out_dir / "jobs").resolve()
            alive[job_id] = bool(state) and state not in TERMINAL_STATES and ours
        if alive[job_id]:
            queued[cell_id] = job_id
    return queued


def _execute(plan: SweepPlan, jobs: list[list[Cell]], stop_after: int | None) -> dict[str, int]:
    import submitit

    from slurm.executors import make_executor
    from slurm.jobs import PreemptibleCall, submit_array, wait_jobs

    spec, ctx = plan.spec, plan.ctx
    executor = make_executor(spec.executor, plan.out_dir / "jobs", spec.cluster, job_name="transfer")
    total = sum(len(j) for j in jobs)
    bar = progress(total=total, desc="cells", unit="cell", disable=not spec.show_progress)
    counts = {"done": 0, "failed": 0, "running": 0, "lost": 0}

    def account(outcomes, cells):
        if outcomes is None:
            counts["lost"] += len(cells)
        else:
            ids = {c.cell_id for c in cells}  # a job of an earlier run may also hold other cells
            for outcome in outcomes:
                if outcome["cell_id"] in ids:
                    counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
        bar.update(len(cells))
        bar.set_postfix(done=counts["done"], failed=counts["failed"])

    try:
        if spec.executor == "slurm":
            # Cells whose job from an earlier run of this sweep is still queued or running (the
            # submitting process died, the jobs did not) are waited for, never submitted again:
            # two jobs would train one fine-tune cell into the same checkpoint folder at once.
            queued = _queued_jobs(plan.out_dir)
            held: dict[str, list[Cell]] = {}
            fresh = []
            for cells in jobs:
                for cell in cells:
                    if cell.cell_id in queued:
                        held.setdefault(queued[cell.cell_id], []).append(cell)
                rest = [c for c in cells if c.cell_id not in queued]
                if rest:
                    fresh.append(rest)
            if held:
                log.warning("waiting for %d job(s) of an earlier run still in the queue (%s) instead of "
                            "submitting their %d cells again", len(held), ", ".join(held),
                            sum(len(c) for c in held.values()))
            submitted = submit_array(executor, [PreemptibleCall(run_cells, ctx, cells) for cells in fresh])
            pairs = [(submitit.SlurmJob(folder=plan.out_dir / "jobs", job_id=job_id), cells)
                     for job_id, cells in held.items()] + list(zip(submitted, fresh))
            atomic_write_json(plan.out_dir / "jobs.json",
                              {c.cell_id: job.job_id for job, cells in pairs for c in cells})
            for job_outcome, (_, cells) in zip(wait_jobs([job for job, _ in pairs]), pairs):
                account(job_outcome.result if job_outcome.ok else None, cells)
            return counts
        # local / debug: at most max_parallel jobs in flight
        pending, running = list(jobs), []
        started = 0
        while pending or running:
            while pending and len(running) < max(1, spec.max_parallel):
                if stop_after is not None and started >= stop_after:
                    pending.clear()
                    break
                cells = pending.pop(0)
                running.append((executor.submit(run_cells, ctx, cells), cells))
                started += 1
            still = []
            for job, cells in running:
                if job.done():
                    account(_job_outcomes(job), cells)
                else:
                    still.append((job, cells))
            running = still
            if running:
                time.sleep(0.5)
        return counts
    finally:
        bar.close()


def run_sweep(spec: SweepSpec, *, stop_after_jobs: int | None = None, report: bool = True) -> dict[str, Any]:
    """Plan, build the cache, run every cell not yet done, write the report. Returns a summary."""
    from transfer.report_page import write_all

    started = time.perf_counter()
    plan = build_cache(plan_sweep(spec), workers=spec.cache_workers)
    ledger = plan.ctx.ledger
    todo = [c for c in plan.cells if not ledger.is_done(c.cell_id)]
    # probe jobs first: they are quick and give the first numbers early
    jobs = sorted(group_jobs(todo), key=lambda cells: cells[0].protocol == "finetune")
    counts = _execute(plan, jobs, stop_after_jobs) if jobs else {}
    # tables and figures (when a cell is done), then report.md / report.html: printed last by sweep.py
    written = write_all(plan.out_dir) if report else {}
    summary = ledger.summary([c.cell_id for c in plan.cells])
    return {"out_dir": str(plan.out_dir), "cells": len(plan.cells), "skipped": len(plan.cells) - len(todo),
            "counts": counts, "status": {k: len(v) for k, v in summary.items()},
            "report": {k: str(v) for k, v in written.items()}, "seconds": time.perf_counter() - started}


def sweep_status(spec: SweepSpec) -> dict[str, list[str]]:
    """done / running / failed / pending / interrupted from the ledger (and the queue on SLURM)."""
    plan = plan_sweep(spec)
    queue = None
    jobs_file = plan.out_dir / "jobs.json"
    if spec.executor == "slurm" and jobs_file.is_file():
        from slurm.jobs import queue_state

        queue = {}
        for cell_id, job_id in json.loads(jobs_file.read_text()).items():
            state = queue_state(job_id)
            if state:
                queue[cell_id] = state.split()[0]
    return Ledger(plan.out_dir / "ledger").summary([c.cell_id for c in plan.cells], queue)
