"""Epoch throughput of the runner's equal weighting vs. a hand-written training loop.

Both paths train the reference model (HardParameterSharing: 10 features -> 64 -> 32 ReLU trunk,
linear heads of 5, 3 and 2 classes) on the same synthetic data (100,000 training rows by
default), with the same initial weights, Adam(lr=1e-3) and batch size 256.

* hand loop: per epoch one ``torch.randperm``, one gather of the training tensors, contiguous
  slices of ``batch_size``; loss = sum of the per-task cross-entropies; ``zero_grad``,
  ``backward``, ``step``. No validation. Only the training epochs are timed.
* runner: ``Trainer.fit()`` with ``Equal`` weighting, no checkpoints and no progress output,
  timed as a whole: the training epochs plus, per epoch, its validation pass and metrics.csv
  row, plus the final test pass (the user-facing number).

Both are warmed up with one epoch, then timed in interleaved repetitions (hand, runner, hand,
runner, ...) so machine noise hits both alike; the median of each is reported. The final line is
the throughput ratio runner / hand loop (= hand s/epoch / runner s/epoch) against the 0.9x
target. This is a benchmark, not a test: it always exits 0.

Run it with ``make bench`` or ``.venv/bin/python benchmarks/epoch_throughput.py`` (``--help``
lists the options: --rows, --batch-size, --epochs, --repeats, --device). The machines are
noisy: for a number to rely on, use --repeats 9 or more.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mtl_runner.data import MultiTaskData, Split
from mtl_runner.data.synthetic import make_synthetic
from mtl_runner.models.hps import HardParameterSharing
from mtl_runner.schema import Progress
from mtl_runner.training.trainer import Trainer, TrainerSettings, seed_everything
from mtl_runner.weighting.equal import Equal

SPLIT = {"train": 0.9, "val": 0.05, "test": 0.05}
TASKS = {
    "a": {"type": "classification", "num_classes": 5},
    "b": {"type": "classification", "num_classes": 3},
    "c": {"type": "classification", "num_classes": 2},
}
NUM_FEATURES = 10
HIDDEN_SIZES = (64, 32)
LR = 1e-3
SEED = 0
TARGET = 0.9
NOISY_SPREAD = 1.5  # max/min s/epoch across repeats above which the table warns


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="training rows")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed repetition")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--device", default="cpu", help="torch device for both paths")
    return parser.parse_args(argv)


def make_data(rows: int, device: torch.device) -> MultiTaskData:
    """Synthetic data whose train split has ``rows`` rows (val and test 5% each)."""
    data = make_synthetic(
        n=round(rows / SPLIT["train"]),
        num_features=NUM_FEATURES,
        tasks=TASKS,
        signal=3.0,
        noise=1.0,
        relatedness=0.5,
        nonlinearity=0.5,
        seed=SEED,
        split=SPLIT,
    )
    return data.to(device)


def make_model(data: MultiTaskData, device: torch.device) -> HardParameterSharing:
    """The reference model with the same initial weights on every call."""
    seed_everything(SEED, deterministic=False)
    model = HardParameterSharing(data.num_features, data.tasks, HIDDEN_SIZES, "relu", 0.0)
    return model.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_epoch(
    model: HardParameterSharing,
    optimizer: torch.optim.Optimizer,
    split: Split,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """One epoch of the plain loop: shuffle-gather once, then contiguous slices."""
    model.train()
    n = len(split)
    order = torch.randperm(n, generator=generator).to(split.features.device)
    features = split.features[order]
    targets = {name: target[order] for name, target in split.targets.items()}
    for start in range(0, n, batch_size):
        stop = start + batch_size
        outputs = model(features[start:stop])
        loss = sum(F.cross_entropy(outputs[name], t[start:stop]) for name, t in targets.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def time_hand(data: MultiTaskData, batch_size: int, epochs: int, device: torch.device) -> float:
    """Seconds for ``epochs`` epochs of the hand loop (set-up not timed)."""
    model = make_model(data, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(SEED)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(epochs):
        hand_epoch(model, optimizer, data.train, batch_size, generator)
    synchronize(device)
    return time.perf_counter() - started


def time_runner(data: MultiTaskData, batch_size: int, epochs: int, device: torch.device) -> float:
    """Seconds for ``Trainer.fit()`` over ``epochs`` epochs (construction not timed)."""
    settings = TrainerSettings(
        epochs=epochs,
        batch_size=batch_size,
        seed=SEED,
        checkpoint=False,
        progress=Progress.none,
    )
    with tempfile.TemporaryDirectory(prefix="mtl-bench-") as out_dir:
        trainer = Trainer(
            make_model(data, device),
            Equal(data.task_names),
            data,
            torch.optim.Adam,
            LR,
            settings,
            device,
            Path(out_dir),
        )
        synchronize(device)
        started = time.perf_counter()
        trainer.fit()
        synchronize(device)
        return time.perf_counter() - started


def measure(
    data: MultiTaskData, args: argparse.Namespace, device: torch.device
) -> tuple[list[float], list[float]]:
    """Warm up both paths once, then interleaved repetitions; seconds per epoch of each."""
    time_hand(data, args.batch_size, 1, device)
    time_runner(data, args.batch_size, 1, device)
    hand: list[float] = []
    runner: list[float] = []
    for _ in range(args.repeats):
        hand.append(time_hand(data, args.batch_size, args.epochs, device) / args.epochs)
        runner.append(time_runner(data, args.batch_size, args.epochs, device) / args.epochs)
    return hand, runner


def table_row(name: str, seconds_per_epoch: list[float], steps_per_epoch: int) -> str:
    median = statistics.median(seconds_per_epoch)
    spread = " ".join(f"{s:.3f}" for s in seconds_per_epoch)
    return (
        f"{name:<22}{1000 * median / steps_per_epoch:>9.3f}{1 / median:>10.3f}"
        f"{median:>10.3f}   [{spread}]"
    )


def report(
    data: MultiTaskData, args: argparse.Namespace, hand: list[float], runner: list[float]
) -> None:
    steps = math.ceil(len(data.train) / args.batch_size)
    print(f"{'path':<22}{'ms/step':>9}{'epochs/s':>10}{'s/epoch':>10}   [s/epoch per repeat]")
    print(table_row("hand loop (train only)", hand, steps))
    print(table_row("runner fit() (+val)", runner, steps))
    ratio = statistics.median(hand) / statistics.median(runner)
    verdict = "PASS" if ratio >= TARGET else "BELOW TARGET"
    print(f"ratio (runner / hand loop throughput): {ratio:.2f}x  target >= {TARGET}x  {verdict}")
    if any(max(times) > NOISY_SPREAD * min(times) for times in (hand, runner)):
        print(
            f"note: repeats of one path differ by more than {NOISY_SPREAD}x (a noisy machine); "
            "rerun, or raise --repeats"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    data = make_data(args.rows, device)
    n = data.info["n"]
    steps = math.ceil(len(data.train) / args.batch_size)
    print(
        f"torch {torch.__version__}, device {device}, torch.get_num_threads() = "
        f"{torch.get_num_threads()}"
    )
    print(
        f"rows train/val/test {n['train']}/{n['val']}/{n['test']}, batch {args.batch_size} "
        f"({steps} steps/epoch), {args.repeats} repeats x {args.epochs} epochs, medians"
    )
    hand, runner = measure(data, args, device)
    report(data, args, hand, runner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
