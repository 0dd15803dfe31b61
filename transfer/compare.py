"""Compare several transfer sweeps on one curve (e.g. the original recipe against an improved one).

    python -m transfer.compare SWEEP_DIR [SWEEP_DIR ...] --labels original,improved --out DIR

Thin entry point: parsing only; the comparison is `transfer.report.compare.compare_sweeps`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from runkit.cli import run
from transfer.report.compare import compare_sweeps
from transfer.report.stats import METRICS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transfer.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--labels", help="comma-separated, one per sweep (default: the folder names)")
    parser.add_argument("--out", required=True, type=Path, help="folder for comparison.* (created)")
    parser.add_argument("--metric", default="video_acc", choices=METRICS)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels is not None else None
    for filename, path in compare_sweeps(args.sweep_dirs, args.out, labels, args.metric).items():
        print(f"{filename:26s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main(), sys.argv[1:]))
