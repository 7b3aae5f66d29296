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
from omegaconf import MISSING, OmegaConf


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
    """``auto``: the direction of the monitored quantity (max for AUROC, min for a loss)."""

    auto = "auto"
    min = "min"
    max = "max"


class RunMode(str, Enum):
    """``single_task``: one model per task, same architecture, budget and splits (the Δm%
    baseline); ``multi_task``: one model for all tasks."""

    multi_task = "multi_task"
    single_task = "single_task"


class TaskType(str, Enum):
    """What a task predicts. ``binary``, ``multiclass`` and ``ordinal`` heads output one logit
    per class (cross-entropy); ``ordinal`` adds the order-aware metrics (QWK, MAE in stages).
    ``classification`` is kept as an alias of ``multiclass`` for configs written before."""

    binary = "binary"
    multiclass = "multiclass"
    ordinal = "ordinal"
    regression = "regression"
    classification = "multiclass"  # alias (same member as multiclass)

    @classmethod
    def _missing_(cls, value: object) -> "TaskType | None":
        return cls.multiclass if value == "classification" else None


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
    # torch's intra-op threads; null = auto (torch's default in a single run, the cores divided
    # by the parallel jobs under hydra/launcher=joblib): mtl_runner.training.threads
    num_threads: int | None = None


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
    monitor_mode: MonitorMode = MonitorMode.auto
    patience: int | None = None
    min_delta: float = 0.0
    scheduler: Any = None
    resume: str | None = None
    steps_every: int | None = None
    checkpoint: bool = True
    progress: Progress = Progress.auto


@dataclass
class SplitConf:
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15


@dataclass
class SyntheticTaskConf:
    type: TaskType = TaskType.multiclass
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
class SyntheticCorrelatedTaskConf:
    """``correlation``: this task's cosine with the first task (null: the dataset's)."""

    type: TaskType = TaskType.regression
    num_classes: int | None = None
    correlation: float | None = None


@dataclass
class SyntheticCorrelatedDatasetConf:
    _target_: str = "mtl_runner.data.synthetic_correlated.make_synthetic_correlated"
    n: int = 6000
    num_features: int = 100
    tasks: dict[str, SyntheticCorrelatedTaskConf] = field(default_factory=dict)
    correlation: float = 0.5
    scale: float = 1.0
    num_sines: int = 10
    alphas: list[float] | None = None
    betas: list[float] | None = None
    noise: float = 0.01
    seed: int = 0
    split: SplitConf = field(default_factory=SplitConf)


class Imputation(str, Enum):
    """Fill value of a missing numeric feature, computed on the training rows."""

    median = "median"
    mean = "mean"


class Scaling(str, Enum):
    """``standard``: (x - mean) / sd; ``robust``: (x - median) / IQR; from the training rows."""

    standard = "standard"
    robust = "robust"
    none = "none"


@dataclass
class CsvFeaturesConf:
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)


@dataclass
class CsvPreprocessingConf:
    impute: Imputation = Imputation.median
    missing_indicators: bool = False
    scale: Scaling = Scaling.standard


@dataclass
class CsvTaskConf:
    """``column``: defaults to the task's name. ``label_map`` keys are raw values (any YAML
    scalar), its values class names. ``class_weights``: a list, one per class, or "balanced"."""

    type: TaskType = MISSING
    column: str | None = None
    classes: list[str] | None = None
    label_map: dict[Any, str] = field(default_factory=dict)
    class_weights: Any = None


@dataclass
class CsvSplitConf:
    """``stratify``: a task name or a list of them; ``group``: a column kept within one split."""

    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    stratify: Any = None
    group: str | None = None


@dataclass
class CsvDatasetConf:
    _target_: str = "mtl_runner.data.csv.make_csv_dataset"
    path: str = MISSING
    sep: str = ","
    missing_values: list[str] = field(default_factory=lambda: ["NA", "N/A", "NaN", "null"])
    features: CsvFeaturesConf = field(default_factory=CsvFeaturesConf)
    tasks: dict[str, CsvTaskConf] = field(default_factory=dict)
    preprocessing: CsvPreprocessingConf = field(default_factory=CsvPreprocessingConf)
    split: CsvSplitConf = field(default_factory=CsvSplitConf)
    folds: int | None = None
    fold: int = 0
    seed: int = 0


@dataclass
class HPSConf:
    _target_: str = "mtl_runner.models.hps.HardParameterSharing"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 32])
    activation: Activation = Activation.relu
    dropout: float = 0.0


@dataclass
class MMoEConf:
    _target_: str = "mtl_runner.models.mmoe.MMoE"
    num_experts: int = 8
    expert_sizes: list[int] = field(default_factory=lambda: [32])
    tower_sizes: list[int] = field(default_factory=lambda: [16])
    activation: Activation = Activation.relu
    dropout: float = 0.0


@dataclass
class CGCConf:
    _target_: str = "mtl_runner.models.cgc.CGC"
    shared_experts: int = 2
    task_experts: int = 1
    expert_sizes: list[int] = field(default_factory=lambda: [32])
    tower_sizes: list[int] = field(default_factory=lambda: [16])
    activation: Activation = Activation.relu
    dropout: float = 0.0


@dataclass
class PLEConf:
    _target_: str = "mtl_runner.models.ple.PLE"
    levels: int = 2
    shared_experts: int = 2
    task_experts: int = 1
    expert_sizes: list[int] = field(default_factory=lambda: [32])
    tower_sizes: list[int] = field(default_factory=lambda: [16])
    activation: Activation = Activation.relu
    dropout: float = 0.0


class StitchType(str, Enum):
    """Cross-stitch units: ``layer``, one K×K matrix per unit; ``channel``, one per hidden unit."""

    layer = "layer"
    channel = "channel"


@dataclass
class CrossStitchConf:
    _target_: str = "mtl_runner.models.cross_stitch.CrossStitch"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 32])
    activation: Activation = Activation.relu
    dropout: float = 0.0
    stitch: StitchType = StitchType.layer
    self_weight: float = 0.9


class DSelectKGateType(str, Enum):
    """DSelect-k gates: ``static``, one selection per task; ``per_example``, from the input."""

    static = "static"
    per_example = "per_example"


@dataclass
class DSelectKConf:
    _target_: str = "mtl_runner.models.dselect_k.DSelectK"
    num_experts: int = 8
    top_k: int = 2
    expert_sizes: list[int] = field(default_factory=lambda: [32])
    tower_sizes: list[int] = field(default_factory=lambda: [16])
    gamma: float = 1.0
    entropy_weight: float = 1e-6
    gate: DSelectKGateType = DSelectKGateType.static
    activation: Activation = Activation.relu
    dropout: float = 0.0


@dataclass
class ModeConf:
    type: RunMode = RunMode.multi_task


@dataclass
class Config:
    mode: ModeConf = field(default_factory=ModeConf)
    dataset: Any = MISSING
    model: Any = MISSING
    weighting: Any = MISSING
    device: DeviceConf = field(default_factory=DeviceConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)


def path_safe(text: object) -> str:
    """``${path_safe:...}``: a directory name from override text (``val/auroc`` must not
    become two nested directories)."""
    return str(text).replace("/", "_")


def register_schemas() -> None:
    """Store the schemas; group configs extend them via ``/schema/<group>/<name>@_here_``.
    Also registers the resolver the configs' directory names use."""
    if not OmegaConf.has_resolver("path_safe"):
        OmegaConf.register_new_resolver("path_safe", path_safe)
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    store.store(group="schema/dataset", name="synthetic", node=SyntheticDatasetConf)
    store.store(
        group="schema/dataset", name="synthetic_correlated", node=SyntheticCorrelatedDatasetConf
    )
    store.store(group="schema/dataset", name="csv", node=CsvDatasetConf)
    store.store(group="schema/model", name="hps", node=HPSConf)
    store.store(group="schema/model", name="mmoe", node=MMoEConf)
    store.store(group="schema/model", name="cgc", node=CGCConf)
    store.store(group="schema/model", name="ple", node=PLEConf)
    store.store(group="schema/model", name="cross_stitch", node=CrossStitchConf)
    store.store(group="schema/model", name="dselect_k", node=DSelectKConf)
