"""Transfer sweep: fine-tune and probe a pretrained backbone over label fractions, against random init.

    python transfer/sweep.py --fractions 0.01,0.1,1            # synthetic set, latest pretrain export
    python transfer/sweep.py --fractions 0.01,0.1,1 --dry-run  # the jobs, their resources and cells
    python transfer/sweep.py --fractions 0.01,0.1,1 --status   # done / running / failed / pending
    python transfer/sweep.py --fractions 0.01,0.1,1 finetune.iterations=500 probe.c_grid=[0.1,1]
    python transfer/sweep.py --checkpoint run0/discriminator.pt,run1/discriminator.pt,run2/discriminator.pt
    python transfer/sweep.py --data ucf101 --root /data/ucf --splits 1,2,3 --seeds 0,1,2 \\
        --recipe paper --inits pretrained,random_torch --device cuda --executor slurm --cluster mycluster

Recipe overrides are `key=value` in Hydra's syntax (sections finetune, probe, features, cache,
runtime; see transfer/sweeps/recipe.py). Thin entry point: parsing only; the logic is in
transfer.sweeps (library, tested).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from runkit.cli import ArgumentParser, comma_list, run
from transfer.sweeps import SweepSpec, plan_sweep, run_sweep, sweep_status
from transfer.sweeps.execute import describe_jobs
from transfer.sweeps.protocols import PROTOCOLS
from transfer.sweeps.recipe import known_recipes
from transfer.sweeps.spec import DATASETS
from videodata.sets import SETS


def parse_args(argv: Sequence[str] | None = None):
    p = ArgumentParser(prog="transfer/sweep.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. finetune.iterations=500")
    p.add_argument("--fractions", type=comma_list(float, "fractions"), default=(0.01, 0.1, 1.0),
                   help="label fractions per class, in (0, 1]")
    p.add_argument("--per-class", type=comma_list(int, "counts"), default=(), help="labeled videos per class (instead of fractions)")
    p.add_argument("--seeds", type=comma_list(int, "seeds"), default=(0, 1),
                   help="training seeds (head init, batch order, augmentation)")
    p.add_argument("--subset-seeds", type=comma_list(int, "seeds"), default=(),
                   help="labeled-subset draws, crossed with --seeds (default: each seed draws its own subset)")
    p.add_argument("--subset-list", action="append", default=[], metavar="NAME=PATH",
                   help="a subset list of your own (e.g. a published 5%% list), run beside the draws; repeatable")
    p.add_argument("--canonical", action="store_true",
                   help="UCF101 / HMDB51: the labeled subsets are the suite's canonical lists (transfer/conf/canonical: "
                        "1, 3, 10 per class, 1%%, 10%%; draws 0-4 as --subset-seeds) instead of fresh draws")
    p.add_argument("--splits", type=comma_list(int, "splits"), default=(1,))
    p.add_argument("--inits", type=comma_list(str, "inits"), default=("pretrained", "random"),
                   help="pretrained, random (the GAN's N(0, 0.01) init), random_torch (Torch7's default init, "
                        "net:reset(); what the original plausibly used)")
    p.add_argument("--protocols", type=comma_list(str, "protocols"), default=("finetune", "linear"),
                   help=f"any of {','.join(PROTOCOLS)} (transfer.sweeps.protocols)")
    p.add_argument("--checkpoint", default=None,
                   help="discriminator.pt (default: <output-root>/pretrain/LATEST), or torchvision:NAME[=WEIGHTS] "
                        "for torchvision's r3d_18, mc3_18, r2plus1d_18 (fresh init, or a state_dict file); "
                        "several comma-separated exports are pretraining runs of one method (replicates: the "
                        "intervals cover them, random init gets one weight draw per run)")
    p.add_argument("--data", default="synthetic", choices=DATASETS, help="synthetic or a target set of videodata.sets")
    p.add_argument("--root", default=None, help="data root: synthetic: where to generate it; " + "; ".join(
                   f"{name}: holds {target.holds}" for name, target in SETS.items()))
    p.add_argument("--on-leak", default="error", choices=("error", "warn"),
                   help="when the checkpoint's pretraining videos overlap a test list (the leakage audit)")
    p.add_argument("--trajectory", action="store_true",
                   help="add 'selected' cells: each probes every snapshot of its pretraining run on its own labeled "
                        "subset's validation folds and runs from the best ('pretrained' stays the last snapshot)")
    p.add_argument("--validate", action="store_true",
                   help="development mode: score every cell on a group-disjoint quarter held out of each training "
                        "list (subsets drawn from the rest); no test list is read. Choose recipes here")
    p.add_argument("--recipe", default="demo", help=f"transfer/conf/recipe/<name>.yaml ({', '.join(known_recipes())}) or a path")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (the recipe's runtime.device)")
    p.add_argument("--executor", default="local", choices=("local", "slurm", "debug"))
    p.add_argument("--cluster", default="local", help="cluster profile (slurm/conf/cluster/<name>.yaml)")
    p.add_argument("--max-parallel", type=int, default=1, help="local jobs at once")
    p.add_argument("--threads", type=int, default=2, help="torch threads per job")
    p.add_argument("--output-root", default="outputs",
                   help="where data/, cache/, pretrain/ (the LATEST export) and transfer/ live")
    p.add_argument("--out", default=None, help="sweep folder (default <output-root>/transfer/<derived name>)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs, their resources and cells, and exit")
    p.add_argument("--status", action="store_true", help="show done/running/failed/pending and exit")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = tuple(args.overrides) + ((f"runtime.device={args.device}",) if args.device else ())
    spec = SweepSpec(fractions=args.fractions, per_class=args.per_class, seeds=args.seeds,
                     subset_seeds=args.subset_seeds, subset_lists=tuple(args.subset_list), splits=args.splits,
                     on_leak=args.on_leak, trajectory=args.trajectory, validate=args.validate, canonical=args.canonical,
                     inits=args.inits, protocols=args.protocols, checkpoint=args.checkpoint, data=args.data,
                     root=args.root, recipe=args.recipe, overrides=overrides, out=args.out,
                     output_root=args.output_root, executor=args.executor, cluster=args.cluster,
                     max_parallel=args.max_parallel, threads=args.threads, show_progress=not args.no_progress)
    if args.dry_run:
        plan = plan_sweep(spec)
        print("\n".join(describe_jobs(plan)))
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
    print(f"sweep folder: {summary['out_dir']}  ({summary['cells']} cells, {summary['skipped']} already done, "
          f"{summary['seconds']:.0f} s)")
    print("status: " + ", ".join(f"{k} {v}" for k, v in summary["status"].items() if v))
    for name, path in summary["report"].items():
        print(f"  {name:24s} {path}")
    return 1 if summary["status"].get("failed", 0) else 0


if __name__ == "__main__":
    sys.exit(run(lambda: main(), sys.argv[1:]))
