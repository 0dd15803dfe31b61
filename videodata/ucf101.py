"""Moved to `videodata.sets.ucf101`; this name stays an alias of that module (`from videodata import ucf101`
in transfer/canonical.py's tests and older scripts)."""
import sys

from videodata.sets import ucf101 as _module

sys.modules[__name__] = _module
