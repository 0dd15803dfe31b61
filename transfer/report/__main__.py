"""`python -m transfer.report SWEEP_DIR [--metric video_acc]`: regenerate a sweep's tables, figures
and report page from its ledger."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from runkit.cli import run
from transfer.report import write_all
from transfer.report.stats import METRICS, ReportError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transfer.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default="video_acc", choices=METRICS)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    if not (args.sweep_dir / "sweep.json").is_file():
        raise ReportError(f"{args.sweep_dir} is not a sweep folder: no sweep.json in it (a sweep folder is what "
                          f"`python transfer/sweep.py` writes under outputs/transfer/)")
    for name, path in write_all(args.sweep_dir, args.metric).items():
        print(f"{name:24s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main(), sys.argv[1:]))
