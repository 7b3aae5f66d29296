"""PNG curves per task against epoch: training loss, weight and a validation metric, one line per
group (the mean over its runs) with a band from the minimum to the maximum over the runs.

Figures are drawn with matplotlib's object API (``Figure`` + Agg canvas), never pyplot: no display
is needed, no global backend is switched for a caller (a notebook), and nothing stays open.
matplotlib is imported only when something is plotted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mtl_runner.compare.runs import Run
from mtl_runner.compare.summary import group_runs

PLOTS_DIR = "plots"


def plot_runs(
    runs: Sequence[Run], out_dir: Path, metric: str = "loss"
) -> tuple[list[Path], list[str]]:
    """Write ``<out_dir>/plots/{train_loss,weight,val_<metric>}_<task>.png``; return the files
    written and a warning when no task has ``val/<metric>/<task>``."""
    by_group = group_runs(runs)
    tasks = list(dict.fromkeys(task for run in runs for task in run.tasks))
    labels = _short_labels(list(by_group))
    plots_dir = out_dir / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    families = [
        ("train/loss", "train_loss"),
        ("weight", "weight"),
        (f"val/{metric}", f"val_{metric}"),
    ]
    for task in tasks:
        for family, stem in families:
            curves = {g: _band(group, f"{family}/{task}") for g, group in by_group.items()}
            curves = {g: c for g, c in curves.items() if c is not None}
            if curves:
                path = plots_dir / f"{_file_name(stem)}_{_file_name(task)}.png"
                _draw(path, f"{family}/{task}", curves, labels)
                written.append(path)
    warnings = []
    if not any(p.name.startswith(f"{_file_name(f'val_{metric}')}_") for p in written):
        warnings.append(f"plots: no run has a val/{metric}/<task> column; no validation plot")
    return written, warnings


def _band(runs: Sequence[Run], column: str) -> pd.DataFrame | None:
    """Mean, min and max over the runs at each epoch (runs of different lengths: over those that
    reached the epoch); None when no run has the column."""
    series = [run.metrics.set_index("epoch")[column] for run in runs if column in run.metrics]
    if not series:
        return None
    stacked = pd.concat(series, axis=1).sort_index()
    return pd.DataFrame(
        {"mean": stacked.mean(axis=1), "low": stacked.min(axis=1), "high": stacked.max(axis=1)}
    )


def _draw(path: Path, column: str, curves: dict[str, pd.DataFrame], labels: dict[str, str]) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    colors = _colors(len(labels))
    for index, group in enumerate(labels):
        if group not in curves:
            continue  # the colour stays the group's in every figure
        curve, color = curves[group], colors[index]
        axes.plot(curve.index, curve["mean"], color=color, label=labels[group], marker=".")
        axes.fill_between(curve.index, curve["low"], curve["high"], color=color, alpha=0.2)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    axes.set_xlabel("epoch")
    axes.set_ylabel(column)
    axes.set_title(f"{column}: mean over runs, band min–max", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=100)


def _colors(count: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def _short_labels(groups: list[str]) -> dict[str, str]:
    """Legend labels without the overrides every group shares (``dataset.n=600`` in a sweep
    over methods), which only make the legend wider; the full names are in summary.md."""
    parts = {g: g.split(",") if g != "default" else [] for g in groups}
    shared = set.intersection(*(set(p) for p in parts.values())) if len(groups) > 1 else set()
    return {g: ",".join(p for p in parts[g] if p not in shared) or g for g in groups}


def _file_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text)
