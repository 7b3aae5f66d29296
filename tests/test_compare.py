"""mtl-compare: run directories written by hand with known numbers (no training), except one
end-to-end sweep whose callback must leave summary.csv in the sweep directory.

The numbers are dyadic fractions (0.75, 0.125, ...), so means and ties are exact in floating
point and the expected values below are computed by hand.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from mtl_runner.compare import callback as callback_module
from mtl_runner.compare import cli, runs, summary
from mtl_runner.compare.callback import SweepSummary
from mtl_runner.compare.report import compare
from mtl_runner.compare.runs import CompareError
from mtl_runner.config_dir import config_dir

EQUAL = "mtl_runner.weighting.equal.Equal"
DWA = "mtl_runner.weighting.dwa.DWA"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    directory: Path,
    overrides: Sequence[str],
    test: dict[str, float],
    *,
    target: str = EQUAL,
    mode: str = "multi_task",
    seed: int = 0,
    fold: int | None = None,
    status: str = "completed",
    epochs: int = 3,
) -> Path:
    """A run directory as mtl-run writes it: results.json, metrics.csv, .hydra/*.yaml.

    ``test`` maps ``<metric>/<task>`` to the test value; the best-epoch validation value is
    the same value + 0.5 (so val and test columns are told apart).
    """
    tasks = sorted({key.split("/")[1] for key in test})
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    dataset = {"n": 100} if fold is None else {"n": 100, "fold": fold, "folds": 2}
    config = {
        "mode": {"type": mode},
        "dataset": dataset,
        "weighting": {"_target_": target},
        "trainer": {"seed": seed, "monitor": "val/loss"},
    }
    (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    results = {
        "status": status,
        "mode": mode,
        "weighting": target,
        "tasks": tasks,
        "monitor": "val/loss" if mode == "multi_task" else {t: f"val/loss/{t}" for t in tasks},
        "best_epoch": epochs if mode == "multi_task" else dict.fromkeys(tasks, epochs),
        "val": {f"val/{key}": value + 0.5 for key, value in test.items()},
        "test": {f"test/{key}": value for key, value in test.items()},
    }
    if status != "completed":
        results["error"] = "training diverged at epoch 2"
    (directory / "results.json").write_text(json.dumps(results))
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "step": 2 * epoch, "time_s": 0.1 * epoch, "lr": 0.001}
        for task in tasks:
            row[f"train/loss/{task}"] = 1.0 / epoch + seed * 0.1
            row[f"weight/{task}"] = 1.0 + (0.1 * epoch if target == DWA else 0.0)
        for task in tasks:
            row[f"val/loss/{task}"] = 1.2 / epoch + seed * 0.1
        rows.append(row)
    pd.DataFrame(rows).to_csv(directory / "metrics.csv", index=False)
    return directory


def values(auroc: float, brier: float, qwk: float, mae: float) -> dict[str, float]:
    """Task a (binary): auroc ↑, brier ↓; task b (ordinal): qwk ↑, mae ↓; plus the losses."""
    return {
        "loss/a": 0.5,
        "auroc/a": auroc,
        "brier/a": brier,
        "loss/b": 1.0,
        "qwk/b": qwk,
        "mae/b": mae,
    }


STL = "mode=single_task"
EQ = "weighting=equal"
DWA_GROUP = "weighting=dwa,weighting.temperature=2"


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Three groups: single-task (1 run), equal (seeds 0 and 1), DWA (seed 0, folds 0 and 1),
    plus a failed and an incomplete run.

    | group | auroc/a ↑    | brier/a ↓     | qwk/b ↑ | mae/b ↓ |
    |-------|--------------|---------------|---------|---------|
    | STL   | 0.75         | 0.25          | 0.5     | 1.0     |
    | equal | 0.75, 0.875  | 0.125, 0.375  | 0.5,0.5 | 0.75 ×2 |
    | DWA   | 0.625 ×2     | 0.5 ×2        | 0.75 ×2 | 1.5 ×2  |
    """
    root = tmp_path / "sweep"
    stl = write_run(root / "stl", [STL, "trainer.seed=0"], values(0.75, 0.25, 0.5, 1.0),
                    mode="single_task")  # fmt: skip
    # the single-task run's per-task parts: no run of their own
    for task in ("a", "b"):
        part = stl / "tasks" / task
        part.mkdir(parents=True)
        (part / "results.json").write_text(json.dumps({"status": "completed"}))
        (part / "metrics.csv").write_text("epoch\n1\n")
    write_run(root / "0_eq", [EQ, "trainer.seed=0"], values(0.75, 0.125, 0.5, 0.75))
    write_run(root / "1_eq", ["trainer.seed=1", EQ], values(0.875, 0.375, 0.5, 0.75), seed=1)
    for fold in (0, 1):
        overrides = ["weighting=dwa", "++trainer.seed=0", f"dataset.fold={fold}",
                     "weighting.temperature=2", "hydra.job.chdir=false"]  # fmt: skip
        write_run(root / f"dwa_{fold}", overrides, values(0.625, 0.5, 0.75, 1.5), target=DWA,
                  fold=fold)  # fmt: skip
    write_run(root / "failed", ["weighting=dwa", "weighting.temperature=2", "trainer.seed=1"],
              values(0.0, 1.0, 0.0, 4.0), target=DWA, status="failed", seed=1)  # fmt: skip
    incomplete = root / "incomplete" / ".hydra"
    incomplete.mkdir(parents=True)
    (incomplete / "overrides.yaml").write_text("- weighting=uw\n")
    return root


def table_row(table: pd.DataFrame, group: str, task: str, metric: str) -> pd.Series:
    rows = table[(table["group"] == group) & (table["task"] == task) & (table["metric"] == metric)]
    assert len(rows) == 1
    return rows.iloc[0]


def groups_by_name(result: summary.Summary) -> pd.DataFrame:
    return result.groups.set_index("group")


# ------------------------------------------------------------------------- discovery, groups
def test_discovery_skips_failed_and_incomplete_runs_and_single_task_parts(sweep: Path) -> None:
    found, warnings = runs.load_runs([sweep])
    assert sorted(r.path.name for r in found) == ["0_eq", "1_eq", "dwa_0", "dwa_1", "stl"]
    assert len(warnings) == 2  # one line each; the tasks/<task>/ parts are not mentioned
    failed, incomplete = sorted(warnings)
    assert "failed" in failed and "status failed (training diverged at epoch 2)" in failed
    assert "incomplete" in incomplete and "no results.json and no metrics.csv" in incomplete
    assert all("\n" not in w and "tasks" not in w for w in warnings)


def test_groups_leave_out_seed_fold_and_hydra_overrides(sweep: Path) -> None:
    found, _ = runs.load_runs([sweep])
    by_group = summary.group_runs(found)
    assert list(by_group) == [STL, DWA_GROUP, EQ]  # sorted names
    assert len(by_group[EQ]) == 2  # seeds 0 and 1
    assert len(by_group[DWA_GROUP]) == 2  # folds 0 and 1, one with ++trainer.seed
    assert runs.group_name([]) == "default"
    assert runs.group_name(["trainer.seed=3", "hydra/launcher=joblib"]) == "default"
    # a resumed run (mtl-run --resume adds trainer.resume) stays in its group
    resumed = ["weighting=dwa", "trainer.resume=/runs/x", "trainer.progress=none"]
    assert runs.group_name(resumed) == "weighting=dwa"


def test_method_is_read_from_the_composed_config(sweep: Path) -> None:
    found, _ = runs.load_runs([sweep])
    methods = {r.path.name: r.method for r in found}
    assert methods == {"stl": "single_task", "0_eq": "Equal", "1_eq": "Equal", "dwa_0": "DWA",
                       "dwa_1": "DWA"}  # fmt: skip


# ---------------------------------------------------------------------------------- the table
def test_mean_std_ddof1_and_n(sweep: Path) -> None:
    found, _ = runs.load_runs([sweep])
    table = summary.summarize(found).table
    auroc = table_row(table, EQ, "a", "auroc")
    assert auroc["test_mean"] == 0.8125
    # std with ddof=1 of (0.75, 0.875): |0.875 - 0.75| / sqrt(2)
    assert auroc["test_std"] == pytest.approx(0.125 / math.sqrt(2))
    assert auroc["val_mean"] == 1.3125  # val = test + 0.5 in write_run
    assert auroc["val_std"] == pytest.approx(0.125 / math.sqrt(2))
    assert auroc["test_n"] == auroc["val_n"] == auroc["runs"] == 2
    single = table_row(table, STL, "a", "auroc")
    assert single["test_n"] == 1 and math.isnan(single["test_std"])  # ddof=1: one run, no std
    dwa = table_row(table, DWA_GROUP, "b", "mae")
    assert (dwa["test_mean"], dwa["test_std"], dwa["test_n"]) == (1.5, 0.0, 2)
    # every group × task × metric, losses included (they are reported, not in Δm%)
    assert len(table) == 3 * 6
    assert list(table["task"].unique()) == ["a", "b"]
    assert list(table[table["task"] == "a"]["metric"].unique()) == ["loss", "auroc", "brier"]


# ----------------------------------------------------------------------------- Δm% and ranks
def test_delta_m_against_the_single_task_baseline(sweep: Path) -> None:
    found, _ = runs.load_runs([sweep])
    result = summary.summarize(found)
    assert result.baseline == STL
    assert result.delta_metrics == ("auroc", "brier", "qwk", "mae")  # not the loss
    groups = groups_by_name(result)
    # equal vs STL (means): auroc (0.8125 − 0.75)/0.75 = +8.333%; brier −(0.25 − 0.25)/0.25 = 0;
    # qwk 0; mae (lower is better) −(0.75 − 1.0)/1.0 = +25%  →  Δm = 33.333/4 = +8.3333
    assert groups.loc[EQ, "delta_m_pct"] == pytest.approx(100 / 12)
    # DWA vs STL: auroc −16.667; brier −(0.5 − 0.25)/0.25 = −100 (worse: positive difference of
    # a lower-is-better metric); qwk +50; mae −50  →  Δm = −116.667/4 = −29.1667
    assert groups.loc[DWA_GROUP, "delta_m_pct"] == pytest.approx(-350 / 12)
    assert groups.loc[STL, "delta_m_pct"] == 0.0
    # ± over the runs: seed 0 (0, +50, 0, +25)/4 = 18.75; seed 1 (+16.667, −50, 0, +25)/4 =
    # −2.0833; std (ddof=1) = (18.75 + 2.0833)/sqrt(2)
    assert groups.loc[EQ, "delta_m_std"] == pytest.approx((18.75 + 25 / 12) / math.sqrt(2))
    assert groups.loc[DWA_GROUP, "delta_m_std"] == 0.0
    assert math.isnan(groups.loc[STL, "delta_m_std"])  # one run
    brier = table_row(result.table, DWA_GROUP, "a", "brier")
    assert brier["delta_pct"] == pytest.approx(-100.0)
    assert bool(brier["in_delta_m"]) and not bool(table_row(result.table, EQ, "a", "loss")[
        "in_delta_m"])  # fmt: skip
    assert list(result.groups["group"]) == [EQ, STL, DWA_GROUP]  # best Δm% first


def test_mean_rank_per_metric_with_ties(sweep: Path) -> None:
    found, _ = runs.load_runs([sweep])
    result = summary.summarize(found)
    rank = {(g, m): table_row(result.table, g, t, m)["rank"]
            for g in (STL, EQ, DWA_GROUP) for t, m in (("a", "auroc"), ("a", "brier"),
                                                       ("b", "qwk"), ("b", "mae"))}  # fmt: skip
    # auroc ↑: equal 0.8125 (1), STL 0.75 (2), DWA 0.625 (3)
    assert (rank[EQ, "auroc"], rank[STL, "auroc"], rank[DWA_GROUP, "auroc"]) == (1, 2, 3)
    # brier ↓: STL = equal = 0.25 share (1 + 2)/2 = 1.5; DWA 0.5 → 3
    assert (rank[EQ, "brier"], rank[STL, "brier"], rank[DWA_GROUP, "brier"]) == (1.5, 1.5, 3)
    # qwk ↑: DWA 0.75 → 1; STL = equal = 0.5 → 2.5
    assert (rank[DWA_GROUP, "qwk"], rank[STL, "qwk"], rank[EQ, "qwk"]) == (1, 2.5, 2.5)
    # mae ↓: equal 0.75 (1), STL 1.0 (2), DWA 1.5 (3)
    assert (rank[EQ, "mae"], rank[STL, "mae"], rank[DWA_GROUP, "mae"]) == (1, 2, 3)
    groups = groups_by_name(result)
    # MR: STL (2 + 1.5 + 2.5 + 2)/4 = 2.0; equal (1 + 1.5 + 2.5 + 1)/4 = 1.5; DWA 10/4 = 2.5
    assert groups["mean_rank"].to_dict() == {EQ: 1.5, STL: 2.0, DWA_GROUP: 2.5}


def test_metrics_option_restricts_delta_m_and_ranks(sweep: Path) -> None:
    found, _ = runs.load_runs([sweep])
    result = summary.summarize(found, metrics=["auroc"])
    groups = groups_by_name(result)
    assert result.delta_metrics == ("auroc",)
    assert groups.loc[EQ, "delta_m_pct"] == pytest.approx(100 / 12)  # auroc alone: +8.333
    assert groups.loc[DWA_GROUP, "delta_m_pct"] == pytest.approx(-100 / 6)
    assert groups["mean_rank"].to_dict() == {EQ: 1.0, STL: 2.0, DWA_GROUP: 3.0}
    with pytest.raises(CompareError, match="unknown metric nope .* auroc, brier"):
        summary.summarize(found, metrics=["nope"])


def test_baseline_is_equal_weighting_without_single_task_runs(tmp_path: Path) -> None:
    # no override names the method: "default" runs Equal by its composed config
    write_run(tmp_path / "0", ["trainer.seed=0"], values(0.75, 0.25, 0.5, 1.0))
    write_run(tmp_path / "1", ["weighting=dwa"], values(0.875, 0.25, 0.5, 1.0), target=DWA)
    found, _ = runs.load_runs([tmp_path])
    result = summary.summarize(found)
    assert result.baseline == "default"
    assert "equal-weighting" in result.baseline_reason
    # DWA vs equal: only auroc differs, (0.875 − 0.75)/0.75 = +16.667%, over 4 metrics
    assert groups_by_name(result).loc["weighting=dwa", "delta_m_pct"] == pytest.approx(25 / 6)


def test_baseline_option_and_unknown_group(sweep: Path) -> None:
    found, _ = runs.load_runs([sweep])
    result = summary.summarize(found, baseline=EQ)
    assert result.baseline == EQ and result.baseline_reason == "chosen with --baseline"
    groups = groups_by_name(result)
    assert groups.loc[EQ, "delta_m_pct"] == 0.0
    # STL vs equal: auroc (0.75 − 0.8125)/0.8125 = −7.6923%; mae −(1 − 0.75)/0.75 = −33.333%
    assert groups.loc[STL, "delta_m_pct"] == pytest.approx((-100 / 13 - 100 / 3) / 4)
    with pytest.raises(CompareError) as error:
        summary.summarize(found, baseline="weighting=uw")
    assert str(error.value) == (
        f"unknown baseline group 'weighting=uw'; the groups are: '{STL}', '{DWA_GROUP}', '{EQ}'"
    )


def test_no_baseline_candidate_gives_no_delta_m_but_ranks(tmp_path: Path) -> None:
    write_run(tmp_path / "0", ["weighting=dwa"], values(0.75, 0.25, 0.5, 1.0), target=DWA)
    found, _ = runs.load_runs([tmp_path])
    result = summary.summarize(found)
    assert result.baseline is None
    assert any("no Δm%" in w for w in result.warnings)
    assert math.isnan(result.groups.loc[0, "delta_m_pct"])
    assert result.groups.loc[0, "mean_rank"] == 1.0


def test_small_and_nan_baseline_values_are_named_and_nan_skipped(tmp_path: Path) -> None:
    stl = values(0.75, 0.03125, math.nan, 1.0)  # brier near 0, qwk NaN
    write_run(tmp_path / "stl", [STL], stl, mode="single_task")
    write_run(tmp_path / "eq", [EQ], values(0.75, 0.0625, 0.5, 1.0))
    found, _ = runs.load_runs([tmp_path])
    result = summary.summarize(found)
    small = [w for w in result.warnings if "|value| < 0.05" in w]
    assert small == [
        "Δm%: the baseline's test/brier/a is 0.03125 (|value| < 0.05): "
        "its relative change can dominate Δm%"
    ]
    assert [w for w in result.warnings if "NaN" in w or "nan" in w] == [
        "Δm%: the baseline's test/qwk/b is nan: left out of Δm% (every group)"
    ]
    # qwk left out: (0 + brier −(0.0625 − 0.03125)/0.03125 = −100 + 0) / 3 metrics
    assert groups_by_name(result).loc[EQ, "delta_m_pct"] == pytest.approx(-100 / 3)


def test_metric_without_a_baseline_value_is_named(tmp_path: Path) -> None:
    write_run(tmp_path / "stl", [STL], {"auroc/a": 0.5}, mode="single_task")
    write_run(tmp_path / "eq", [EQ], {"auroc/a": 0.75, "auroc/c": 0.75})
    found, _ = runs.load_runs([tmp_path])
    result = summary.summarize(found)
    assert result.warnings == ["Δm%: the baseline has no test/auroc/c: left out of Δm%"]
    assert groups_by_name(result).loc[EQ, "delta_m_pct"] == 50.0  # auroc/a alone


def test_negative_baseline_keeps_the_sign_convention(tmp_path: Path) -> None:
    # r2 ↑ from −0.5 to −0.25 is better: +50% with |M_base| (the raw formula would give −50%)
    write_run(tmp_path / "stl", [STL], {"r2/y": -0.5}, mode="single_task")
    write_run(tmp_path / "eq", [EQ], {"r2/y": -0.25})
    found, _ = runs.load_runs([tmp_path])
    assert groups_by_name(summary.summarize(found)).loc[EQ, "delta_m_pct"] == 50.0


# ------------------------------------------------------------------------------ files, plots
def test_summary_files(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = compare([sweep], out=out, plots=False)
    csv = pd.read_csv(out / "summary.csv")
    assert list(csv.columns) == summary.TABLE_COLUMNS
    assert len(csv) == 18
    row = table_row(csv, EQ, "b", "mae")
    assert (row["test_mean"], row["test_n"], row["delta_pct"], row["rank"]) == (0.75, 2, 25.0, 1)
    assert row["delta_m_pct"] == pytest.approx(100 / 12) and row["mean_rank"] == 1.5
    assert bool(table_row(csv, STL, "a", "auroc")["baseline"])
    markdown = (out / "summary.md").read_text()
    assert markdown == report.markdown
    assert "**positive = better than the baseline**" in markdown
    assert "ddof = 1" in markdown and "ties share their average rank" in markdown
    assert f"- **Baseline**: `{STL}`: the single-task runs" in markdown
    assert f"| `{EQ}` | Equal | 2 | 0,1 | – | +8.33 ± 14.73 | 1.50 |" in markdown
    assert f"| `{DWA_GROUP}` | DWA | 2 | 0 | 0,1 | -29.17 ± 0.00 | 2.50 |" in markdown
    assert f"| a | auroc ↑ | `{EQ}` | 2 | 1.3125 ± 0.0884 | 0.8125 ± 0.0884 | +8.33 | 1.0 |" in (
        markdown
    )
    assert "## Warnings" in markdown and "status failed" in markdown
    assert not (sweep / "summary.csv").exists()  # --out, not the first PATH


def test_plots_are_valid_png_files(sweep: Path) -> None:
    report = compare([sweep], plot_metric="auroc")
    plots = sweep / "plots"
    names = {p.name for p in plots.iterdir()}
    # write_run's metrics.csv has no val/auroc/<task> column: no such plot, and a warning
    assert names == {f"{family}_{task}.png" for family in ("train_loss", "weight") for task in "ab"}
    assert any("no run has a val/auroc/<task> column" in w for w in report.warnings)
    for path in plots.iterdir():
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert (sweep / "summary.csv").exists()  # default --out: the first PATH


def test_default_plot_metric_is_the_monitored_one(sweep: Path) -> None:
    compare([sweep])  # trainer.monitor = val/loss in every run: val_loss_<task>.png
    names = {p.name for p in (sweep / "plots").iterdir()}
    assert names == {f"{f}_{t}.png" for f in ("train_loss", "weight", "val_loss") for t in "ab"}


# ------------------------------------------------------------------------------------- CLI
def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        code = cli.main(args)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_success_prints_the_table_and_warnings(sweep: Path, capsys) -> None:
    code, out, err = run_cli([str(sweep), "--no-plots", "--metrics", "auroc,mae"], capsys)
    assert code == 0
    assert "# mtl-compare summary" in out and "Test metrics of every task: auroc, mae" in out
    lines = err.splitlines()
    assert len(lines) == 2 and all(
        line.startswith("mtl-compare: warning: skipped ") for line in lines
    )
    assert not (sweep / "plots").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nope"], "mtl-compare: error: no such file or directory: {tmp}/nope"),
        (["{tmp}/empty"], "mtl-compare: error: no completed run under {tmp}/empty"),
        (
            ["{sweep}", "--baseline", "x"],
            "mtl-compare: error: unknown baseline group 'x'; the "
            f"groups are: '{STL}', '{DWA_GROUP}', '{EQ}'",
        ),  # fmt: skip
        (["{sweep}", "--metrics", "f1"], "mtl-compare: error: unknown metric f1 for --metrics"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(
    args: list[str], message: str, sweep: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "empty").mkdir()
    fill = {"tmp": tmp_path, "sweep": sweep}
    code, out, err = run_cli([a.format(**fill) for a in args], capsys)
    assert code == 2
    assert err.startswith(message.format(**fill))
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_only_failed_runs(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "x", [EQ], values(0.5, 0.5, 0.5, 0.5), status="failed")
    code, _, err = run_cli([str(tmp_path)], capsys)
    assert code == 2
    assert err == f"mtl-compare: error: no completed run under {tmp_path} (1 skipped: failed or " \
        "incomplete)\n"  # fmt: skip


# -------------------------------------------------------------------------------- callback
@pytest.fixture
def hydra_config(tmp_path: Path):
    def _config(sweep_dir: Path):
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(
                config_name="config",
                overrides=[f"hydra.sweep.dir={sweep_dir}"],
                return_hydra_config=True,
            )

    return _config


def test_callback_is_registered_in_the_config(hydra_config, tmp_path: Path) -> None:
    callbacks = hydra_config(tmp_path).hydra.callbacks
    assert callbacks.sweep_summary._target_ == "mtl_runner.compare.callback.SweepSummary"


def test_callback_never_fails_the_sweep(hydra_config, tmp_path: Path, caplog) -> None:
    empty = tmp_path / "empty_sweep"
    empty.mkdir()
    callback = SweepSummary()
    with caplog.at_level(logging.WARNING, logger="mtl_runner.compare"):
        callback.on_multirun_start(hydra_config(empty))
        callback.on_multirun_end(hydra_config(empty))  # no run at all: a warning, no exception
    assert [r.getMessage() for r in caplog.records] == [
        f"sweep summary not written in {empty}: CompareError: no completed run under {empty}"
    ]


def test_callback_writes_a_pending_summary_after_a_failed_job(
    sweep: Path, hydra_config, caplog
) -> None:
    # Hydra 1.3 skips on_multirun_end when a job failed; mtl-run then writes what is pending
    callback = SweepSummary(plots=False)
    callback.on_multirun_start(hydra_config(sweep))
    assert [callback] == callback_module._PENDING
    with caplog.at_level(logging.WARNING, logger="mtl_runner.compare"):
        callback_module.write_pending_summaries()  # what mtl-run's main does when Hydra raises
    assert (sweep / "summary.csv").exists() and callback_module._PENDING == []
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2 and "status failed" in " ".join(skipped)


def test_callback_end_of_sweep_clears_the_pending_summary(sweep: Path, hydra_config) -> None:
    callback = SweepSummary(plots=False)
    callback.on_multirun_start(hydra_config(sweep))
    callback.on_multirun_end(hydra_config(sweep))
    assert callback_module._PENDING == [] and (sweep / "summary.csv").exists()


def test_a_failed_sweep_still_gets_its_summary(mtl_run, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun"
    outcome = mtl_run(
        "-m", "weighting=fixed", "weighting.weights=[1,1,1],[1,-1,1]", "trainer.epochs=1",
        "dataset.n=300", "trainer.progress=none", f"hydra.sweep.dir={sweep_dir}", fast=False,
    )  # fmt: skip
    assert outcome.code == 1
    table = pd.read_csv(sweep_dir / "summary.csv")
    assert table["runs"].eq(1).all() and table["group"].nunique() == 1


def test_end_to_end_sweep_has_a_summary(mtl_run, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun"
    outcome = mtl_run(
        "-m", "weighting=equal,dwa", "trainer.epochs=2", "dataset.n=300",
        "trainer.progress=none", f"hydra.sweep.dir={sweep_dir}", fast=False,
    )  # fmt: skip
    assert outcome.code == 0, outcome.stderr
    table = pd.read_csv(sweep_dir / "summary.csv")
    assert set(table["group"]) == {
        "dataset.n=300,trainer.epochs=2,weighting=dwa",
        "dataset.n=300,trainer.epochs=2,weighting=equal",
    }
    assert table["baseline"].sum() == len(table) / 2  # the equal group, no single-task run
    assert set(table["method"]) == {"Equal", "DWA"}
    assert (sweep_dir / "summary.md").exists()
    assert (sweep_dir / "plots" / "weight_a.png").stat().st_size > 1000
