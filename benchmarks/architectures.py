"""Step cost of each architecture under equal weighting, relative to hard parameter sharing.

On the reference data shape (10 features, tasks 5/3/2 classes, in-memory batches of 256), it
times whole optimizer steps (forward, the loss, one backward, Adam) of every ``conf/model/*.yaml``
at its defaults, each paired back to back with an HPS step in every repeat (the slow drifts of a
shared machine cancel), and prints the median ratio with the parameter counts. A benchmark, not
a test: it always exits 0. ``.venv/bin/python benchmarks/architectures.py [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mtl_runner.config_dir import config_dir
from mtl_runner.run import instantiate
from mtl_runner.schema import TaskType, register_schemas
from mtl_runner.tasks import Task

BATCH = 256
FEATURES = 10
TASKS = [
    Task("a", TaskType.multiclass, 5),
    Task("b", TaskType.multiclass, 3),
    Task("c", TaskType.binary, 2),
]


def model_names() -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / "model").glob("*.yaml"))


def build(name: str) -> torch.nn.Module:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={name}"])
    return instantiate(cfg.model, in_features=FEATURES, tasks=TASKS)


def stepper(model: torch.nn.Module) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    features = torch.randn(BATCH, FEATURES)
    targets = {t.name: torch.randint(t.output_size, (BATCH,)) for t in TASKS}

    def step() -> None:
        outputs = model(features)
        losses = torch.stack([t.loss(outputs[t.name], targets[t.name]) for t in TASKS])
        optimizer.zero_grad(set_to_none=True)
        total = losses.sum()
        regularization = model.regularization()
        if regularization is not None:
            total = total + regularization
        total.backward()
        optimizer.step()

    return step


def seconds_per_call(function: Callable[[], None], calls: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    register_schemas()
    torch.manual_seed(0)
    reference = stepper(build("hps"))
    hps_time = statistics.median(seconds_per_call(reference, args.calls) for _ in range(3))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}")
    print(f"hps step {hps_time * 1e3:.3f} ms; ratios are medians of {args.repeats} paired repeats")
    print(f"  {'model':<14}{'parameters':>11}{'step / hps':>12}")
    for name in model_names():
        model = build(name)
        count = sum(p.numel() for p in model.parameters())
        step = stepper(model)
        ratios = []
        for _ in range(args.repeats):
            ours = seconds_per_call(step, args.calls)
            ratios.append(ours / seconds_per_call(reference, args.calls))
        print(f"  {name:<14}{count:>11,}{statistics.median(ratios):>11.2f}x")


if __name__ == "__main__":
    main()
