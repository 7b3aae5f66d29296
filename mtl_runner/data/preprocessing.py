"""A small feature preprocessor fitted on the training rows only.

Numeric columns: missing values are filled with the training median (or mean), then centred and
scaled with statistics of the observed training values (``standard``: mean and sd; ``robust``:
median and IQR; ``none``). A constant column keeps scale 1. With ``missing_indicators``, each
column that has a missing value in the training rows gets a 0/1 ``<column>_missing`` feature;
which columns get one is itself fitted, so train, val and test have the same width.

Categorical columns are one-hot encoded over the categories seen in the training rows, in sorted
order. A category met only in val/test, and a missing value, encode as all zeros in that column's
block (the indicator, if enabled, flags the missing ones); :meth:`Preprocessor.unseen` counts them.

Every fitted statistic is a plain attribute, so tests and ``results.json`` can inspect them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mtl_runner.errors import ConfigError


@dataclass(frozen=True)
class Preprocessor:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    impute: str
    scale: str
    fill: dict[str, float]
    center: dict[str, float]
    spread: dict[str, float]
    categories: dict[str, tuple[str, ...]]
    indicators: tuple[str, ...]

    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        numeric: tuple[str, ...],
        categorical: tuple[str, ...],
        impute: str = "median",
        scale: str = "standard",
        missing_indicators: bool = False,
    ) -> Preprocessor:
        """Learn every statistic from ``train`` (numeric columns float, categorical str/NaN)."""
        fill, center, spread = {}, {}, {}
        for column in numeric:
            values = train[column].to_numpy(dtype=float)
            observed = values[~np.isnan(values)]
            if observed.size == 0:
                raise ConfigError(
                    f"dataset.features.numeric: column '{column}' has no value in the training "
                    "split, so it cannot be imputed; drop it or fill it in"
                )
            fill[column] = float(np.median(observed) if impute == "median" else observed.mean())
            center[column], spread[column] = _location_scale(observed, scale)
        categories = {
            column: tuple(sorted(train[column].dropna().astype(str).unique()))
            for column in categorical
        }
        indicators = ()
        if missing_indicators:
            indicators = tuple(c for c in (*numeric, *categorical) if train[c].isna().any())
        return cls(
            numeric, categorical, impute, scale, fill, center, spread, categories, indicators
        )

    @property
    def feature_names(self) -> tuple[str, ...]:
        one_hot = (f"{c}={v}" for c in self.categorical for v in self.categories[c])
        return (*self.numeric, *(f"{c}_missing" for c in self.indicators), *one_hot)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Features [rows, len(feature_names)] float32, with the fitted statistics only."""
        blocks = [np.zeros((len(frame), 0))]
        for column in self.numeric:
            values = frame[column].to_numpy(dtype=float)
            values = np.where(np.isnan(values), self.fill[column], values)
            blocks.append(((values - self.center[column]) / self.spread[column])[:, None])
        blocks += [
            frame[column].isna().to_numpy(dtype=float)[:, None] for column in self.indicators
        ]
        for column in self.categorical:
            values = frame[column].astype(object).to_numpy()
            blocks.append(np.stack([values == v for v in self.categories[column]], axis=1))
        return np.concatenate(blocks, axis=1, dtype=np.float32)

    def unseen(self, frame: pd.DataFrame) -> dict[str, int]:
        """Per categorical column, rows whose (present) category was not in the training rows."""
        return {
            column: int((frame[column].notna() & ~frame[column].isin(known)).sum())
            for column, known in self.categories.items()
        }

    def summary(self) -> dict[str, object]:
        """The fitted statistics, JSON-serialisable (written to results.json via data.info)."""
        return {
            "impute": self.impute,
            "scale": self.scale,
            "fill": self.fill,
            "center": self.center,
            "scale_by": self.spread,
            "categories": {c: list(v) for c, v in self.categories.items()},
            "missing_indicators": list(self.indicators),
            "feature_names": list(self.feature_names),
        }


def _location_scale(observed: np.ndarray, scale: str) -> tuple[float, float]:
    if scale == "none":
        return 0.0, 1.0
    if scale == "robust":
        q25, median, q75 = np.percentile(observed, [25, 50, 75])
        center, spread = median, q75 - q25
    else:
        center, spread = observed.mean(), observed.std()
    # a constant training column would divide by zero; it carries no information either way
    return float(center), float(spread) if spread > 0 else 1.0
