"""Per-epoch progress: a tqdm bar on a terminal, else one log line per epoch.

A bar is shown only for a single run on a terminal: several jobs of a sweep, or output to a
file, would interleave bars. Log lines always reach the job's log file; under a bar they are
printed above it (``logging_redirect_tqdm``); with ``none`` they go to the log file alone.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from mtl_runner.schema import Progress

log = logging.getLogger("mtl_runner")


def log_to_files_only(level: int, message: str) -> None:
    """Record a message in the job's log file (Hydra's file handler) without printing it."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def use_bar(mode: Progress, multirun: bool) -> bool:
    if mode is Progress.auto:
        return sys.stderr.isatty() and not multirun
    return mode is Progress.bar


class EpochProgress:
    def __init__(self, mode: Progress, multirun: bool, epochs: int, tasks: Sequence[str]) -> None:
        self.mode = Progress(mode)
        self.tasks = tuple(tasks)
        self.epochs = epochs
        self._bar: tqdm | None = None
        if use_bar(self.mode, multirun):
            self._bar = tqdm(total=epochs, desc="epochs", unit="epoch", dynamic_ncols=True)

    @contextlib.contextmanager
    def active(self) -> Iterator[EpochProgress]:
        redirect = logging_redirect_tqdm() if self._bar else contextlib.nullcontext()
        try:
            with redirect:
                yield self
        finally:
            if self._bar is not None:
                self._bar.close()

    def update(self, row: Mapping[str, float]) -> None:
        if self.mode is Progress.none:
            log_to_files_only(logging.INFO, self.line(row))
        else:
            log.info(self.line(row))
        if self._bar is not None:
            self._bar.set_postfix_str(
                " ".join(
                    f"{t}={row[f'train/loss/{t}']:.3g}·{row[f'weight/{t}']:.3g}" for t in self.tasks
                ),
                refresh=False,
            )
            self._bar.update(1)

    def line(self, row: Mapping[str, float]) -> str:
        def family(prefix: str) -> str:
            return " ".join(f"{t}={row[f'{prefix}/{t}']:.4f}" for t in self.tasks)

        return (
            f"epoch {row['epoch']}/{self.epochs} | train loss {family('train/loss')} | "
            f"weight {family('weight')} | val loss {family('val/loss')}"
        )
