"""Find run directories and read each one once: results.json, metrics.csv and .hydra/*.yaml.

A run directory (DESIGN.md §4) holds ``results.json``, ``metrics.csv`` and ``.hydra/``. Runs that
did not complete, or lack one of the files, are skipped with a warning line each rather than
stopping the comparison: a sweep with one failed job is still worth summarising.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.csv"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
CONFIG_FILE = Path(".hydra") / "config.yaml"

#: overrides that repeat one configuration rather than change it: runs that differ only in
#: these are grouped together (their spread is the ± of the table)
REPETITION_KEYS = ("trainer.seed", "dataset.fold")
#: overrides that say how a run was carried out, not what it is (a resumed run stays in its
#: group; the progress display changes nothing)
BOOKKEEPING_KEYS = ("trainer.resume", "trainer.progress")

#: the method name of single-task baseline runs (``mode=single_task``)
SINGLE_TASK = "single_task"

# the C loader is ~10x faster; PyYAML may be built without it
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CompareError(Exception):
    """Bad input to mtl-compare: the CLI prints the message as one line and exits with 2."""


class SkippedRun(Exception):
    """A directory that looks like a run but cannot be compared (failed, incomplete)."""


@dataclass(frozen=True)
class Run:
    """One completed run: what the summary and the plots need, read once."""

    path: Path
    group: str  # its overrides minus repetitions and hydra.* (see :func:`group_name`)
    method: str  # the weighting class name ("Equal", "DWA", ...) or "single_task"
    seed: int | None
    fold: int | None
    tasks: tuple[str, ...]
    val: dict[str, float]  # val/<metric>/<task> at the best epoch
    test: dict[str, float]  # test/<metric>/<task> of the best checkpoint
    monitor: str | None  # trainer.monitor (None for single-task runs: one per task)
    metrics: pd.DataFrame = field(repr=False)  # metrics.csv


def load_runs(paths: Iterable[Path]) -> tuple[list[Run], list[str]]:
    """Every completed run under ``paths`` and one warning per directory skipped.

    Raises :class:`CompareError` when a path does not exist.
    """
    runs: list[Run] = []
    warnings: list[str] = []
    for directory in find_run_dirs(paths):
        try:
            runs.append(read_run(directory))
        except SkippedRun as skipped:
            warnings.append(f"skipped {directory}: {skipped}")
    return runs, warnings


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """The directories under ``paths`` (or the paths themselves) that look like runs, sorted.

    A directory looks like a run when it holds results.json, metrics.csv or .hydra/overrides.yaml
    (one of them is enough, so that an incomplete run is reported rather than ignored). The walk
    does not enter a run directory: its ``tasks/<task>/`` subdirectories (single-task baselines)
    are parts of it, and its checkpoints are large.
    """
    found: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise CompareError(f"no such file or directory: {path}")
        if not path.is_dir():
            raise CompareError(f"not a directory: {path}")
        for root, subdirs, _ in os.walk(path):
            directory = Path(root)
            if _looks_like_run(directory):
                found.add(directory.resolve())  # resolved: overlapping PATHs count a run once
                subdirs.clear()
            else:
                subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    return sorted(found)


def _looks_like_run(directory: Path) -> bool:
    return (
        any((directory / name).is_file() for name in (RESULTS_FILE, METRICS_FILE))
        or (directory / OVERRIDES_FILE).is_file()
    )


def read_run(directory: Path) -> Run:
    """Read one run directory; raises :class:`SkippedRun` saying why it cannot be compared."""
    missing = [
        str(name)
        for name in (RESULTS_FILE, METRICS_FILE, OVERRIDES_FILE)
        if not (directory / name).is_file()
    ]
    if missing:
        raise SkippedRun(f"incomplete, no {' and no '.join(missing)}")
    results = _read_json(directory / RESULTS_FILE)
    status = results.get("status")
    if status != "completed":
        error = results.get("error")
        raise SkippedRun(f"status {status}" + (f" ({error})" if error else ""))
    overrides = _read_yaml(directory / OVERRIDES_FILE) or []
    # config.yaml is optional: older or hand-made runs may lack it; results.json then tells
    config = _read_yaml(directory / CONFIG_FILE) if (directory / CONFIG_FILE).is_file() else {}
    try:
        metrics = pd.read_csv(directory / METRICS_FILE)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise SkippedRun(f"unreadable {METRICS_FILE} ({error})") from None
    if "epoch" not in metrics.columns:
        raise SkippedRun(f"{METRICS_FILE} has no epoch column")
    val, test = _metric_values(results.get("val")), _metric_values(results.get("test"))
    return Run(
        path=directory,
        group=group_name([str(o) for o in overrides]),
        method=_method(results, config),
        seed=_int_or_none(_select(config, "trainer.seed")),
        fold=_int_or_none(_select(config, "dataset.fold")),
        tasks=_tasks(results, test),
        val=val,
        test=test,
        monitor=results["monitor"] if isinstance(results.get("monitor"), str) else None,
        metrics=metrics,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SkippedRun(f"unreadable {path.name} ({error})") from None
    if not isinstance(content, dict):
        raise SkippedRun(f"{path.name} is not a JSON object")
    return content


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as error:
        raise SkippedRun(f"unreadable {path} ({type(error).__name__})") from None


def group_name(overrides: list[str]) -> str:
    """The overrides that make a configuration, sorted by key and joined with ","; "default"
    when none is left.

    Left out: the repetitions (:data:`REPETITION_KEYS`, so seeds and folds of one configuration
    form one group) and ``hydra.*`` / ``hydra/...`` (where files go, which launcher: not the
    experiment). Sorted because the command line's order carries no meaning.
    """
    kept = sorted((o for o in overrides if not _is_ignored(_override_key(o))), key=_override_key)
    return ",".join(kept) if kept else "default"


def _override_key(override: str) -> str:
    """``++trainer.seed=1`` → ``trainer.seed``: the key without Hydra's ``+``/``++``/``~``."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def _is_ignored(key: str) -> bool:
    return (
        key in REPETITION_KEYS
        or key in BOOKKEEPING_KEYS
        or key == "hydra"
        or key.startswith(("hydra.", "hydra/"))
    )


def _method(results: dict[str, Any], config: dict[str, Any]) -> str:
    """``single_task`` for a baseline run, else the weighting's class name; read from the composed
    config (what ran) rather than the overrides (``weighting`` may be the default)."""
    mode = results.get("mode") or _select(config, "mode.type")
    if mode == SINGLE_TASK:
        return SINGLE_TASK
    target = _select(config, "weighting._target_") or results.get("weighting") or "unknown"
    return str(target).rsplit(".", 1)[-1]


def _select(config: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _metric_values(section: Any) -> dict[str, float]:
    """``{"<split>/<metric>/<task>": float}``; null and non-numbers become NaN."""
    if not isinstance(section, dict):
        return {}
    return {str(k): _float(v) for k, v in section.items() if str(k).count("/") >= 2}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _tasks(results: dict[str, Any], test: dict[str, float]) -> tuple[str, ...]:
    tasks = results.get("tasks")
    if isinstance(tasks, list) and tasks:
        return tuple(str(t) for t in tasks)
    return tuple(dict.fromkeys(split_key(k)[2] for k in test))


def split_key(key: str) -> tuple[str, str, str]:
    """``"test/auroc/a"`` → ``("test", "auroc", "a")`` (a task name may hold a "/")."""
    split, metric, task = key.split("/", 2)
    return split, metric, task
