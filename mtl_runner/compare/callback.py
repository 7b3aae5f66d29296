"""A Hydra callback that writes mtl-compare's summary into the sweep directory after a multirun.

Registered in conf/config.yaml under ``hydra.callbacks``. It must never make a sweep fail: any
error of the summary is logged as one warning line. Failed jobs of the sweep are skipped (a
warning line each), as ``mtl-compare`` does.

Hydra 1.3 does not call ``on_multirun_end`` when a job failed (its basic sweeper re-raises the
first job error before that), and those are the sweeps whose summary says the most. So
``on_multirun_start`` also records the sweep as pending, and ``mtl-run`` calls
:func:`write_pending_summaries` when Hydra returns or raises; ``on_multirun_end`` writes it at
once and clears it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("mtl_runner.compare")

#: sweeps started in this process whose summary is not written yet
_PENDING: list[SweepSummary] = []


def write_pending_summaries() -> None:
    """Write the summary of every sweep whose ``on_multirun_end`` never came (a failed job)."""
    while _PENDING:
        _PENDING.pop()._summarize_pending()


class SweepSummary(Callback):
    """``summary.csv``, ``summary.md`` and ``plots/`` in the sweep directory (see mtl-compare)."""

    def __init__(self, plots: bool = True) -> None:
        self.plots = plots
        self._sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            # resolved now, as the sweeper does: ${now:...} is cached on this config object
            self._sweep_dir = _sweep_dir(config)
        except Exception as error:  # never fail a sweep over its summary
            log.warning("no sweep summary: cannot resolve hydra.sweep.dir (%s)", _line(error))
            return
        _PENDING.append(self)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self in _PENDING:
            _PENDING.remove(self)
        if self._sweep_dir is None:
            try:
                self._sweep_dir = _sweep_dir(config)
            except Exception as error:
                log.warning("no sweep summary: cannot resolve hydra.sweep.dir (%s)", _line(error))
                return
        self._summarize_pending()

    def _summarize_pending(self) -> None:
        """Write the summary once (at the end of the sweep or, after a failed job, at exit)."""
        sweep_dir, self._sweep_dir = self._sweep_dir, None
        if sweep_dir is not None:
            summarize_sweep(sweep_dir, plots=self.plots)


def summarize_sweep(sweep_dir: Path, plots: bool = True) -> bool:
    """Write the summary of ``sweep_dir``; log and swallow any error. True when it was written."""
    try:
        from mtl_runner.compare.report import compare

        report = compare([sweep_dir], plots=plots)
    except Exception as error:  # never fail a sweep over its summary
        log.warning("sweep summary not written in %s: %s", sweep_dir, _line(error))
        return False
    for warning in report.warnings:
        log.warning("sweep summary: %s", warning)
    groups = len(report.summary.groups)
    log.info("sweep summary of %d runs in %d groups: %s", len(report.runs), groups, report.files[1])
    return True


def _sweep_dir(config: DictConfig) -> Path:
    HydraConfig.instance().set_config(config)  # ${hydra:...} in the directory name
    return Path(str(OmegaConf.select(config, "hydra.sweep.dir")))


def _line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())
