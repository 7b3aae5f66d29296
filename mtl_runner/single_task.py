"""Single-task baselines: one model per task, same architecture, budget, seed and splits.

``mtl-run mode=single_task`` trains, for each task in turn, the configured model with that one
head on that task's labels alone (the plain mean loss: with one task there is nothing to weight,
so ``weighting`` is not used). Each model writes its own files under ``tasks/<task>/``; the run
directory then gets the same files as a multi-task run — ``metrics.csv`` with the usual columns
(epoch e holds each task model's epoch e) and ``results.json`` whose ``val`` and ``test`` hold
every task's metrics from its own best epoch — so Δm% can read both the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from mtl_runner.training.run_files import (
    METRICS_FILE,
    RESULTS_FILE,
    write_json_atomic,
    write_text_atomic,
)

log = logging.getLogger("mtl_runner")

TASKS_DIR = "tasks"


def train_single_task(
    cfg: DictConfig, data: Any, device: Any, out_dir: Path, multirun: bool
) -> dict[str, Any]:
    from mtl_runner.run import fit
    from mtl_runner.training.trainer import seed_everything
    from mtl_runner.weighting.equal import Equal

    per_task: dict[str, dict[str, Any]] = {}
    for task in data.tasks:
        # every baseline starts from the run's seed, as its own single-task run would
        seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
        task_cfg = _task_config(cfg, task)
        task_dir = out_dir / TASKS_DIR / task.name
        task_dir.mkdir(parents=True, exist_ok=True)
        log.info("single-task baseline %d/%d: %s", len(per_task) + 1, len(data.tasks), task.name)
        only = data.only(task.name)
        per_task[task.name] = fit(task_cfg, only, Equal([task.name]), device, task_dir, multirun)
        write_json_atomic(task_dir / RESULTS_FILE, {"status": "completed", **per_task[task.name]})
    write_merged_metrics(out_dir, data.task_names)
    return merged_results(per_task)


def _task_config(cfg: DictConfig, task: Any) -> DictConfig:
    """The run's config with a monitor that the one-task model has (see :func:`task_monitor`)."""
    task_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    task_cfg.trainer.monitor = task_monitor(cfg.trainer.monitor, task)
    if cfg.trainer.resume:  # each baseline resumes from its own directory, if it had started
        own = Path(cfg.trainer.resume) / TASKS_DIR / task.name
        task_cfg.trainer.resume = str(own) if (own / "checkpoints" / "last.pt").is_file() else None
    return task_cfg


def task_monitor(monitor: str, task: Any) -> str:
    """Each baseline selects on its own task: ``val/auroc/<other>`` or ``val/auroc`` becomes
    ``val/auroc/<task>``; a metric the task does not have falls back to its ``val/loss``."""
    quantity = monitor.split("/")[1]
    if quantity == "loss" or quantity in task.metric_names:
        return f"val/{quantity}/{task.name}"
    log.info("task %s has no %s: its baseline monitors val/loss/%s", task.name, monitor, task.name)
    return f"val/loss/{task.name}"


def write_merged_metrics(out_dir: Path, task_names: tuple[str, ...]) -> None:
    """One metrics.csv in the multi-task layout from the per-task files (written atomically)."""
    frames = {t: pd.read_csv(out_dir / TASKS_DIR / t / METRICS_FILE) for t in task_names}
    bookkeeping = ["step", "time_s", "lr"]
    merged = pd.DataFrame({"epoch": sorted(set().union(*(f["epoch"] for f in frames.values())))})
    merged = merged.set_index("epoch")
    # step: the steps of one model (equal across tasks while all run); time_s: of all models
    merged["step"] = pd.concat([f.set_index("epoch")["step"] for f in frames.values()], axis=1).max(
        axis=1
    )
    merged["time_s"] = (
        pd.concat([f.set_index("epoch")["time_s"] for f in frames.values()], axis=1)
        .ffill()
        .sum(axis=1)
    )
    merged["lr"] = frames[task_names[0]].set_index("epoch")["lr"]
    task_columns = pd.concat(
        [f.set_index("epoch").drop(columns=bookkeeping) for f in frames.values()], axis=1
    )
    merged = merged.join(task_columns).reset_index()
    order = ["epoch", *bookkeeping] + _family_order(list(task_columns.columns), task_names)
    write_text_atomic(out_dir / METRICS_FILE, merged[order].to_csv(index=False, na_rep="nan"))


def _family_order(columns: list[str], task_names: tuple[str, ...]) -> list[str]:
    """The multi-task column order: by family (train/loss, weight, val/loss, val/<m>), then task."""
    families = list(dict.fromkeys(c.rsplit("/", 1)[0] for c in columns))
    rank = {t: i for i, t in enumerate(task_names)}
    return sorted(
        columns,
        key=lambda c: (families.index(c.rsplit("/", 1)[0]), rank[c.rsplit("/", 1)[1]]),
    )


def merged_results(per_task: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """results.json of the baseline: every task's val/test values from its own best epoch."""
    first = next(iter(per_task.values()))

    def field(name: str) -> dict[str, Any]:
        return {task: result[name] for task, result in per_task.items()}

    return {
        "weighting": "single_task",
        "device": first["device"],
        "tasks": list(per_task),
        "n": first["n"],
        "epochs_completed": max(field("epochs_completed").values()),
        "stopped_early": field("stopped_early"),
        "steps": sum(field("steps").values()),
        "monitor": field("monitor"),
        "monitor_mode": field("monitor_mode"),
        "best_epoch": field("best_epoch"),
        "best_value": field("best_value"),
        "val": {k: v for result in per_task.values() for k, v in result["val"].items()},
        "test": {k: v for result in per_task.values() for k, v in result["test"].items()},
    }
