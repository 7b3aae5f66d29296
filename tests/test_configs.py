"""Every option of every config group composes; schemas reject typos and wrong types."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from omegaconf import OmegaConf

from mtl_runner.config_dir import config_dir
from mtl_runner.schema import register_schemas
from mtl_runner.weighting import build_weighting, options_schema

register_schemas()

GROUPS = ("mode", "dataset", "model", "weighting", "device", "trainer")
# presets of several jobs (`# @package _global_`): they set values of the groups above and hydra.*
PRESET_GROUPS = ("sweep", "hparams_search")
# values a composed option still needs from the user (`???` in its YAML)
REQUIRED_VALUES = {
    ("weighting", "fixed"): ["weighting.weights=[1,0.5,0.5]"],
    ("dataset", "csv"): ["dataset.path=cohort.csv"],
}


def group_options() -> list[tuple[str, str]]:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = set(loader.list_groups("")) - {"hydra", "schema"}
        assert groups == {*GROUPS, *PRESET_GROUPS}, f"config groups changed: {sorted(groups)}"
        return [
            (group, option)
            for group in (*GROUPS, *PRESET_GROUPS)
            for option in loader.get_group_options(group, results_filter=ObjectType.CONFIG)
        ]


OPTIONS = group_options()


def test_every_group_has_the_options_the_readme_documents() -> None:
    assert {o for g, o in OPTIONS if g == "weighting"} >= {"equal", "fixed", "inverse_loss", "dwa"}
    assert {o for g, o in OPTIONS if g == "device"} == {"auto", "cpu", "cuda"}
    assert ("dataset", "synthetic") in OPTIONS and ("model", "hps") in OPTIONS


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(compose_config, group: str, option: str) -> None:
    cfg = compose_config(f"{group}={option}", *REQUIRED_VALUES.get((group, option), []))
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert set(container) == set(GROUPS)
    if group == "weighting":  # hyperparameters also pass the method's own schema
        method = build_weighting(cfg.weighting, ["a", "b", "c"])
        assert method.task_names == ("a", "b", "c")


def test_primary_defaults(compose_config) -> None:
    cfg = compose_config()
    assert cfg.weighting._target_ == "mtl_runner.weighting.equal.Equal"
    assert cfg.model.hidden_sizes == [64, 32]
    assert {name: task.num_classes for name, task in cfg.dataset.tasks.items()} == {
        "a": 5,
        "b": 3,
        "c": 2,
    }
    assert cfg.dataset.num_features == 10
    assert cfg.device.type == "auto"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochs=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
        ("trainer.epoch=3", "Key 'epoch' not in 'TrainerConf'"),
        ("trainer.lr=fast", "could not be converted to Float"),
        ("device.type=tpu", "Invalid value 'tpu'"),
        ("device.precision=fp8", "Invalid value 'fp8'"),
        ("trainer.progress=loud", "Invalid value 'loud'"),
        ("model.hidden_sizes=[64,wide]", "could not be converted to Integer"),
        ("model.activation=swish", "Invalid value 'swish'"),
        ("dataset.signal=strong", "could not be converted to Float"),
        ("dataset.n_rows=5", "Key 'n_rows' not in 'SyntheticDatasetConf'"),
        ("weighting.temprature=3", "Key 'temprature' is not in struct"),
    ],
)
def test_composition_rejects_typos_and_wrong_types(compose_config, override, message) -> None:
    with pytest.raises(Exception) as raised:
        compose_config("weighting=dwa", override)
    chain = [raised.value, raised.value.__cause__]
    assert any(message in str(error) for error in chain), [str(e) for e in chain]


def test_multirun_sweep_values_are_typed(compose_config) -> None:
    """A sweep value like ``temperature=1`` reaches the method as float, not int."""
    cfg = compose_config("weighting=dwa", "weighting.temperature=1")
    method = build_weighting(cfg.weighting, ["a", "b"])
    assert isinstance(method.temperature, float) and method.temperature == 1.0


def test_weighting_schema_comes_from_the_method_signature() -> None:
    from mtl_runner.weighting.dwa import DWA
    from mtl_runner.weighting.fixed import Fixed

    dwa = OmegaConf.structured(options_schema(DWA))
    assert OmegaConf.to_container(dwa) == {"temperature": 2.0}
    fixed = OmegaConf.structured(options_schema(Fixed))
    assert OmegaConf.is_missing(fixed, "weights")


def test_schema_groups_do_not_leak_into_options() -> None:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        assert "synthetic" not in loader.get_group_options("weighting")
        assert "csv" not in loader.get_group_options("weighting")
        assert {"synthetic", "synthetic_correlated"} <= set(loader.get_group_options("dataset"))


def test_hydra_settings(compose_config) -> None:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    assert cfg.hydra.job.chdir is False
    dirs = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert dirs["run"]["dir"].startswith("outputs/runs/${now:%Y-%m-%d_%H-%M-%S_%f}_")
    assert dirs["sweep"]["dir"].startswith("outputs/multiruns/")
    assert dirs["sweep"]["subdir"] == "${hydra.job.num}_${path_safe:${hydra.job.override_dirname}}"
    assert cfg.hydra.job.config.override_dirname.exclude_keys == ["trainer.seed"]
