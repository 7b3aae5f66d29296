"""Every architecture × every weighting method × every grad source: 2 epochs, finite losses,
or the one-line error that says why the pair is impossible. New configs join by themselves."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_weighting_properties import METHODS, REQUIRED, WEIGHTING_DIR, sources

from mtl_runner import run as run_module
from mtl_runner.config_dir import config_dir
from mtl_runner.data.synthetic import make_synthetic
from mtl_runner.errors import ConfigError
from mtl_runner.run import _check_grad_source
from mtl_runner.schema import Progress, register_schemas
from mtl_runner.training.trainer import Trainer, TrainerSettings, seed_everything
from mtl_runner.weighting import build_weighting

MODELS = sorted(p.stem for p in (Path(config_dir()) / "model").glob("*.yaml"))
DATA = make_synthetic(
    n=300,
    num_features=10,
    tasks={"a": {"type": "multiclass", "num_classes": 5}, "b": {"type": "multiclass",
           "num_classes": 3}, "c": {"type": "binary", "num_classes": 2}},
    signal=3.0, noise=1.0, relatedness=0.5, nonlinearity=0.5, seed=0,
    split={"train": 0.6, "val": 0.2, "test": 0.2},
)  # fmt: skip
CASES = [(m, w, s) for m in MODELS for w in METHODS for s in sources(w)]


@functools.cache
def model_config(name: str):
    """``cfg.model`` as mtl-run composes it (the YAML merged into its typed schema)."""
    register_schemas()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=[f"model={name}"]).model


def build_model(name: str):
    return run_module.instantiate(
        model_config(name), in_features=DATA.num_features, tasks=DATA.tasks
    )


@pytest.mark.parametrize(("model", "method", "source"), CASES, ids=["-".join(c) for c in CASES])
def test_pair_trains_or_is_refused(tmp_path: Path, model: str, method: str, source: str) -> None:
    seed_everything(0, deterministic=True)
    network = build_model(model)
    options = {} if source == "none" else {"grad_source": source}
    cfg = OmegaConf.merge(
        OmegaConf.load(WEIGHTING_DIR / f"{method}.yaml"),
        REQUIRED.get(method, lambda k: {})(3),
        options,
    )
    weighting = build_weighting(cfg, DATA.task_names)
    if source == "features" and not type(network).feature_gradients:
        with pytest.raises(ConfigError, match="grad_source=features is not supported by model"):
            _check_grad_source(OmegaConf.create({}), network, weighting)
        return
    settings = TrainerSettings(
        epochs=2, batch_size=64, seed=0, progress=Progress.none, checkpoint=False
    )
    trainer = Trainer(
        network, weighting, DATA, torch.optim.Adam, 1e-3, settings, torch.device("cpu"), tmp_path
    )
    result = trainer.fit()
    assert result.epochs_completed == 2
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    losses = metrics.filter(regex="^(train|val)/loss/").to_numpy()
    assert losses.shape == (2, 6) and all(math.isfinite(v) for v in losses.ravel())
    assert result.test and all(math.isfinite(v) for k, v in result.test.items() if "/loss/" in k)
