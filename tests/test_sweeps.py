"""Sweeps: launcher and sweeper presets, parallel jobs and their threads, failing jobs, Optuna,
the missing-plugin message and ``--resume DIR``. Every sweep is tiny and runs in-process through
``mtl_runner.cli.main`` (the joblib and submitit launchers start worker processes of their own)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mtl_runner import cli
from mtl_runner.config_dir import config_dir
from mtl_runner.training.threads import choose_num_threads, cpu_count

TINY = ["dataset.n=300", "trainer.epochs=1", "trainer.progress=log", "trainer.checkpoint=false"]
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def _no_summary() -> list[str]:
    """Leave out the sweep-summary callback (mtl_runner.compare, tested on its own): its plots
    cost seconds per sweep."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    return [f"~hydra.callbacks.{name}" for name in cfg.hydra.callbacks if "summary" in name]


NO_SUMMARY = _no_summary()


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()), key=_num)


def _num(path: Path) -> int:
    return int(path.name.split("_", 1)[0])


def results(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


def compose_full(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def sweep_jobs(*params: str) -> list[list[str]]:
    """The job override lists the basic sweeper makes of ``params`` (globs expanded)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        overrides = parser.parse_overrides(list(params))
        return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


# ------------------------------------------------------------------------------ presets
def test_sweep_dwa_temperatures_is_5_temperatures_by_3_seeds() -> None:
    cfg = compose_full("sweep=dwa_temperatures")
    assert cfg.weighting._target_ == "mtl_runner.weighting.dwa.DWA"
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    jobs = sweep_jobs(*params)
    assert len(jobs) == 15
    assert {j[0] for j in jobs} == {f"weighting.temperature={t}" for t in (0.5, 1, 2, 4, 8)}
    assert {j[1] for j in jobs} == {"trainer.seed=0", "trainer.seed=1", "trainer.seed=2"}


def test_sweep_all_methods_is_every_method_but_fixed_by_3_seeds() -> None:
    cfg = compose_full("sweep=all_methods")
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    jobs = sweep_jobs(*params)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        methods = set(GlobalHydra.instance().config_loader().get_group_options("weighting"))
    assert {j[0] for j in jobs} == {f"weighting={m}" for m in methods - {"fixed"}}
    assert {"weighting=dwa", "weighting=uw", "weighting=equal"} <= {j[0] for j in jobs}
    assert len(jobs) == 3 * (len(methods) - 1)


@pytest.mark.parametrize(
    ("preset", "params", "weighting"),
    [
        ("lr", {"trainer.lr"}, "mtl_runner.weighting.equal.Equal"),
        ("lr_dwa", {"trainer.lr", "weighting.temperature"}, "mtl_runner.weighting.dwa.DWA"),
    ],
)
def test_hparams_search_presets(preset: str, params: set[str], weighting: str) -> None:
    cfg = compose_full(f"hparams_search={preset}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert set(sweeper.params) == params
    assert sweeper.params["trainer.lr"] == "tag(log, interval(1e-4, 1e-1))"
    assert sweeper.direction == "minimize"  # val/loss
    assert sweeper.max_failure_rate == 1.0 and sweeper.study_name == preset
    assert cfg.weighting._target_ == weighting
    # the direction follows the monitor: AUROC is maximised, a forced mode wins
    assert compose_full(f"hparams_search={preset}", "trainer.monitor=val/auroc").hydra.sweeper[
        "direction"
    ] == ("maximize")
    forced = compose_full(f"hparams_search={preset}", "trainer.monitor_mode=max")
    assert forced.hydra.sweeper.direction == "maximize"


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("joblib", JOBLIB),
        ("submitit_local", "hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
        ("submitit_slurm", "hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("slurm_gpu", "hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ],
)
def test_launcher_presets_compose(launcher: str, target: str) -> None:
    cfg = compose_full(f"hydra/launcher={launcher}", "hydra.sweep.dir=/tmp/x")
    assert cfg.hydra.launcher._target_.endswith(target)
    resolved = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    if launcher == "slurm_gpu":
        assert resolved["gpus_per_node"] == 1 and resolved["timeout_min"] == 240
        assert resolved["cpus_per_task"] == 4 and resolved["partition"] is None
        assert resolved["submitit_folder"] == "/tmp/x/.submitit/%j"


# ------------------------------------------------------------------------------ threads
@pytest.mark.parametrize(
    ("requested", "launcher", "expected"),
    [
        (None, {"_target_": JOBLIB, "n_jobs": 2}, 4),
        (None, {"_target_": JOBLIB, "n_jobs": -1}, 1),  # every core a job
        (None, {"_target_": JOBLIB, "n_jobs": -2}, 1),  # 7 jobs on 8 cores
        (None, {"_target_": JOBLIB, "n_jobs": 3}, 2),
        (None, {"_target_": JOBLIB, "n_jobs": 16}, 1),  # never 0
        (None, {"_target_": "x.SlurmLauncher", "cpus_per_task": 4}, 4),
        (None, {"_target_": "x.BasicLauncher"}, None),  # torch's default
        (None, None, None),
        (3, {"_target_": JOBLIB, "n_jobs": 2}, 3),  # an explicit value wins
    ],
)
def test_thread_count(requested, launcher, expected) -> None:
    threads, why = choose_num_threads(requested, launcher, cores=8)
    assert threads == expected, why


def test_bad_thread_count_is_one_line(mtl_run) -> None:
    outcome = mtl_run("device.num_threads=0")
    assert outcome.code == 1
    assert outcome.stderr.strip() == (
        "mtl-run: error: device.num_threads=0 is not allowed: use a positive number of threads, "
        "or null for auto"
    )


# -------------------------------------------------------------- parallel and failing jobs
def test_joblib_sweep_runs_jobs_in_parallel_and_keeps_going_after_a_failure(
    mtl_run, tmp_path: Path
) -> None:
    """Two good jobs and one that fails: the good ones complete, the failure is recorded with its
    traceback in its own directory, the sweep exits 1; each job gets cores // 2 threads."""
    sweep = tmp_path / "sweep"
    outcome = mtl_run(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.optimizer._target_=torch.optim.Adam,torch.optim.AdamW,torch.optim.NoSuchOptimizer",
        *TINY,
        *NO_SUMMARY,
        f"hydra.sweep.dir={sweep}",
        fast=False,
    )
    assert outcome.code == 1
    assert "torch.optim.NoSuchOptimizer" in outcome.stderr
    adam, adamw, failed = job_dirs(sweep)
    threads = max(1, cpu_count() // 2)
    for job in (adam, adamw):
        assert results(job)["status"] == "completed"
        assert math.isfinite(results(job)["best_value"])
        log = (job / "mtl_run.log").read_text()
        assert f"torch threads: {threads} (auto: {cpu_count()} cores / 2 parallel jobs)" in log
    assert results(failed)["status"] == "failed"
    assert "NoSuchOptimizer" in results(failed)["error"]
    log = (failed / "mtl_run.log").read_text()
    assert "run failed" in log and "Traceback" in log
    assert not (failed / "metrics.csv").exists()


def test_submitit_local_sweep_keeps_going_after_a_failure(mtl_run, tmp_path: Path) -> None:
    """The same under submitit_local: each job in a process of its own (slow: ~15-20 s)."""
    sweep = tmp_path / "sweep"
    outcome = mtl_run(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=3",
        "trainer.lr=0.001,-1",
        *TINY,
        *NO_SUMMARY,
        f"hydra.sweep.dir={sweep}",
        fast=False,
    )
    assert outcome.code == 1
    assert "trainer.lr=-1.0 is not allowed" in outcome.stderr
    completed, failed = job_dirs(sweep)
    assert results(completed)["status"] == "completed"
    assert (completed / "metrics.csv").is_file()
    assert results(failed)["status"] == "failed"
    assert "trainer.lr=-1.0 is not allowed" in results(failed)["error"]
    assert "run failed: trainer.lr=-1.0" in (failed / "mtl_run.log").read_text()
    assert (sweep / ".submitit").is_dir()


# ------------------------------------------------------------------------------ Optuna
# optuna 2.10's sqlite storage uses SQLAlchemy 1.4 APIs that 2.0 removed (hence sqlalchemy<2)
@pytest.mark.filterwarnings("ignore:.*SQLAlchemy 2.0:DeprecationWarning")
def test_optuna_study_optimises_the_monitored_value(mtl_run, tmp_path: Path) -> None:
    """3 trials of hparams_search=lr_dwa in a sqlite study; one trial fails (trainer.epochs=0)
    and the study goes on; optimization_results.yaml holds the best trial's best_value."""
    sweep = tmp_path / "sweep"
    storage = tmp_path / "study.db"
    outcome = mtl_run(
        "hparams_search=lr_dwa",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=1",
        f"hydra.sweeper.storage=sqlite:///{storage}",
        "trainer.epochs=choice(0,1)",
        *TINY[:1],
        *TINY[2:],
        *NO_SUMMARY,
        f"hydra.sweep.dir={sweep}",
        fast=False,
    )
    assert outcome.code == 0, outcome.stderr
    assert "alembic" not in outcome.stdout  # its INFO lines are silenced
    jobs = [results(job) for job in job_dirs(sweep)]
    assert len(jobs) == 3 and storage.is_file()
    statuses = [job["status"] for job in jobs]
    assert "failed" in statuses and "completed" in statuses, statuses
    assert "Failed experiment" in outcome.stdout
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    completed = [job for job in jobs if job["status"] == "completed"]
    assert best["best_value"] == min(job["best_value"] for job in completed)
    assert all(job["monitor_mode"] == "min" for job in completed)
    assert set(best["best_params"]) == {"trainer.lr", "weighting.temperature", "trainer.epochs"}


# ------------------------------------------------------------------------ missing plugins
@pytest.mark.parametrize(
    ("override", "plugin"),
    [
        ("hydra/launcher=joblib", "hydra-joblib-launcher"),
        ("hydra/launcher=submitit_slurm", "hydra-submitit-launcher"),
        ("hydra/launcher=slurm_gpu", "hydra-submitit-launcher"),
        ("hydra/sweeper=optuna", "hydra-optuna-sweeper"),
        ("hparams_search=lr_dwa", "hydra-optuna-sweeper"),
    ],
)
def test_a_missing_plugin_is_one_line(mtl_run, monkeypatch, override: str, plugin: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name.startswith("hydra_plugins."):
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    outcome = mtl_run("-m", override)
    assert outcome.code == 1
    assert outcome.stderr.splitlines() == [
        f"mtl-run: error: {override} needs the Hydra plugin {plugin}, which is not installed: "
        "pip install 'mtl-runner[sweep]'"
    ]
    assert outcome.run_dir is None


def test_no_plugin_check_for_the_basic_launcher(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: None)
    cli.check_plugins(["mtl-run", "hydra/launcher=basic", "sweep=dwa_temperatures", "a=b"])


# ------------------------------------------------------------------------------ --resume
def make_run_dir(path: Path, overrides: list[str]) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return path


def test_resume_uses_the_runs_overrides(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", ["weighting=dwa", "trainer.epochs=30"])
    argv = cli.resume_argv(["mtl-run", "--resume", str(run)])
    assert argv == [
        "mtl-run",
        "weighting=dwa",
        "trainer.epochs=30",
        f"hydra.run.dir={run}",
        f"trainer.resume={run}",
    ]


def test_resume_appends_extra_overrides_and_keeps_flags_first(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", ["weighting=dwa", "trainer.epochs=30"])
    argv = cli.resume_argv(
        ["mtl-run", "--resume", str(run), "trainer.epochs=50", "--cfg", "job", "-p", "trainer"]
    )
    assert argv == [
        "mtl-run",
        "--cfg",
        "job",
        "-p",
        "trainer",
        "weighting=dwa",
        f"hydra.run.dir={run}",
        f"trainer.resume={run}",
        "trainer.epochs=50",  # replaces the run's trainer.epochs=30
    ]


def test_resume_a_sweep_job_as_a_single_run_in_its_directory(tmp_path: Path) -> None:
    job = make_run_dir(
        tmp_path / "0_trainer.seed=1,weighting.temperature=4",
        ["sweep=dwa_temperatures", "weighting.temperature=4", "trainer.seed=1"],
    )
    argv = cli.resume_argv(["mtl-run", f"--resume={job}"])
    quoted = f"'{job}'"  # '=' and ',' would split the override
    assert argv == [
        "mtl-run",
        "sweep=dwa_temperatures",
        "weighting.temperature=4",
        "trainer.seed=1",
        f"hydra.run.dir={quoted}",
        f"trainer.resume={quoted}",
        "hydra.mode=RUN",
    ]
    # Hydra reads the quoted directory back as it is
    parsed = OverridesParser.create().parse_overrides(argv[4:6])
    assert {o.value() for o in parsed} == {str(job)}


def test_resume_without_a_run_directory_is_one_line(mtl_run, tmp_path: Path) -> None:
    outcome = mtl_run("--resume", str(tmp_path), fast=False)
    assert outcome.code == 1
    assert outcome.stderr.splitlines() == [
        f"mtl-run: error: --resume {tmp_path}: no run directory there (no .hydra/overrides.yaml)"
    ]


def test_resume_translation_reaches_hydra(tmp_path: Path, monkeypatch, capsys) -> None:
    run = make_run_dir(tmp_path / "run", ["weighting=dwa", "weighting.temperature=3"])
    argv = ["mtl-run", "--resume", str(run), "trainer.epochs=7", "--cfg", "job"]
    monkeypatch.setattr(sys, "argv", argv)
    cli.main()
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["weighting"]["temperature"] == 3.0 and cfg["trainer"]["epochs"] == 7
    assert cfg["trainer"]["resume"] == str(run)


def test_the_sweeper_value_of_single_task_baselines_is_their_mean() -> None:
    from mtl_runner.cli import sweeper_value

    assert sweeper_value({"best_value": 0.25}) == 0.25
    both_min = {"best_value": {"a": 1.0, "b": 2.0}, "monitor_mode": {"a": "min", "b": "min"}}
    assert sweeper_value(both_min) == 1.5
    mixed = {"best_value": {"a": 0.9, "b": 2.0}, "monitor_mode": {"a": "max", "b": "min"}}
    assert sweeper_value(mixed) is None
