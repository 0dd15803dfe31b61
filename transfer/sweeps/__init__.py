"""The transfer sweep as an application: what to run (spec, recipe), the cells and their subsets
(plan), one cell as a job (cells), and running them locally or on SLURM (execute).

    from transfer.sweeps import SweepSpec, plan_sweep, run_sweep, sweep_status
"""
from transfer.sweeps.execute import run_sweep, sweep_status
from transfer.sweeps.plan import SweepPlan, plan_sweep
from transfer.sweeps.spec import SweepError, SweepSpec

__all__ = ["SweepSpec", "SweepError", "SweepPlan", "plan_sweep", "run_sweep", "sweep_status"]
