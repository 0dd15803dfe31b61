"""Preemption that loses nothing: defer SLURM's warning signal to the next step boundary.

submitit (and hydra-submitit-launcher) install a SIGUSR2 handler that checkpoints and requeues
the job at once, wherever the main thread happens to be, possibly half way through an optimiser
step. A training loop calls `install()` once; the signal then only sets a flag. At its next step
boundary the loop sees `requested()`, writes its checkpoint, and calls `hand_over()`, which runs
the handler that was there before (submitit's: requeue, then exit). Outside SLURM nothing changes.
"""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGUSR2,)
_state = {"requested": None, "previous": {}}


def _defer(signum, frame):
    if _state["requested"] is None:
        log.warning("signal %s received: will checkpoint at the next step boundary", signum)
    _state["requested"] = (signum, frame)


def install() -> None:
    """Route SIGUSR2 to a flag. Idempotent; only possible from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _SIGNALS:
        current = signal.getsignal(sig)
        if current is not _defer:
            _state["previous"][sig] = current
            signal.signal(sig, _defer)


def uninstall() -> None:
    for sig, previous in list(_state["previous"].items()):
        signal.signal(sig, previous)
    _state["previous"].clear()
    _state["requested"] = None


def requested() -> bool:
    return _state["requested"] is not None


def hand_over() -> None:
    """Call after the checkpoint is on disk: run the original handler (submitit requeues and
    exits). With no original handler (not under submitit) raise `Preempted` so the caller stops."""
    signum, frame = _state["requested"]
    previous = _state["previous"].get(signum)
    uninstall()
    if callable(previous):
        previous(signum, frame)
    raise Preempted(f"stopped by signal {signum}; state saved, run again to resume")


class Preempted(RuntimeError):
    """The run was asked to stop (preemption / timeout) and saved its state first."""
