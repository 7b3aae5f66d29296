"""The ``mtl-compare`` console script: ``mtl-compare PATH... [--baseline GROUP] [--metrics ...]``.

Bad input (a missing path, no run, an unknown group or metric) prints one line
``mtl-compare: error: ...`` and exits with code 2, argparse's convention for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mtl_runner.compare.runs import CompareError

DESCRIPTION = """\
Summarise finished mtl-run runs and sweeps: per group of runs (equal overrides once the seed,
the fold and hydra.* are left out), the best-epoch validation and the test metrics of every task
as mean ± std (ddof=1) over seeds × folds, Δm% against a baseline (positive = better) and the
mean rank. Writes summary.csv, summary.md and plots/*.png into --out, and prints summary.md."""

EPILOG = """\
baseline: the single-task runs (mode=single_task) when present, else the group whose composed
config runs equal weighting; --baseline GROUP chooses another.
examples:
  mtl-compare outputs/multiruns/2026-01-01_10-00-00_000000
  mtl-compare outputs/multiruns/A outputs/runs/B_single_task --metrics auroc,qwk --out report/"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtl-compare",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="run or sweep directories, searched recursively for runs",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where summary.csv, summary.md and plots/ go (default: the first PATH)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GROUP",
        help="the group Δm%% is measured against (a name from the Groups table)",
    )
    parser.add_argument(
        "--metrics",
        type=_names,
        metavar="M1,M2",
        help="the test metrics of Δm%% and MR (default: all but the loss)",
    )
    parser.add_argument(
        "--plot-metric",
        metavar="METRIC",
        help="the validation metric plotted against epoch, val/METRIC/<task> "
        "(default: the metric of trainer.monitor, e.g. loss)",
    )
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    return parser


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected metric names separated by commas")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # imported after parsing: --help stays fast (pandas, and hydra through the metric names)
    from mtl_runner.compare.report import compare

    try:
        report = compare(
            args.paths,
            out=args.out,
            baseline=args.baseline,
            metrics=args.metrics,
            plot_metric=args.plot_metric,
            plots=not args.no_plots,
        )
    except (CompareError, OSError) as error:
        sys.stderr.write(f"mtl-compare: error: {_one_line(error)}\n")
        raise SystemExit(2) from None
    for warning in report.warnings:
        sys.stderr.write(f"mtl-compare: warning: {warning}\n")
    sys.stdout.write(report.markdown)
    written = report.files[0].parent
    sys.stdout.write(f"\nwrote {len(report.files)} files to {written}\n")
    return 0


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error)
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
