"""MMoE, CGC and PLE: shapes, gates, the MultiTaskModel contract, parameter splits, configs."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mtl_runner.errors import ConfigError
from mtl_runner.models._experts import MixtureOfExperts
from mtl_runner.models.cgc import CGC
from mtl_runner.models.mmoe import MMoE
from mtl_runner.models.ple import PLE
from mtl_runner.schema import TaskType
from mtl_runner.tasks import Task
from mtl_runner.weighting.taps import TaskTaps

TASKS = [
    Task("a", TaskType.multiclass, 5),
    Task("b", TaskType.multiclass, 3),
    Task("c", TaskType.binary, 2),
]
NAMES = [task.name for task in TASKS]
IN = 10

BUILDERS: dict[str, Callable[..., MixtureOfExperts]] = {
    "mmoe": lambda **kw: MMoE(IN, TASKS, **{"num_experts": 4, **kw}),
    "cgc": lambda **kw: CGC(IN, TASKS, **{"task_experts": 2, **kw}),
    "ple": lambda **kw: PLE(IN, TASKS, **{"levels": 3, "task_experts": 2, **kw}),
    "ple1": lambda **kw: PLE(IN, TASKS, **{"levels": 1, **kw}),
}
MODELS = list(BUILDERS)
# tiny runs: two steps an epoch, one thread (the machine's cores are shared)
SMALL = ["dataset.n=300", "trainer.batch_size=128", "trainer.checkpoint=false"]
SMALL += ["device=cpu", "device.num_threads=1"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, seed: int = 0, **kwargs) -> MixtureOfExperts:
    torch.manual_seed(seed)
    return BUILDERS[name](**kwargs).eval()


def inputs(rows: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randn(rows, IN, generator=torch.Generator().manual_seed(seed))


def targets(rows: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return {t.name: torch.randint(t.output_size, (rows,), generator=generator) for t in TASKS}


def gate_weights(model: MixtureOfExperts, task: str, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, PLE):
        return model.gate_weights(task, model.encode(x), x)
    return model.gate_weights(task, x)


@pytest.mark.parametrize("name", MODELS)
def test_output_shapes(name: str) -> None:
    model = build(name)
    out = model(inputs(7))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"a": (7, 5), "b": (7, 3), "c": (7, 2)}
    assert model.feature_gradients is True


@pytest.mark.parametrize("cls", [MMoE, CGC, PLE])
def test_one_task_builds(cls) -> None:  # mode=single_task builds one model per task
    model = cls(IN, TASKS[:1])
    assert model(inputs(3))["a"].shape == (3, 5)


@pytest.mark.parametrize("name", MODELS)
def test_gates_are_softmax_rows_that_depend_on_the_input(name: str) -> None:
    model = build(name)
    x = inputs(5)
    experts = {"mmoe": 4, "cgc": 2 + 2, "ple": 2 + 2, "ple1": 2 + 1}[name]
    for task in NAMES:
        weights = gate_weights(model, task, x)
        assert weights.shape == (5, experts)
        assert (weights > 0).all()
        torch.testing.assert_close(weights.sum(1), torch.ones(5))
        assert not torch.allclose(weights[0], weights[1], atol=1e-4)  # two inputs, two mixtures


def test_mmoe_with_one_expert_is_a_shared_bottom_mlp() -> None:
    model = build("mmoe", num_experts=1, expert_sizes=[6, 4], tower_sizes=[3])
    x = inputs(5)
    torch.testing.assert_close(model.gate_weights("a", x), torch.ones(5, 1))
    expert = [m for m in model.experts.experts[0] if isinstance(m, torch.nn.Linear)]
    bottom = torch.relu(F.linear(torch.relu(F.linear(x, *_wb(expert[0]))), *_wb(expert[1])))
    out = model(x)
    for task in NAMES:
        hidden, head = model.towers[task][0], model.towers[task][2]
        expected = F.linear(torch.relu(F.linear(bottom, *_wb(hidden))), *_wb(head))
        torch.testing.assert_close(out[task], expected)


def _wb(linear: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    return linear.weight, linear.bias


def test_mmoe_mixes_the_experts_with_the_gate_weights() -> None:
    model = build("mmoe", tower_sizes=[])
    x = inputs(5)
    experts = torch.stack([expert(x) for expert in model.experts.experts], dim=1)  # [B, E, d]
    for task in NAMES:
        g = model.gate_weights(task, x)
        manual = sum(g[:, e : e + 1] * experts[:, e] for e in range(4))
        torch.testing.assert_close(model(x)[task], model.towers[task](manual))


@pytest.mark.parametrize("name", MODELS)
def test_decode_of_encode_and_task_taps_give_forward(name: str) -> None:
    model = build(name)
    x = inputs()
    expected = model(x)
    z = model.encode(x)
    for task, value in model.decode(z, x).items():
        torch.testing.assert_close(value, expected[task])
    taps = TaskTaps(z, NAMES)  # what the trainer does for gradient-based methods
    for task in NAMES:
        torch.testing.assert_close(model.decode_task(task, taps[task], x), expected[task])


@pytest.mark.parametrize("name", MODELS)
def test_shared_and_task_parameters_cover_every_parameter_once(name: str) -> None:
    model = build(name)
    groups = [list(model.shared_parameters())] + [list(model.task_parameters(t)) for t in NAMES]
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert sum(p.numel() for group in groups for p in group) == model.num_parameters()


@pytest.mark.parametrize("name", MODELS)
def test_a_task_output_ignores_the_other_tasks_parameters(name: str) -> None:
    model = build(name)
    x = inputs()
    before = model(x)
    with torch.no_grad():
        for p in model.task_parameters("b"):
            p.add_(torch.randn_like(p))
    after = model(x)
    torch.testing.assert_close(after["a"], before["a"], rtol=0, atol=0)
    torch.testing.assert_close(after["c"], before["c"], rtol=0, atol=0)
    assert not torch.allclose(after["b"], before["b"])


@pytest.mark.parametrize("name", MODELS)
def test_parameter_jacobian_through_z_is_the_direct_one(name: str) -> None:
    model = build(name)
    x, y = inputs(), targets()
    shared = list(model.shared_parameters())
    for task in NAMES:
        loss = F.cross_entropy(model(x)[task], y[task])
        direct = torch.autograd.grad(loss, shared, allow_unused=True)
        z = model.encode(x)
        copy = z.detach().requires_grad_()
        head_loss = F.cross_entropy(model.decode_task(task, copy, x), y[task])
        # decode_task on a detached z reaches no shared parameter
        assert all(
            g is None
            for g in torch.autograd.grad(head_loss, shared, allow_unused=True, retain_graph=True)
        )
        (dz,) = torch.autograd.grad(head_loss, copy)
        via_z = torch.autograd.grad(z, shared, grad_outputs=dz, allow_unused=True)
        for d, v, p in zip(direct, via_z, shared):
            d = torch.zeros_like(p) if d is None else d
            v = torch.zeros_like(p) if v is None else v
            torch.testing.assert_close(v, d)


@pytest.mark.parametrize("name", ["cgc", "ple1"])
def test_cgc_task_output_ignores_the_other_tasks_experts(name: str) -> None:
    model = build(name)
    level = model.levels[0]
    x = inputs()
    before = model(x)
    with torch.no_grad():
        for p in level.task_experts["b"].parameters():
            p.add_(torch.randn_like(p))
    after = model(x)
    torch.testing.assert_close(after["a"], before["a"], rtol=0, atol=0)
    torch.testing.assert_close(after["c"], before["c"], rtol=0, atol=0)
    assert not torch.allclose(after["b"], before["b"])


def test_ple_reaches_the_other_tasks_lower_experts_through_the_shared_gate() -> None:
    model = build("ple")
    x = inputs()
    before = model(x)
    with torch.no_grad():
        for p in model.levels[0].task_experts["b"].parameters():
            p.add_(torch.randn_like(p))
        changed = model(x)
        for p in model.levels[-1].task_experts["b"].parameters():  # the last level: b only
            p.add_(torch.randn_like(p))
        last = model(x)
    assert not torch.allclose(changed["a"], before["a"])
    torch.testing.assert_close(last["a"], changed["a"], rtol=0, atol=0)


def test_ple_with_one_level_is_cgc() -> None:
    cgc = build("cgc", seed=0, task_experts=1)
    ple = build("ple1", seed=5)
    assert isinstance(cgc, PLE) and len(cgc.levels) == 1
    ple.load_state_dict(cgc.state_dict())  # the same modules under the same names
    x = inputs()
    torch.testing.assert_close(ple.encode(x), cgc.encode(x), rtol=0, atol=0)
    for task, value in ple(x).items():
        torch.testing.assert_close(value, cgc(x)[task], rtol=0, atol=0)


def test_ple_z_holds_the_last_gates_inputs() -> None:
    model = build("ple", levels=2, shared_experts=2, task_experts=1, expert_sizes=[8])
    assert model.encode(inputs(4)).shape == (4, (2 + 3 * 1) * 8 + 3 * 8)
    assert build("ple1", expert_sizes=[8]).encode(inputs(4)).shape == (4, (2 + 3) * 8)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("mmoe", {"num_experts": 0}, "model.num_experts=0 is not allowed: give one or more"),
        ("mmoe", {"expert_sizes": []}, "model.expert_sizes=[] is not allowed: give one or more"),
        ("mmoe", {"expert_sizes": [32, 0]}, "model.expert_sizes=[32, 0] is not allowed"),
        ("mmoe", {"tower_sizes": [-1]}, "model.tower_sizes=[-1] is not allowed: give zero or"),
        ("mmoe", {"dropout": 1.0}, "model.dropout=1.0 is not allowed: use 0 <= dropout < 1"),
        ("cgc", {"shared_experts": 0}, "model.shared_experts=0 is not allowed: give one or"),
        ("cgc", {"task_experts": -1}, "model.task_experts=-1 is not allowed: give 0 or more"),
        ("ple", {"levels": 0}, "model.levels=0 is not allowed: give one or more extraction"),
    ],
)
def test_bad_sizes_give_one_line_config_errors(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(name, **kwargs)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=mmoe", "model.num_experts=0"], "model.num_experts=0 is not allowed"),
        (["model=cgc", "model.expert_sizes=[]"], "model.expert_sizes=[] is not allowed"),
        (["model=ple", "model.levels=0"], "model.levels=0 is not allowed"),
    ],
)
def test_bad_sizes_are_one_line_errors_of_mtl_run(mtl_run, overrides, message) -> None:
    from test_errors import assert_one_line

    assert_one_line(mtl_run(*overrides, *SMALL), message)


def test_no_task_experts_makes_cgc_an_mmoe_of_the_shared_experts() -> None:
    model = build("cgc", shared_experts=3, task_experts=0)
    assert gate_weights(model, "a", inputs()).shape == (7, 3)
    assert model(inputs())["a"].shape == (7, 5)


DEFAULTS = {
    "mmoe": {"num_experts": 8},
    "cgc": {"shared_experts": 2, "task_experts": 1},
    "ple": {"levels": 2, "shared_experts": 2, "task_experts": 1},
}
# at the defaults, on the default dataset (10 features, tasks of 5/3/2 classes): README table
PARAMETERS = {"mmoe": 4810, "cgc": 3604, "ple": 9222}


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_config_composes_with_the_defaults(compose_config, name: str) -> None:
    from mtl_runner.run import instantiate

    cfg = compose_config(f"model={name}")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    assert model_cfg == {
        "_target_": f"mtl_runner.models.{name}.{type(build(name.replace('ple', 'ple1'))).__name__}",
        **DEFAULTS[name],
        "expert_sizes": [32],
        "tower_sizes": [16],
        "activation": "relu",
        "dropout": 0.0,
    }
    model = instantiate(cfg.model, in_features=cfg.dataset.num_features, tasks=TASKS)
    assert model.num_parameters() == PARAMETERS[name]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.num_expert=3", "Key 'num_expert' not in 'MMoEConf'"),
        ("model.num_experts=many", "could not be converted to Integer"),
        ("model.expert_sizes=[32,wide]", "could not be converted to Integer"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(compose_config, override, message) -> None:
    with pytest.raises(Exception) as raised:
        compose_config("model=mmoe", override)
    chain = [raised.value, raised.value.__cause__]
    assert any(message in str(error) for error in chain), [str(e) for e in chain]


@pytest.mark.parametrize("name", list(DEFAULTS))
@pytest.mark.parametrize(
    "weighting",
    [
        ["weighting=equal"],
        ["weighting=mgda", "weighting.grad_source=params"],
        ["weighting=mgda", "weighting.grad_source=features"],
    ],
    ids=["equal", "mgda-params", "mgda-features"],
)
def test_trains_two_epochs_with_finite_losses(mtl_run, name: str, weighting: list[str]) -> None:
    outcome = mtl_run(
        f"model={name}",
        *weighting,
        "trainer.epochs=2",
        "dataset.n=300",
        "device=cpu",
        "trainer.checkpoint=false",
    )
    assert outcome.code == 0, outcome.stderr
    metrics = outcome.metrics
    assert len(metrics) == 2
    losses = metrics[[f"train/loss/{t}" for t in NAMES] + [f"val/loss/{t}" for t in NAMES]]
    assert all(math.isfinite(v) for v in losses.to_numpy().ravel())
