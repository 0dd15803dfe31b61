"""Transfer sweep: fine-tune / linear-probe the pretrained discriminator over label fractions.

    python transfer/sweep.py --fractions 0.01,0.1,1            # synthetic set, latest pretrain export
    python transfer/sweep.py --fractions 0.01,0.1,1 --dry-run  # list the cells
    python transfer/sweep.py --fractions 0.01,0.1,1 --status   # done / running / failed / pending
    python transfer/sweep.py --data ucf101 --root /data/ucf --splits 1,2,3 --seeds 0,1,2 \
        --recipe paper --executor slurm --cluster mycluster

Thin entry point: parsing only; the logic is in transfer.runner (library, tested).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from transfer.runner import SweepError, SweepSpec, plan_sweep, run_sweep, sweep_status


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _words(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _set(items: Sequence[str]) -> dict:
    """`finetune.iterations=50` -> {"finetune": {"iterations": 50}} (values parsed as JSON when they can be)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SweepError(f"--set expects SECTION.KEY=VALUE (e.g. finetune.iterations=50), got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(section, {})[name] = parsed
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--fractions", type=_floats, default=(0.01, 0.1, 1.0), help="label fractions per class")
    p.add_argument("--per-class", type=_ints, default=(), help="labeled videos per class (instead of fractions)")
    p.add_argument("--seeds", type=_ints, default=(0, 1))
    p.add_argument("--splits", type=_ints, default=(1,))
    p.add_argument("--inits", type=_words, default=("pretrained", "random"))
    p.add_argument("--protocols", type=_words, default=("finetune", "linear"), help="finetune,linear,knn")
    p.add_argument("--checkpoint", default=None, help="discriminator.pt (default: outputs/pretrain/LATEST)")
    p.add_argument("--data", default="synthetic", choices=("synthetic", "ucf101"))
    p.add_argument("--root", default=None, help="data root (synthetic: where to generate it)")
    p.add_argument("--recipe", default="demo",
                   help="transfer/conf/recipe/<name>.yaml: demo | improved | paper | improved_paper | a path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe value, e.g. --set finetune.iterations=500")
    p.add_argument("--executor", default="local", choices=("local", "slurm", "debug"))
    p.add_argument("--cluster", default="local", help="cluster profile (slurm/conf/cluster/<name>.yaml)")
    p.add_argument("--max-parallel", type=int, default=1, help="local jobs at once")
    p.add_argument("--threads", type=int, default=2, help="torch threads per job")
    p.add_argument("--output-root", default="outputs",
                   help="where data/, cache/, pretrain/ (the LATEST export) and transfer/ live")
    p.add_argument("--out", default=None, help="sweep folder (default <output-root>/transfer/<derived name>)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("--status", action="store_true", help="show done/running/failed/pending and exit")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = SweepSpec(fractions=args.fractions, per_class=args.per_class, seeds=args.seeds,
                         splits=args.splits, inits=args.inits, protocols=args.protocols,
                         checkpoint=args.checkpoint, data=args.data, root=args.root, recipe=args.recipe,
                         overrides=_set(args.overrides), out=args.out, output_root=args.output_root,
                         executor=args.executor, cluster=args.cluster, max_parallel=args.max_parallel, threads=args.threads,
                         show_progress=not args.no_progress)
        if args.dry_run:
            plan = plan_sweep(spec)
            for cell in plan.cells:
                print(f"{plan.ctx.ledger.status(cell.cell_id):8s} {cell.cell_id}")
            print(f"{len(plan.cells)} cells -> {plan.out_dir}")
            return 0
        if args.status:
            groups = sweep_status(spec)
            for status, ids in groups.items():
                for cell_id in ids:
                    print(f"{status:11s} {cell_id}")
            print(", ".join(f"{k}: {len(v)}" for k, v in groups.items()))
            return 0
        summary = run_sweep(spec)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sweep folder: {summary['out_dir']}  ({summary['cells']} cells, {summary['skipped']} already done, "
          f"{summary['seconds']:.0f} s)")
    print("status: " + ", ".join(f"{k} {v}" for k, v in summary["status"].items() if v))
    for name, path in summary["report"].items():
        print(f"  {name:24s} {path}")
    failed = summary["status"].get("failed", 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
