"""The ``mtl-run`` console script.

Imports no torch: composing the config and ``--help`` stay fast; the job imports it.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mtl_runner.config_dir import config_dir
from mtl_runner.errors import UserError, report_and_exit
from mtl_runner.schema import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _job(cfg: DictConfig) -> float | None:
    from mtl_runner.run import run

    runtime = HydraConfig.get()
    multirun = runtime.mode == RunMode.MULTIRUN
    try:
        results = run(cfg, Path(runtime.runtime.output_dir), multirun=multirun)
    except UserError as error:
        if multirun:  # Hydra runs the other jobs, then reports the first failure
            raise
        report_and_exit(error)
    # the return value is what a Hydra sweeper (e.g. Optuna) optimises
    return results.get("best_value")


def main() -> None:
    _job()


if __name__ == "__main__":
    main()
