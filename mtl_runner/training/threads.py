"""How many intra-op threads torch uses in a job (``device.num_threads``).

``null`` (auto) keeps torch's default in a single run. Under ``hydra/launcher=joblib`` several
jobs share the machine, so each job gets ``max(1, cores // n_jobs)`` threads: the jobs together use
the cores once instead of each job starting one thread per core (oversubscription makes a parallel
sweep slower than running its jobs one after another). Under ``hydra/launcher=submitit_*`` a job
with ``hydra.launcher.cpus_per_task`` set gets that many threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from mtl_runner.errors import ConfigError

log = logging.getLogger("mtl_runner")

_torch_default: int | None = None  # torch's own choice, before anything here changed it


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset or SLURM)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_jobs(launcher: Mapping[str, Any] | None, cores: int) -> int | None:
    """How many jobs the joblib launcher runs at once on ``cores``; None for other launchers.

    joblib's convention: ``n_jobs=-1`` is every core, ``-2`` every core but one, and so on.
    """
    if not launcher or "JoblibLauncher" not in str(launcher.get("_target_", "")):
        return None
    n_jobs = launcher.get("n_jobs", -1)
    if n_jobs is None or n_jobs == 0:
        return 1
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return int(n_jobs)


def choose_num_threads(
    requested: int | None, launcher: Mapping[str, Any] | None, cores: int | None = None
) -> tuple[int | None, str]:
    """``(threads, why)``: the thread count to set (None: torch's default) and its reason."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(
                f"device.num_threads={requested} is not allowed: use a positive number of "
                "threads, or null for auto"
            )
        return requested, "device.num_threads"
    cores = cpu_count() if cores is None else cores
    jobs = parallel_jobs(launcher, cores)
    if jobs is not None:
        return max(1, cores // jobs), f"auto: {cores} cores / {jobs} parallel jobs"
    cpus_per_task = launcher.get("cpus_per_task") if launcher else None
    if cpus_per_task:
        return int(cpus_per_task), "auto: hydra.launcher.cpus_per_task"
    return None, "auto: torch's default"


def apply_num_threads(requested: int | None, launcher: Mapping[str, Any] | None) -> int:
    """Set torch's thread count for this job, log it and return it."""
    import torch

    global _torch_default
    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    threads, why = choose_num_threads(requested, launcher)
    # auto restores torch's default: a process that runs several jobs (tests, loky's reused
    # workers) must not keep an earlier job's setting
    torch.set_num_threads(_torch_default if threads is None else threads)
    chosen = torch.get_num_threads()
    log.info("torch threads: %d (%s)", chosen, why)
    return chosen
