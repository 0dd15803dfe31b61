"""Merge the results of many sweeps into one leaderboard, ranking only results of one protocol.

    python -m transfer.leaderboard SWEEP_OR_JSONL [...] --out DIR [--labels a,b,...]

A source is a sweep folder or its `report/results.jsonl`. Thin entry point: parsing only; the
registry is `transfer.report.registry`.
"""
from __future__ import annotations

import sys
from typing import Sequence

from runkit.cli import ArgumentParser, run
from transfer.report.registry import write_leaderboard


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m transfer.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="sweep folders or results.jsonl files")
    parser.add_argument("--out", required=True, help="folder for leaderboard.{csv,md,html}")
    parser.add_argument("--labels", default="", help="comma-separated names, one per source")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    labels = [s for s in args.labels.split(",") if s]
    for name, path in write_leaderboard(args.sources, args.out, labels).items():
        print(f"  {name:18s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main(), sys.argv[1:]))
