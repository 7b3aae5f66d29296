"""Group runs, aggregate their metrics (mean ± std), and compare groups by Δm% and mean rank.

Conventions (the README and summary.md state them too):

* **Groups**: runs whose overrides are equal once the seed, the fold and ``hydra.*`` are left out
  (:func:`mtl_runner.compare.runs.group_name`).
* **mean ± std** over a group's runs (seeds × folds); std with ``ddof=1`` (the sample standard
  deviation, NaN for one run); NaN values are left out and ``n`` counts the finite ones.
* **Δm%** (Maninis et al. 2019, DESIGN.md §5): for each group, the flat mean over the selected
  test task metrics of ``(−1)^l (M − M_base) / |M_base| · 100`` with l = 1 when lower is better, M
  and M_base the group means: **positive = better than the baseline**. ``|M_base|`` is the
  formula's M_base whenever that is positive; for a negative one (an R² below 0) it keeps the
  sign convention. The ± is the std (ddof=1) over the group's runs of each run's Δm% against the
  same baseline means.
* **MR**: per test task metric, the groups' means are ranked (1 = best, in the metric's direction,
  ties share their average rank, NaN is not ranked); MR is a group's mean rank over the metrics.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from mtl_runner.compare.runs import SINGLE_TASK, CompareError, Run, split_key
from mtl_runner.metrics import HIGHER_IS_BETTER

#: the method whose runs are the baseline when there is no single-task run
EQUAL = "Equal"

#: a baseline closer to 0 than this makes its relative change blow up (data_eval.md §3.1)
SMALL_BASELINE = 0.05

#: left out of Δm% and MR unless asked for: a loss is what is optimised, not what is reported
EXCLUDED_BY_DEFAULT = ("loss",)

#: columns of summary.csv, in order
TABLE_COLUMNS = [
    "group",
    "method",
    "runs",
    "task",
    "metric",
    "higher_is_better",
    "val_mean",
    "val_std",
    "val_n",
    "test_mean",
    "test_std",
    "test_n",
    "in_delta_m",
    "delta_pct",
    "rank",
    "delta_m_pct",
    "delta_m_std",
    "mean_rank",
    "baseline",
]


@dataclass
class Summary:
    table: pd.DataFrame  # one row per group, task and metric: TABLE_COLUMNS
    groups: pd.DataFrame  # one row per group: method, runs, seeds, folds, Δm%, MR, baseline
    baseline: str | None
    baseline_reason: str
    delta_metrics: tuple[str, ...]  # the metric names that enter Δm% and MR
    warnings: list[str]


def summarize(
    runs: Sequence[Run], baseline: str | None = None, metrics: Iterable[str] | None = None
) -> Summary:
    """The comparison of ``runs`` (at least one). ``baseline``: a group name (else the rule of
    :func:`choose_baseline`); ``metrics``: the metric names of Δm% and MR (else all but the loss).

    Raises :class:`CompareError` for an unknown baseline group or metric name.
    """
    by_group = group_runs(runs)
    warnings: list[str] = []
    chosen, reason = choose_baseline(by_group, baseline, warnings)
    table = aggregate(by_group)
    delta_metrics = _delta_metrics(table, metrics, warnings)
    table["in_delta_m"] = table["metric"].isin(delta_metrics) & table["higher_is_better"].notna()
    table["delta_pct"] = _relative_changes(table, chosen, warnings)
    table["rank"] = _ranks(table)
    groups = _group_table(by_group, table, chosen, warnings)
    table = table.merge(groups[["group", "delta_m_pct", "delta_m_std", "mean_rank", "baseline"]])
    return Summary(table[TABLE_COLUMNS], groups, chosen, reason, delta_metrics, warnings)


def group_runs(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs by group name, the names sorted."""
    by_group: dict[str, list[Run]] = {}
    for run in runs:
        by_group.setdefault(run.group, []).append(run)
    return dict(sorted(by_group.items()))


def choose_baseline(
    by_group: dict[str, list[Run]], requested: str | None, warnings: list[str]
) -> tuple[str | None, str]:
    """The baseline group and why it was chosen.

    ``requested`` when given; else the single-task group (DESIGN.md §5: the baseline is the
    single-task model when there is one); else the equal-weighting group (the method read from
    the composed config, so a sweep that never names ``weighting=equal`` but runs it by default
    has one). Among several candidates, the one with the fewest overrides, then by name, with a
    warning. ``None`` (no Δm%) when there is no candidate.
    """
    if requested is not None:
        if requested not in by_group:
            raise CompareError(
                f"unknown baseline group {requested!r}; the groups are: "
                + ", ".join(repr(g) for g in by_group)
            )
        return requested, "chosen with --baseline"
    for method, reason in (
        (SINGLE_TASK, "the single-task runs (mode=single_task)"),
        (EQUAL, "the equal-weighting runs (no single-task run)"),
    ):
        candidates = [g for g, group_runs in by_group.items() if _method(group_runs) == method]
        if candidates:
            chosen = min(candidates, key=lambda g: (_override_count(g), g))
            if len(candidates) > 1:
                warnings.append(
                    f"{len(candidates)} {method} groups: the baseline is {chosen!r}; "
                    "choose another with --baseline"
                )
            return chosen, reason
    warnings.append("no single-task or equal-weighting group: no Δm%; choose one with --baseline")
    return None, "none (no single-task or equal-weighting runs)"


def _override_count(group: str) -> int:
    return 0 if group == "default" else group.count(",") + 1


def _method(runs: Sequence[Run]) -> str:
    return Counter(run.method for run in runs).most_common(1)[0][0]


def aggregate(by_group: dict[str, list[Run]]) -> pd.DataFrame:
    """Per group, task and metric: mean, std (ddof=1) and count of the finite values, for the
    best-epoch validation and the test values; rows in task order, then metric order, then group.
    """
    rows = [
        (group, *split_key(key), value)
        for group, runs in by_group.items()
        for run in runs
        for section in (run.val, run.test)
        for key, value in section.items()
    ]
    values = pd.DataFrame(rows, columns=["group", "split", "metric", "task", "value"])
    stats = values.groupby(["group", "task", "metric", "split"], sort=False)["value"].agg(
        ["mean", "std", "count"]
    )
    wide = stats.unstack("split")
    wide.columns = [f"{split}_{stat}" for stat, split in wide.columns]
    wide = wide.reset_index()
    for split in ("val", "test"):
        for stat in ("mean", "std", "count"):
            if f"{split}_{stat}" not in wide:
                wide[f"{split}_{stat}"] = math.nan
    wide = wide.rename(columns={"val_count": "val_n", "test_count": "test_n"})
    wide[["val_n", "test_n"]] = wide[["val_n", "test_n"]].fillna(0).astype(int)
    wide["method"] = wide["group"].map({g: _method(r) for g, r in by_group.items()})
    wide["runs"] = wide["group"].map({g: len(r) for g, r in by_group.items()})
    wide["higher_is_better"] = wide["metric"].map(HIGHER_IS_BETTER.get)  # None: direction unknown
    return _sorted_rows(wide, by_group)


def _sorted_rows(table: pd.DataFrame, by_group: dict[str, list[Run]]) -> pd.DataFrame:
    """Tasks in the runs' order, metrics in the order written (results.json), then groups."""
    runs = [run for group_runs in by_group.values() for run in group_runs]
    tasks = list(dict.fromkeys(task for run in runs for task in run.tasks))
    tasks += [t for t in dict.fromkeys(table["task"]) if t not in tasks]
    metrics = list(dict.fromkeys(split_key(k)[1] for run in runs for k in (*run.test, *run.val)))
    order = {
        "task": {t: i for i, t in enumerate(tasks)},
        "metric": {m: i for i, m in enumerate(metrics)},
        "group": {g: i for i, g in enumerate(by_group)},
    }
    table = table.sort_values(
        ["task", "metric", "group"], key=lambda column: column.map(order[column.name])
    )
    return table.reset_index(drop=True)


def _delta_metrics(
    table: pd.DataFrame, requested: Iterable[str] | None, warnings: list[str]
) -> tuple[str, ...]:
    """The metric names of Δm% and MR: ``requested``, or every test metric but the loss."""
    tested = table.loc[table["test_n"] > 0, "metric"]
    available = list(dict.fromkeys(tested))
    if requested is None:
        chosen = [m for m in available if m not in EXCLUDED_BY_DEFAULT]
    else:
        chosen = list(dict.fromkeys(requested))
        unknown = [m for m in chosen if m not in available]
        if unknown:
            raise CompareError(
                f"unknown metric {', '.join(unknown)} for --metrics; "
                f"the test metrics are: {', '.join(available)}"
            )
    for metric in chosen:
        if metric not in HIGHER_IS_BETTER:
            warnings.append(f"metric {metric}: direction unknown, left out of Δm% and MR")
    return tuple(m for m in chosen if m in HIGHER_IS_BETTER)


def _relative_changes(table: pd.DataFrame, baseline: str | None, warnings: list[str]) -> pd.Series:
    """Per row in Δm%: ``(−1)^l (M − M_base) / |M_base| · 100``; NaN elsewhere, and where M or
    M_base is NaN (with a warning line for each such baseline metric and group metric)."""
    changes = pd.Series(math.nan, index=table.index)
    if baseline is None:
        return changes
    rows = table[table["in_delta_m"]]
    base = rows[rows["group"] == baseline].set_index(["task", "metric"])["test_mean"]
    for (task, metric), value in base.items():
        if math.isnan(value) or value == 0:
            warnings.append(
                f"Δm%: the baseline's test/{metric}/{task} is {value:g}: "
                "left out of Δm% (every group)"
            )
        elif abs(value) < SMALL_BASELINE:
            warnings.append(
                f"Δm%: the baseline's test/{metric}/{task} is {value:.4g} (|value| < "
                f"{SMALL_BASELINE}): its relative change can dominate Δm%"
            )
    keys = pd.MultiIndex.from_frame(rows[["task", "metric"]])
    reference = base.reindex(keys).replace(0.0, math.nan).to_numpy()  # 0: no relative change
    sign = rows["higher_is_better"].map({True: 1.0, False: -1.0}).to_numpy()
    change = sign * (rows["test_mean"].to_numpy() - reference) / abs(reference) * 100
    changes[rows.index] = change + 0.0  # + 0.0: no "-0.00" for the baseline's lower-is-better
    missing = rows[rows["test_mean"].isna() & pd.notna(reference)]
    for row in missing.itertuples():
        warnings.append(
            f"Δm%: group {row.group!r} has no finite test/{row.metric}/{row.task}: "
            "left out of its Δm%"
        )
    # a task or metric the baseline lacks (e.g. a task without a single-task run)
    unmatched = rows[~keys.isin(base.index)][["task", "metric"]].drop_duplicates()
    for task, metric in unmatched.itertuples(index=False):
        warnings.append(f"Δm%: the baseline has no test/{metric}/{task}: left out of Δm%")
    return changes


def _ranks(table: pd.DataFrame) -> pd.Series:
    """Per task metric of Δm%, the groups' ranks by test mean: 1 = best, ties averaged."""
    ranks = pd.Series(math.nan, index=table.index)
    rows = table[table["in_delta_m"]]
    for _, metric_rows in rows.groupby(["task", "metric"], sort=False):
        higher = bool(metric_rows["higher_is_better"].iloc[0])
        ranks[metric_rows.index] = metric_rows["test_mean"].rank(
            ascending=not higher, method="average", na_option="keep"
        )
    return ranks


def _group_table(
    by_group: dict[str, list[Run]], table: pd.DataFrame, baseline: str | None, warnings: list[str]
) -> pd.DataFrame:
    """One row per group: Δm% (of the means), its std over the runs, MR; best Δm% first."""
    base = table[(table["group"] == baseline) & table["in_delta_m"]]
    base_means = dict(zip(zip(base["task"], base["metric"]), base["test_mean"]))
    rows = []
    for group, runs in by_group.items():
        mine = table[(table["group"] == group) & table["in_delta_m"]]
        per_run = [_run_delta_m(run, base_means) for run in runs] if baseline else []
        per_run = [d for d in per_run if not math.isnan(d)]
        rows.append(
            {
                "group": group,
                "method": _method(runs),
                "runs": len(runs),
                "seeds": _listing(run.seed for run in runs),
                "folds": _listing(run.fold for run in runs),
                "delta_m_pct": mine["delta_pct"].mean() if baseline else math.nan,
                "delta_m_std": pd.Series(per_run, dtype=float).std(ddof=1),
                "mean_rank": mine["rank"].mean(),
                "baseline": group == baseline,
            }
        )
        _warn_repeated(group, runs, warnings)
    groups = pd.DataFrame(rows)
    return groups.sort_values(
        ["delta_m_pct", "mean_rank", "group"], ascending=[False, True, True], na_position="last"
    ).reset_index(drop=True)


def _run_delta_m(run: Run, base_means: dict[tuple[str, str], float]) -> float:
    """One run's Δm% against the baseline means, over the metrics both have finite."""
    changes = []
    for (task, metric), reference in base_means.items():
        value = run.test.get(f"test/{metric}/{task}", math.nan)
        if not (math.isnan(value) or math.isnan(reference) or reference == 0):
            sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
            changes.append(sign * (value - reference) / abs(reference) * 100 + 0.0)
    return sum(changes) / len(changes) if changes else math.nan


def _listing(values: Iterable[int | None]) -> str:
    present = sorted({v for v in values if v is not None})
    return ",".join(str(v) for v in present)


def _warn_repeated(group: str, runs: Sequence[Run], warnings: list[str]) -> None:
    """Two runs of one group with the same seed and fold are the same run twice (the same sweep
    passed twice, or rerun): their spread is not a seed's."""
    counts = Counter((run.seed, run.fold) for run in runs if run.seed is not None)
    repeated = [key for key, count in counts.items() if count > 1]
    for seed, fold in repeated:
        where = f"seed {seed}" + (f", fold {fold}" if fold is not None else "")
        warnings.append(f"group {group!r} has {counts[(seed, fold)]} runs with {where}")
