"""Run infrastructure shared by every stage: atomic file writes, checkpoints with full RNG
state, seeding, distributed set-up, progress bars and metric logs."""
