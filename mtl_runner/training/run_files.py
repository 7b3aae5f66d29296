"""The files of a run (DESIGN.md §4), each written so that a crash never leaves half of it."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mtl_runner.errors import CheckpointError

METRICS_FILE = "metrics.csv"
RESULTS_FILE = "results.json"
STEPS_FILE = "steps.csv"  # optional: every trainer.steps_every-th step's losses and weights
SPLITS_FILE = "splits.json"  # which file rows went to which split (CSV datasets)
CHECKPOINT_DIR = "checkpoints"


class MetricsWriter:
    """Appends one CSV row per epoch; the header comes with the first row.

    Each row is written with a single ``write`` of the complete line and flushed at once, so a
    reader (or a crash) sees whole rows only. ``pd.read_csv`` reads the file with no arguments.
    """

    def __init__(self, path: Path, columns: Sequence[str], keep_rows: int = 0) -> None:
        """``keep_rows``: a resumed run keeps the file's header and first rows (the epochs of
        its checkpoint) and appends after them; later rows, from epochs the checkpoint does not
        cover, are dropped. The kept part is rewritten atomically."""
        self.path = path
        self.columns = tuple(columns)
        self._file: IO[str] | None = None
        if keep_rows:
            self._keep(keep_rows)

    def _keep(self, rows: int) -> None:
        lines = (
            self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            if (self.path.is_file())
            else []
        )
        header = ",".join(self.columns) + "\n"
        complete = [line for line in lines[1 : rows + 1] if line.endswith("\n")]
        if not lines or lines[0] != header or len(complete) < rows:
            raise CheckpointError(
                f"trainer.resume: {self.path} does not hold the header and the {rows} complete "
                f"rows the checkpoint covers: it is not this run's {self.path.name}"
            )
        write_text_atomic(self.path, header + "".join(complete))
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115

    def write(self, row: Mapping[str, float | int]) -> None:
        unknown = set(row) - set(self.columns)
        missing = set(self.columns) - set(row)
        if unknown or missing:
            raise ValueError(f"row does not match the columns: extra {unknown}, missing {missing}")
        text = ",".join(_format(row[column]) for column in self.columns) + "\n"
        if self._file is None:
            # kept open across epochs and closed by close(): one handle for the whole run
            self._file = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            text = ",".join(self.columns) + "\n" + text
        self._file.write(text)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _format(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    # repr round-trips a float exactly; pandas reads nan/inf back as floats
    return repr(float(value)) if math.isfinite(value) else str(float(value))


def write_json_atomic(path: Path, content: Mapping[str, Any]) -> None:
    """Write JSON to a temporary file and rename it over ``path`` (all or nothing)."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, allow_nan=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file and rename it over ``path`` (all or nothing)."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_checkpoint_atomic(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never corrupts a checkpoint."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(dict(state), temporary)
    os.replace(temporary, path)
