"""Run every stage's benchmark and regenerate benchmarks/RESULTS.md.

    python benchmarks/run_all.py                          # every stage (~30 min on 2 idle cores)
    python benchmarks/run_all.py --only data,transfer     # just those sections; the rest of the file is kept
    python benchmarks/run_all.py --quick                  # smoke figures (labelled as such); e2e is skipped
    python benchmarks/run_all.py --only e2e --out /tmp/RESULTS.md

Stages, in this order: data (benchmarks/bench_data.py), index (bench_index.py: a 1M-video cache
index), stabilise (bench_stabilise.py), pretrain
(bench_pretrain.py), transfer (bench_transfer.py), e2e (bench_e2e.py: the main job, cold and warm). Each runs in this process
through its module's `run(args)` and `section(...)`; the file is rewritten atomically after every
stage, so a stage that fails keeps its previous section and the ones measured before it are
saved. `--quick` passes `--quick` to each stage; the main job has no smaller form, so `--quick`
skips e2e unless `--only` names it (then it is the full measurement). With `--out` pointing to a
file that does not exist yet, the sections not run are taken from benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks import bench_data, bench_e2e, bench_index, bench_pretrain, bench_stabilise, bench_transfer
from benchmarks.common import (RESULTS_PATH, load_average, machine_info, merge_results, results_header,
                               write_results)
from runkit.atomic import atomic_write_json
from runkit.cli import ArgumentParser, run

STAGES = {"data": bench_data, "index": bench_index, "stabilise": bench_stabilise, "pretrain": bench_pretrain, "transfer": bench_transfer,
          "e2e": bench_e2e}
ORDER = [module.HEADING for module in STAGES.values()]


def placeholder(stage: str) -> str:
    return (f"## {STAGES[stage].HEADING}\n\nNot measured yet: `python benchmarks/run_all.py --only {stage}`.\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(prog="benchmarks/run_all.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--only", default=None, help=f"comma-separated stages out of {','.join(STAGES)}")
    p.add_argument("--quick", action="store_true", help="fewer repetitions / smaller sizes (labelled in the file)")
    p.add_argument("--out", type=Path, default=RESULTS_PATH, help="the file to regenerate (default %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="also write every stage's raw result here")
    args = p.parse_args(argv)
    if args.only is None:
        args.stages = [s for s in STAGES if not (args.quick and s == "e2e")]
        args.skipped = ["e2e"] if args.quick else []
    else:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in names if s not in STAGES]
        if unknown or not names:
            p.error(f"--only: unknown or no stage(s) {unknown or args.only!r}; choose from {','.join(STAGES)}")
        args.stages = [s for s in STAGES if s in names]  # always in the pipeline's order
        args.skipped = []
    return args


def run_stage(stage: str, quick: bool) -> tuple[str, dict]:
    """(section text, raw result) of one stage, measured now."""
    module = STAGES[stage]
    stage_args = module.parse_args(["--quick"] if quick and stage != "e2e" else [])
    info = machine_info()  # date and load at this stage's start
    result = module.run(stage_args)
    return module.section(result, info, load_average()), {"machine": info, "result": result}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    source = out if out.is_file() else RESULTS_PATH
    old = source.read_text(encoding="utf-8") if source.is_file() else ""
    info = machine_info()
    threads = torch.get_num_threads()
    missing = {module.HEADING: placeholder(stage) for stage, module in STAGES.items()}
    new_sections: dict[str, str] = {}
    raw: dict[str, dict] = {}
    done, failed = [], []
    for stage in args.skipped:
        print(f"[run_all] {stage}: skipped under --quick (no smaller form; run `--only {stage}`); "
              f"its section is kept", flush=True)
    for stage in args.stages:
        torch.set_num_threads(threads)  # a stage may have changed it (bench_data runs one thread)
        print(f"[run_all] {stage}: {STAGES[stage].__name__}{' --quick' if args.quick and stage != 'e2e' else ''}",
              flush=True)
        start = time.perf_counter()
        try:
            text, raw[stage] = run_stage(stage, args.quick)
        except Exception:  # noqa: BLE001 - one failed stage keeps its old section; the others still run
            traceback.print_exc()
            print(f"[run_all] {stage}: FAILED after {time.perf_counter() - start:.0f} s; its previous section "
                  f"is kept", flush=True)
            failed.append(stage)
            continue
        new_sections[STAGES[stage].HEADING] = text
        done.append(stage)
        header = results_header(info, ran=[f"{s}{' (quick)' if args.quick and s != 'e2e' else ''}" for s in done])
        write_results(out, merge_results(old, new_sections, ORDER, header, missing))
        print(f"[run_all] {stage}: {time.perf_counter() - start:.0f} s; wrote {out}", flush=True)
    if not done:
        print("[run_all] nothing measured; the file is unchanged", flush=True)
    if args.json and raw:
        atomic_write_json(args.json, raw)
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main(), sys.argv[1:]))
