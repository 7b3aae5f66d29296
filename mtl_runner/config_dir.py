"""Where the Hydra configs live, installed or not (DESIGN.md §1).

A relative ``config_path`` would be resolved against a package named ``conf`` once installed, so
``@hydra.main`` gets an absolute path instead: the copy shipped inside the wheel
(``mtl_runner/conf``, force-included at build time) when it exists, else the repository's
top-level ``conf/`` (editable install or a bare checkout on PYTHONPATH).
"""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> str:
    """Absolute path of the directory holding ``config.yaml`` and the config groups."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"mtl-runner's configs are missing: neither {_PACKAGE_DIR / 'conf'} nor "
        f"{_PACKAGE_DIR.parent / 'conf'} holds config.yaml; reinstall the package"
    )
