"""The console script, installed, from another directory, finds its configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
        check=False,
    )


def test_cli_import_does_not_import_torch(tmp_path: Path) -> None:
    code = "import sys, mtl_runner.cli; print('torch' in sys.modules)"
    result = run([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_help_lists_the_config_groups(tmp_path: Path) -> None:
    result = run([str(BIN / "mtl-run"), "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mtl-run: train one network" in result.stdout
    (weighting_line,) = [
        line for line in result.stdout.splitlines() if line.startswith("weighting: ")
    ]
    assert {"dwa", "equal", "fixed", "inverse_loss"} <= set(weighting_line[11:].split(", "))
    assert "device: auto, cpu, cuda" in result.stdout


def test_installed_script_finds_its_configs_from_another_directory(tmp_path: Path) -> None:
    result = run([str(BIN / "mtl-run"), "--info", "searchpath"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"file://{REPO / 'conf'}" in result.stdout


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and installed, alone, into a fresh directory."""
    work = tmp_path_factory.mktemp("wheel")
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(work),
            str(REPO),
        ],
        work,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(work.glob("mtl_runner-*.whl"))
    site = work / "site"
    installed = run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        work,
    )
    assert installed.returncode == 0, installed.stderr
    return site


def test_wheel_ships_the_configs(wheel_site: Path, tmp_path: Path) -> None:
    packaged = wheel_site / "mtl_runner" / "conf"
    assert (packaged / "config.yaml").is_file()
    assert {p.stem for p in (packaged / "weighting").glob("*.yaml")} >= {"equal", "dwa"}
    result = run(
        [str(wheel_site / "bin" / "mtl-run"), "--info", "searchpath"],
        tmp_path,
        PYTHONPATH=str(wheel_site),
    )
    assert result.returncode == 0, result.stderr
    assert f"file://{packaged}" in result.stdout
    assert str(REPO / "conf") not in result.stdout


def test_wheel_trains_from_another_directory(wheel_site: Path, tmp_path: Path) -> None:
    result = run(
        [str(wheel_site / "bin" / "mtl-run"), "weighting=dwa", "trainer.epochs=1", "dataset.n=300"],
        tmp_path,
        PYTHONPATH=str(wheel_site),
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert run_dir.name.endswith("_dwa")
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "results.json").is_file()
