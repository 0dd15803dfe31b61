"""How the suite starts worker processes: from a fork server, never forked from the caller.

A worker forked from a process that already runs FFmpeg or OpenMP threads can deadlock (seen once
in this suite's tests), so workers are never forked from the caller. "spawn" is safe too, but
every spawned worker re-imports the caller's main script (`pretrain/run.py`, `transfer/sweep.py`:
4-6 s of torch, timm and scikit-learn imports each on the 2-core machine). The fork server imports
it once, single-threaded, and forks each worker from that clean process; it is started on first
use and serves every pool of the process after it (synthetic set, clip caches, sweep cells,
DataLoader workers).
"""
from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

START_METHOD = "forkserver"


def worker_context() -> BaseContext:
    """The multiprocessing context for every pool of worker processes in the suite."""
    return multiprocessing.get_context(START_METHOD)


__all__ = ["START_METHOD", "worker_context"]
