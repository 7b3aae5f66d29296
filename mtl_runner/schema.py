"""Typed schemas for the config groups, registered in Hydra's ConfigStore.

Hydra merges each group's YAML into these dataclasses, so a typo key (``trainer.epoch=3``) or a
wrong type (``trainer.epochs=abc``) fails at composition with Hydra's own message. The module
imports no torch: ``mtl-run --help`` composes the config and must stay fast.

Weighting methods are typed differently: their hyperparameters are the keyword arguments of the
method's ``__init__`` and are checked against its annotations before anything runs
(:func:`mtl_runner.weighting.build_weighting`), so adding a method never means editing this file.
Typo keys in ``weighting.*`` still fail at composition (Hydra's struct mode).
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class DeviceType(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    """Autocast dtype of the forward pass; ``bf16`` and ``fp16`` need CUDA."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Progress(str, Enum):
    """``auto``: a tqdm bar on a terminal in a single run, else one log line per epoch."""

    auto = "auto"
    bar = "bar"
    log = "log"
    none = "none"


class MonitorMode(str, Enum):
    min = "min"
    max = "max"


class TaskType(str, Enum):
    classification = "classification"
    regression = "regression"


class Activation(str, Enum):
    relu = "relu"
    gelu = "gelu"
    tanh = "tanh"
    silu = "silu"


@dataclass
class DeviceConf:
    type: DeviceType = DeviceType.auto
    index: int | None = None
    precision: Precision = Precision.fp32


def _adam() -> dict[str, Any]:
    return {"_target_": "torch.optim.Adam", "_partial_": True, "weight_decay": 0.0}


@dataclass
class TrainerConf:
    epochs: int = 30
    batch_size: int | None = 256
    lr: float = 1e-3
    optimizer: Any = field(default_factory=_adam)
    seed: int = 0
    deterministic: bool = True
    eval_batch_size: int = 8192
    monitor: str = "val/loss"
    monitor_mode: MonitorMode = MonitorMode.min
    checkpoint: bool = True
    progress: Progress = Progress.auto


@dataclass
class SplitConf:
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15


@dataclass
class SyntheticTaskConf:
    type: TaskType = TaskType.classification
    num_classes: int | None = 2


@dataclass
class SyntheticDatasetConf:
    _target_: str = "mtl_runner.data.synthetic.make_synthetic"
    n: int = 3000
    num_features: int = 10
    tasks: dict[str, SyntheticTaskConf] = field(default_factory=dict)
    signal: float = 3.0
    noise: float = 1.0
    relatedness: float = 0.5
    nonlinearity: float = 0.5
    seed: int = 0
    split: SplitConf = field(default_factory=SplitConf)


@dataclass
class HPSConf:
    _target_: str = "mtl_runner.models.hps.HardParameterSharing"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 32])
    activation: Activation = Activation.relu
    dropout: float = 0.0


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    weighting: Any = MISSING
    device: DeviceConf = field(default_factory=DeviceConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)


def register_schemas() -> None:
    """Store the schemas; group configs extend them via ``/schema/<group>/<name>@_here_``."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    store.store(group="schema/dataset", name="synthetic", node=SyntheticDatasetConf)
    store.store(group="schema/model", name="hps", node=HPSConf)
