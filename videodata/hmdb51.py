"""Moved to `videodata.sets.hmdb51`; this name stays an alias of that module (`from videodata import hmdb51`
in transfer/canonical.py's tests and older scripts)."""
import sys

from videodata.sets import hmdb51 as _module

sys.modules[__name__] = _module
