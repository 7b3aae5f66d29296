"""The ``mtl-run`` console script.

Imports no torch: composing the config and ``--help`` stay fast; the job imports it.

Before Hydra parses the command line, :func:`main` does two things of its own:

* ``--resume DIR [key=value ...]`` becomes the run's original overrides plus
  ``hydra.run.dir=DIR trainer.resume=DIR`` and the extra overrides (:func:`resume_argv`);
* a launcher or sweeper preset whose Hydra plugin is not installed stops with one line naming
  the extra to install (:func:`check_plugins`), instead of Hydra's "Could not find" listing.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mtl_runner.config_dir import config_dir
from mtl_runner.errors import ConfigError, UserError, report_and_exit
from mtl_runner.schema import register_schemas

register_schemas()

log = logging.getLogger("mtl_runner")
# optuna 2.10 imports alembic, whose plugin registry logs ~7 "setup plugin ..." INFO lines that
# Hydra's root logger prints at the start of every Optuna sweep; its warnings still show
logging.getLogger("alembic").setLevel(logging.WARNING)

EXTRA = "pip install 'mtl-runner[sweep]'"

#: the Hydra plugin behind each launcher / sweeper choice: (module, distribution)
_JOBLIB = ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")
_SUBMITIT = ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
_OPTUNA = ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper")
PLUGINS: dict[str, dict[str, tuple[str, str]]] = {
    "hydra/launcher": {
        "joblib": _JOBLIB,
        "submitit_local": _SUBMITIT,
        "submitit_slurm": _SUBMITIT,
        "slurm_gpu": _SUBMITIT,  # conf/hydra/launcher/slurm_gpu.yaml
    },
    "hydra/sweeper": {"optuna": _OPTUNA},
    "hparams_search": {"*": _OPTUNA},  # every conf/hparams_search preset uses Optuna
}


def _monitor_direction(monitor: object, mode: object) -> str:
    """Optuna's direction for a monitored value: ``${monitor_direction:monitor,monitor_mode}``.

    ``monitor_mode=auto`` takes the metric's own direction (val/loss: minimize, val/auroc:
    maximize), as the trainer does when it picks the best epoch.
    """
    from mtl_runner.metrics import HIGHER_IS_BETTER

    mode = str(getattr(mode, "value", mode))
    if mode in ("min", "max"):
        return "maximize" if mode == "max" else "minimize"
    parts = str(monitor).split("/")
    higher = HIGHER_IS_BETTER.get(parts[1], False) if len(parts) > 1 else False
    return "maximize" if higher else "minimize"


if not OmegaConf.has_resolver("monitor_direction"):
    OmegaConf.register_new_resolver("monitor_direction", _monitor_direction)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _job(cfg: DictConfig) -> float | None:
    from mtl_runner.run import run
    from mtl_runner.training.threads import apply_num_threads

    runtime = HydraConfig.get()
    multirun = runtime.mode == RunMode.MULTIRUN
    try:
        apply_num_threads(cfg.device.num_threads, runtime.launcher)
        results = run(cfg, Path(runtime.runtime.output_dir), multirun=multirun)
    except UserError as error:
        if multirun:  # Hydra runs the other jobs, then reports the first failure
            raise
        report_and_exit(error)
    if multirun:
        _check_direction(runtime.sweeper, results)
    # the return value is what a Hydra sweeper (e.g. Optuna) optimises
    return sweeper_value(results)


def sweeper_value(results: dict) -> float | None:
    """The monitored validation value; for single-task baselines (one per task) their mean
    when all are optimised the same way, else None (nothing one number could stand for)."""
    value = results.get("best_value")
    if not isinstance(value, dict):
        return value
    modes = set(results.get("monitor_mode", {}).values())
    if len(modes) != 1 or any(v is None for v in value.values()):
        return None
    return sum(value.values()) / len(value)


def _check_direction(sweeper: DictConfig, results: dict) -> None:
    """Warn when an Optuna study optimises the monitored value the wrong way round."""
    direction = sweeper.get("direction")
    mode = results.get("monitor_mode")
    if not isinstance(direction, str) or mode not in ("min", "max"):
        return
    wanted = "maximize" if mode == "max" else "minimize"
    if direction.rsplit(".", 1)[-1] != wanted:
        log.warning(
            "hydra.sweeper.direction=%s but %s is better when %s: the study optimises the "
            "wrong way (leave direction to the preset, or set hydra.sweeper.direction=%s)",
            direction,
            results.get("monitor"),
            "larger" if mode == "max" else "smaller",
            wanted,
        )


# ------------------------------------------------------------------------------ --resume DIR
def _quote(value: str) -> str:
    """``value`` as one override value: quoted when Hydra's grammar would split or parse it
    (a sweep job's directory name holds ``=`` and ``,``)."""
    if re.fullmatch(r"[\w./\-:+~@]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key(override: str) -> str:
    """The key an override sets: ``trainer.epochs`` for ``trainer.epochs=50``/``+…``/``++…``."""
    return override.split("=", 1)[0].lstrip("+~")


#: Hydra's flags that take a value (``--cfg job``); ``--info`` takes one of _INFO or none
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
_VALUE_FLAGS |= {"--config-dir", "-cd", "--experimental-rerun"}
_INFO = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags (with their values) and the overrides: argparse wants the flags first."""
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("-"):
            overrides.append(token)
            continue
        flags.append(token)
        has_value = token in _VALUE_FLAGS or (
            token in ("--info", "-i") and i < len(args) and args[i] in _INFO
        )
        if has_value and i < len(args):
            flags.append(args[i])
            i += 1
    return flags, overrides


def resume_argv(argv: list[str]) -> list[str]:
    """Translate ``mtl-run [flags] --resume DIR [overrides]`` into a plain Hydra command line.

    The run's own overrides (DIR/.hydra/overrides.yaml) come first, then
    ``hydra.run.dir=DIR trainer.resume=DIR``, then the overrides given after DIR (which replace
    an original override of the same key, e.g. ``trainer.epochs=50`` to extend a run). A sweep
    job resumes as a single run in its own directory (``hydra.mode=RUN`` when the original
    overrides chose a sweep or Optuna preset).
    """
    if not any(a == "--resume" or a.startswith("--resume=") for a in argv[1:]):
        return argv
    rest: list[str] = []
    directory: str | None = None
    args = iter(argv[1:])
    for arg in args:
        if arg == "--resume":
            directory = next(args, None)
            if directory is None or directory.startswith("-"):
                raise ConfigError("--resume needs a run directory: mtl-run --resume DIR")
        elif arg.startswith("--resume="):
            directory = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    assert directory is not None
    overrides_file = Path(directory) / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise ConfigError(
            f"--resume {directory}: no run directory there (no .hydra/overrides.yaml)"
        )
    original = [str(o) for o in OmegaConf.to_container(OmegaConf.load(overrides_file)) or []]
    flags, extra = _split_flags(rest)
    replaced = {_key(o) for o in extra} | {"trainer.resume", "hydra.run.dir", "hydra.mode"}
    kept = [o for o in original if _key(o) not in replaced]
    translated = [
        *kept,
        f"hydra.run.dir={_quote(directory)}",
        f"trainer.resume={_quote(directory)}",
    ]
    if any(_key(o) in ("sweep", "hparams_search") for o in kept):
        translated.append("hydra.mode=RUN")
    return [argv[0], *flags, *translated, *extra]


# ------------------------------------------------------------------------ missing plugins
def check_plugins(argv: list[str]) -> None:
    """Stop with one line when a chosen launcher or sweeper needs a plugin that is missing."""
    for arg in argv[1:]:
        if "=" not in arg or arg.startswith("-"):
            continue
        group, choice = arg.split("=", 1)
        group = group.lstrip("+~").removeprefix("/")
        options = PLUGINS.get(group)
        if not options:
            continue
        plugin = options.get(choice) or options.get("*")
        if plugin is None:
            continue
        module, distribution = plugin
        if not _installed(module):
            raise ConfigError(
                f"{group}={choice} needs the Hydra plugin {distribution}, which is not "
                f"installed: {EXTRA}"
            )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # no hydra_plugins package at all
        return False


def main() -> None:
    try:
        sys.argv = resume_argv(sys.argv)
        check_plugins(sys.argv)
    except UserError as error:
        report_and_exit(error)
    from mtl_runner.compare.callback import write_pending_summaries

    try:
        _job()
    finally:  # a sweep whose job failed gets its summary too (see SweepSummary)
        write_pending_summaries()


if __name__ == "__main__":
    main()
