"""The labeled target sets, one module each behind `videodata.sets.base.TargetSet`, and the one
registry every consumer reads (`transfer/sweep.py --data`, the sweep's checks, the leakage audit,
`data.audit.target`, the synthetic generator's layouts, `videodata.labeled`).

Adding a set: a module here that defines `SET = TargetSet(...)` (layout, splits, class names,
list reader, groups, synthetic twin) and one line below (ARCHITECTURE.md, "How to extend").
"""
from __future__ import annotations

from videodata.sets import diving48, hmdb51, ssv2, ucf101
from videodata.sets.base import TargetSet

SETS: dict[str, TargetSet] = {s.name: s for s in (
    ucf101.SET,
    hmdb51.SET,
    ssv2.SET,
    diving48.SET,
)}

__all__ = ["SETS", "TargetSet"]
