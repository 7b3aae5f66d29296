"""The whole comparison, shared by the ``mtl-compare`` CLI and the end-of-sweep Hydra callback:
read the runs, summarise, write summary.csv, summary.md and the plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtl_runner.compare.runs import CompareError, Run, load_runs
from mtl_runner.compare.summary import Summary, summarize

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"


@dataclass
class Report:
    summary: Summary
    runs: list[Run]
    skipped: list[str]  # one line per run directory left out
    markdown: str
    files: list[Path] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [*self.skipped, *self.summary.warnings]


def compare(
    paths: Sequence[Path],
    out: Path | None = None,
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    plot_metric: str | None = None,
    plots: bool = True,
) -> Report:
    """Compare the runs under ``paths`` and write the files into ``out`` (default: the first
    path). ``plot_metric``: the validation metric plotted (default: the runs' monitored metric).

    Raises :class:`CompareError` when there is no completed run, or for a bad option value.
    """
    runs, skipped = load_runs(paths)
    if not runs:
        where = ", ".join(str(p) for p in paths)
        reason = f" ({len(skipped)} skipped: failed or incomplete)" if skipped else ""
        raise CompareError(f"no completed run under {where}{reason}")
    summary = summarize(runs, baseline=baseline, metrics=metrics)
    out_dir = out if out is not None else paths[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    if plots:
        written, plot_warnings = plot_runs_lazily(runs, out_dir, plot_metric or monitored(runs))
        summary.warnings.extend(plot_warnings)
        files += written
    markdown = to_markdown(summary, len(runs), skipped)
    summary.table.to_csv(out_dir / SUMMARY_CSV, index=False, na_rep="nan")
    (out_dir / SUMMARY_MD).write_text(markdown, encoding="utf-8")
    files = [out_dir / SUMMARY_CSV, out_dir / SUMMARY_MD, *files]
    return Report(summary, runs, skipped, markdown, files)


def plot_runs_lazily(
    runs: Sequence[Run], out_dir: Path, metric: str
) -> tuple[list[Path], list[str]]:
    # imported here: matplotlib costs ~0.5 s and is not needed with --no-plots
    from mtl_runner.compare.plots import plot_runs

    return plot_runs(runs, out_dir, metric)


def monitored(runs: Sequence[Run]) -> str:
    """The metric of the first multi-task run's ``trainer.monitor`` (``val/auroc`` → ``auroc``);
    ``loss`` when none says."""
    for run in runs:
        if run.monitor and run.monitor.count("/") >= 1:
            return run.monitor.split("/")[1]
    return "loss"


# ---------------------------------------------------------------------------------- markdown
def to_markdown(summary: Summary, n_runs: int, skipped: Sequence[str]) -> str:
    """summary.md, also what the CLI prints: conventions first, then the tables."""
    groups, table = summary.groups, summary.table
    metric_list = ", ".join(summary.delta_metrics) or "none"
    lines = [
        "# mtl-compare summary",
        "",
        f"{n_runs} completed runs in {len(groups)} groups"
        + (f"; {len(skipped)} skipped (see Warnings)." if skipped else "."),
        "",
        f"- **Baseline**: {_code(summary.baseline) if summary.baseline else 'none'}: "
        f"{summary.baseline_reason}.",
        "- **Δm%** (Maninis et al. 2019): mean over the task metrics of "
        "(−1)^l · (M − M_base) / |M_base| · 100, l = 1 when lower is better; "
        "**positive = better than the baseline**. "
        f"Test metrics of every task: {metric_list} (flat mean over tasks × metrics); "
        "M = the group's mean; ± = std over its runs of each run's Δm%.",
        "- **MR** (mean rank, lower is better): each test task metric above ranks the groups' "
        "means (1 = best in the metric's direction, ties share their average rank); "
        "MR is the mean over the metrics.",
        "- **mean ± std** over a group's runs (seeds × folds), std with ddof = 1 (– for one run); "
        "val = at the best epoch, test = the best checkpoint; n = runs with a finite value.",
        "- **Groups**: runs with equal overrides once trainer.seed, dataset.fold, trainer.resume, "
        "trainer.progress and hydra.* are "
        "left out.",
        "",
        "## Groups",
        "",
        "| group | method | runs | seeds | folds | Δm% (↑) | MR (↓) |",
        "|---|---|---:|---|---|---:|---:|",
    ]
    for row in groups.itertuples():
        delta = _mean_std(row.delta_m_pct, row.delta_m_std, "+.2f")
        name = _code(row.group) + (" (baseline)" if row.baseline else "")
        lines.append(
            f"| {name} | {row.method} | {row.runs} | {row.seeds or '–'} | {row.folds or '–'} "
            f"| {delta} | {_number(row.mean_rank, '.2f')} |"
        )
    lines += [
        "",
        "## Metrics",
        "",
        "| task | metric | group | n | val | test | Δ% | rank |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        arrow = {True: " ↑", False: " ↓"}.get(row.higher_is_better, "")
        lines.append(
            f"| {row.task} | {row.metric}{arrow} | {_code(row.group)} | {row.test_n} "
            f"| {_mean_std(row.val_mean, row.val_std, '.4f')} "
            f"| {_mean_std(row.test_mean, row.test_std, '.4f')} "
            f"| {_number(row.delta_pct, '+.2f')} | {_number(row.rank, '.1f')} |"
        )
    warnings = [*skipped, *summary.warnings]
    if warnings:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in warnings)]
    return "\n".join(lines) + "\n"


def _code(text: str | None) -> str:
    return f"`{text}`"


def _number(value: float, spec: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, spec)


def _mean_std(mean: float, std: float, spec: str) -> str:
    if math.isnan(mean):
        return "nan"
    return f"{mean:{spec}} ± {_number(std, spec.lstrip('+'))}"
