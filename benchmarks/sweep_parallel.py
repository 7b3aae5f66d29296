"""A parallel sweep (hydra/launcher=joblib) against the same jobs one after another.

Both run ``mtl-run -m`` as a subprocess on the same 4 jobs (weighting=equal,dwa x
trainer.seed=0,1 on the synthetic default with --rows rows and --epochs epochs, no checkpoints,
no progress output, no sweep summary):

* sequential: Hydra's basic launcher, the jobs one after another in one process; torch keeps its
  default thread count (every core): what ``mtl-run -m`` does without a launcher.
* sequential, 1 thread: the same with ``device.num_threads=1``. On a small model torch's
  intra-op threads gain little, and on a loaded machine they can cost a lot; against this arm
  the speed-up is the parallelism alone.
* parallel: ``hydra/launcher=joblib hydra.launcher.n_jobs=<--n-jobs>``; each job gets
  ``cores // n_jobs`` torch threads (device.num_threads=null, mtl_runner.training.threads).

Both are timed as a whole (start-up, worker start, every job), repeated --repeats times
interleaved (sequential, parallel, ...) so machine noise hits both alike; the medians are
compared. The last line is the speed-up sequential / parallel against the 1.7x target (on 2
cores). The jobs must be long enough that process and worker start-up (importing torch: about
3 s per process) do not dominate. This is a benchmark, not a test: it always exits 0.

Run it with ``.venv/bin/python benchmarks/sweep_parallel.py`` (``--help`` for the options). The
machines are shared and noisy: for a number to rely on, run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.7
JOBS = ["weighting=equal,dwa", "trainer.seed=0,1"]  # 4 jobs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="dataset.n (all splits)")
    # 15 epochs of 100k rows: ~13 s per job, long enough that starting the workers (~8 s,
    # importing torch) does not decide the ratio (6 epochs measured 1.56x, 15 epochs 1.82x)
    parser.add_argument("--epochs", type=int, default=15, help="trainer.epochs per job")
    parser.add_argument("--n-jobs", type=int, default=2, help="hydra.launcher.n_jobs")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions")
    return parser.parse_args(argv)


def summary_callbacks() -> list[str]:
    """Overrides that drop the sweep-summary callback (plots cost the same in both arms)."""
    from hydra import compose, initialize_config_dir

    import mtl_runner.cli  # noqa: F401  (schemas and resolvers)
    from mtl_runner.config_dir import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    return [f"~hydra.callbacks.{name}" for name in cfg.hydra.callbacks if "summary" in name]


ARMS = {
    "sequential": [],
    "sequential, 1 thread": ["device.num_threads=1"],
    "parallel": ["hydra/launcher=joblib"],
}


def sweep(args: argparse.Namespace, arm: str, root: Path, extra: list[str]) -> float:
    """Wall time of one ``mtl-run -m`` over the 4 jobs; checks every job completed."""
    sweep_dir = root / f"{len(list(root.iterdir()))}"
    launcher = list(ARMS[arm])
    if arm == "parallel":
        launcher.append(f"hydra.launcher.n_jobs={args.n_jobs}")
    command = [
        sys.executable,
        "-m",
        "mtl_runner",
        "-m",
        *JOBS,
        *launcher,
        f"dataset.n={args.rows}",
        f"trainer.epochs={args.epochs}",
        "trainer.checkpoint=false",
        "trainer.progress=none",
        "device=cpu",
        *extra,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"sweep failed ({done.returncode}):\n{done.stderr[-2000:]}")
    results = [json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")]
    assert len(results) == 4 and all(r["status"] == "completed" for r in results), results
    job_time = sum(r["wall_time_s"] for r in results)
    print(
        f"  {arm:<21} {elapsed:7.1f} s wall   (jobs' own time summed: {job_time:6.1f} s)",
        flush=True,
    )
    return elapsed


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    print(
        f"4 jobs ({' x '.join(JOBS)}), dataset.n={args.rows}, trainer.epochs={args.epochs}, "
        f"{cores} cores, joblib n_jobs={args.n_jobs}, {args.repeats} repeat(s)"
    )
    extra = summary_callbacks()
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="sweep_parallel_") as tmp:
        for _ in range(args.repeats):
            for arm in ARMS:
                times[arm].append(sweep(args, arm, Path(tmp), extra))
    median = {arm: statistics.median(t) for arm, t in times.items()}
    one_thread = median["sequential, 1 thread"] / median["parallel"]
    print(
        f"speed-up over one after another with 1 thread each (parallelism alone): {one_thread:.2f}x"
    )
    ratio = median["sequential"] / median["parallel"]
    verdict = "meets" if ratio >= TARGET else "below"
    print(
        f"speed-up of hydra/launcher=joblib over one after another: {ratio:.2f}x "
        f"({verdict} the {TARGET}x target; median sequential {median['sequential']:.1f} s, "
        f"parallel {median['parallel']:.1f} s)"
    )


if __name__ == "__main__":
    main()
