"""``dataset=csv``: a table on disk, described entirely in YAML, as a :class:`MultiTaskData`.

Flow: read every cell as text (missing-value tokens become NaN) -> parse the feature columns and
each task's labels -> split the rows (stratified, grouped, k-fold; :mod:`.splits`) -> fit the
preprocessor on the training rows only (:mod:`.preprocessing`) -> tensors. A missing label keeps
its row: the target holds ``MISSING_CLASS`` (classification) or NaN (regression) there.

Class order: ``classes`` when given (index = label; the clinical order of an ordinal task);
otherwise the sorted distinct labels of the whole column, numerically when all are numbers.
The class set is part of the label definition, not a fitted statistic, so reading it from all
rows leaks nothing; it keeps the heads' width identical across folds and seeds.

Raw values are compared in a canonical text form, so the cell ``1.0`` matches the class ``1``
and a YAML key ``2`` matches the cell ``2``.

Paths: ``pkg://<package>/<resource>`` is a file shipped inside an installed package (found with
importlib.resources); any other path is absolute or relative to the current directory (the job
never changes it).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mtl_runner.data.base import MultiTaskData, Split, label_summary
from mtl_runner.data.preprocessing import Preprocessor
from mtl_runner.data.splits import group_codes, holdout_split, kfold_split, strata_matrix
from mtl_runner.errors import ConfigError
from mtl_runner.schema import TaskType
from mtl_runner.tasks import MISSING_CLASS, Task

log = logging.getLogger("mtl_runner")

PKG_SCHEME = "pkg://"
SPLIT_DEFAULTS = {"train": 0.7, "val": 0.15, "test": 0.15, "stratify": None, "group": None}
# YAML turns unquoted yes/no/on/off into booleans, which the schema then stores as "True"/"False"
_YAML_BOOL_HINT = " (YAML reads unquoted yes/no/on/off as booleans: quote them, e.g. 'yes')"


@dataclass(frozen=True)
class Labels:
    """One task's parsed targets over all rows (``MISSING_CLASS`` / NaN where missing)."""

    type: TaskType
    column: str
    values: np.ndarray
    classes: tuple[str, ...] | None = None


def make_csv_dataset(
    path: str,
    features: Mapping[str, Sequence[str]],
    tasks: Mapping[str, Mapping[str, Any]],
    split: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    missing_values: Sequence[str] = ("NA", "N/A", "NaN", "null"),
    sep: str = ",",
    folds: int | None = None,
    fold: int = 0,
    seed: int = 0,
) -> MultiTaskData:
    split = {**SPLIT_DEFAULTS, **(split or {})}
    numeric, categorical = _feature_columns(features)
    if not tasks:
        raise ConfigError("dataset.tasks is empty: name at least one task")
    frame, source = read_table(path, sep, missing_values)
    _check_columns(frame, path, numeric, categorical, tasks, split["group"])
    features_frame = _parse_features(frame, numeric, categorical)
    labels = {str(name): parse_labels(str(name), spec, frame) for name, spec in tasks.items()}
    parts = _split_rows(labels, frame, split, folds, fold, seed)
    specs = tuple(_task(name, tasks[name], labels[name], parts["train"]) for name in labels)
    options = {k: _plain(v) for k, v in (preprocessing or {}).items()}
    pre = Preprocessor.fit(features_frame.iloc[parts["train"]], numeric, categorical, **options)
    splits = {name: _tensors(pre, features_frame, labels, rows) for name, rows in parts.items()}
    info = {
        **label_summary(specs, splits),
        "source": {**source, "rows": len(frame), "columns": len(frame.columns)},
        "split": _split_info(split, folds, fold, seed, frame, parts),
        # 0-based data rows per split (file line = row + 2): which patients were held out
        "rows": {name: rows.tolist() for name, rows in parts.items()},
        "classes": {t.name: list(t.classes) for t in specs if t.classes},
        "class_weights": {t.name: _list(t.class_weights) for t in specs if t.is_classification},
        "preprocessing": {
            **pre.summary(),
            "unseen_categories": {
                name: pre.unseen(features_frame.iloc[rows]) for name, rows in parts.items()
            },
        },
    }
    _log_summary(info, specs)
    return MultiTaskData(
        specs, splits["train"], splits["val"], splits["test"], pre.feature_names, info
    )


# --- reading -------------------------------------------------------------------------------


def read_table(path: str, sep: str, missing_values: Sequence[str]) -> tuple[pd.DataFrame, dict]:
    """Every cell as stripped text, NaN where empty or a missing-value token (case-insensitive)."""
    data, where = _read_bytes(path)
    try:
        frame = pd.read_csv(
            io.BytesIO(data), sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"dataset.path={path!r} cannot be read as CSV: {reason}") from None
    if frame.empty:
        raise ConfigError(f"dataset.path={path!r} has a header but no data rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    tokens = {str(t).strip().casefold() for t in missing_values} | {""}
    frame = frame.apply(lambda column: _blank_to_nan(column, tokens))
    return frame, {"path": where, "sha256": hashlib.sha256(data).hexdigest()}


def _read_bytes(path: str) -> tuple[bytes, str]:
    if path.startswith(PKG_SCHEME):
        return _package_resource(path).read_bytes(), path
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"dataset.path={path!r} is not a file (looked for {file.absolute()}; a relative path "
            f"is relative to the current directory, or use pkg://<package>/<file>)"
        )
    return file.read_bytes(), str(file.absolute())


def _package_resource(path: str) -> Any:
    package, _, resource = path[len(PKG_SCHEME) :].partition("/")
    if not package or not resource:
        raise ConfigError(
            f"dataset.path={path!r} is not allowed: use pkg://<package>/<path inside the package>"
        )
    try:
        target = importlib.resources.files(package).joinpath(resource)
    except (ModuleNotFoundError, TypeError):
        raise ConfigError(
            f"dataset.path={path!r} needs the Python package '{package}', which is not "
            f"installed: pip install {package.replace('_', '-')}"
        ) from None
    if not target.is_file():
        raise ConfigError(f"dataset.path={path!r}: package '{package}' has no file '{resource}'")
    return target


def _blank_to_nan(column: pd.Series, tokens: set[str]) -> pd.Series:
    text = column.str.strip()
    return text.mask(text.str.casefold().isin(tokens))


# --- columns and features -------------------------------------------------------------------


def _feature_columns(features: Mapping[str, Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    numeric = tuple(str(c) for c in features.get("numeric") or ())
    categorical = tuple(str(c) for c in features.get("categorical") or ())
    if not numeric and not categorical:
        raise ConfigError(
            "dataset.features lists no column: name feature columns under "
            "dataset.features.numeric and/or dataset.features.categorical"
        )
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise ConfigError(
            f"dataset.features: column '{both[0]}' is listed as both numeric and categorical; "
            "list it once"
        )
    return numeric, categorical


def _check_columns(frame, path, numeric, categorical, tasks, group) -> None:
    wanted = [("dataset.features.numeric", c) for c in numeric]
    wanted += [("dataset.features.categorical", c) for c in categorical]
    wanted += [
        (f"dataset.tasks.{name}.column", _column(name, spec)) for name, spec in tasks.items()
    ]
    if group is not None:
        wanted.append(("dataset.split.group", str(group)))
    for key, column in wanted:
        if column not in frame.columns:
            raise ConfigError(
                f"{key}: column '{column}' is not in {path}; available columns: "
                + ", ".join(frame.columns)
            )
    for name, spec in tasks.items():
        if _column(name, spec) in (*numeric, *categorical):
            raise ConfigError(
                f"dataset.tasks.{name}: its label column '{_column(name, spec)}' is also listed "
                "as a feature, which would leak the label; remove it from dataset.features"
            )


def _column(name: str, spec: Mapping[str, Any]) -> str:
    return str(spec.get("column") or name)


def _parse_features(frame: pd.DataFrame, numeric, categorical) -> pd.DataFrame:
    parsed = {c: _numbers(frame[c], f"dataset.features.numeric: column '{c}'") for c in numeric}
    parsed.update({c: frame[c].map(_canonical, na_action="ignore") for c in categorical})
    return pd.DataFrame(parsed, index=frame.index)


def _numbers(column: pd.Series, what: str) -> pd.Series:
    """Floats with NaN where missing; text or an infinite value is a one-line error."""
    values = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & ~np.isfinite(values.to_numpy(dtype=float))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ConfigError(
            f"{what} must be numeric but holds {column.iloc[row]!r} at row {row + 1} (file line "
            f"{row + 2}){_more(int(bad.sum()))}; fix the value or add it to dataset.missing_values"
        )
    return values.astype(float)


# --- labels ---------------------------------------------------------------------------------


def parse_labels(name: str, spec: Mapping[str, Any], frame: pd.DataFrame) -> Labels:
    task_type = _task_type(name, spec.get("type"))
    column = _column(name, spec)
    if task_type is TaskType.regression:
        for key in ("classes", "label_map", "class_weights"):
            if spec.get(key):
                raise ConfigError(
                    f"dataset.tasks.{name}.{key} is only for classification tasks, and "
                    f"'{name}' is a regression task"
                )
        what = f"dataset.tasks.{name}: the regression target column '{column}'"
        return Labels(task_type, column, _numbers(frame[column], what).to_numpy(np.float32))
    classes, codes = _class_codes(name, task_type, spec, frame[column])
    return Labels(task_type, column, codes, classes)


def _task_type(name: str, value: Any) -> TaskType:
    try:
        return TaskType(value)
    except ValueError:
        allowed = ", ".join(t.value for t in TaskType)
        raise ConfigError(
            f"dataset.tasks.{name}.type={value!r} is not allowed: use one of {allowed}"
        ) from None


def _class_codes(name: str, task_type: TaskType, spec: Mapping[str, Any], raw: pd.Series):
    label_map = {_canonical(k): _canonical(v) for k, v in (spec.get("label_map") or {}).items()}
    mapped = raw.map(lambda v: label_map.get(_canonical(v), _canonical(v)), na_action="ignore")
    classes = _classes(name, task_type, spec, label_map, mapped)
    codes = mapped.map({c: i for i, c in enumerate(classes)}, na_action="ignore")
    unknown = mapped.notna() & codes.isna()
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        labels = ", ".join(repr(v) for v in raw[unknown].unique()[:5])
        hint = _YAML_BOOL_HINT if {"True", "False"} & set(classes) else ""
        raise ConfigError(
            f"dataset.tasks.{name}: label {raw.iloc[row]!r} (column '{raw.name}', row {row + 1};"
            f" {int(unknown.sum())} row(s) hold unknown labels: {labels}) is not one of the "
            f"allowed labels {list(classes)}; add it to dataset.tasks.{name}.classes or map it "
            f"with dataset.tasks.{name}.label_map{hint}"
        )
    return classes, codes.fillna(MISSING_CLASS).to_numpy(np.int64)


def _classes(name, task_type, spec, label_map, mapped: pd.Series) -> tuple[str, ...]:
    if spec.get("classes"):
        classes = tuple(_canonical(c) for c in spec["classes"])
        if len(set(classes)) < len(classes):
            raise ConfigError(f"dataset.tasks.{name}.classes={list(classes)} repeats a class")
        for raw, target in label_map.items():
            if target not in classes:
                raise ConfigError(
                    f"dataset.tasks.{name}.label_map maps {raw!r} to {target!r}, which is not "
                    f"one of dataset.tasks.{name}.classes={list(classes)}"
                )
    else:
        classes = tuple(sorted(mapped.dropna().unique(), key=_class_sort_key))
        log.info("task %s: classes from the data, sorted: %s", name, list(classes))
    _check_class_count(name, task_type, classes)
    return classes


def _check_class_count(name: str, task_type: TaskType, classes: tuple[str, ...]) -> None:
    if len(classes) < 2:
        raise ConfigError(
            f"dataset.tasks.{name} has {len(classes)} class(es) {list(classes)}: a "
            f"{task_type.value} task needs at least 2"
        )
    if task_type is TaskType.binary and len(classes) != 2:
        raise ConfigError(
            f"dataset.tasks.{name} is binary but has {len(classes)} classes {list(classes)}: "
            "use type multiclass (or ordinal), or merge classes with label_map"
        )


def _canonical(value: Any) -> str:
    """Text form used to compare raw cells, map keys and class names: ``1.0`` -> ``1``."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return str(int(number)) if number.is_integer() else repr(number)


def _class_sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


# --- tasks and class weights ----------------------------------------------------------------


def _task(name: str, spec: Mapping[str, Any], labels: Labels, train: np.ndarray) -> Task:
    labelled = labels.values != MISSING_CLASS if labels.classes else ~np.isnan(labels.values)
    if not labelled[train].any():
        raise ConfigError(
            f"dataset.tasks.{name}: no row of the training split has a label (column "
            f"'{labels.column}' has {int(labelled.sum())} labelled rows in all); a task needs "
            "training labels"
        )
    if labels.classes is None:
        return Task(name, labels.type)
    train_labels = labels.values[train][labelled[train]]
    weights = _class_weights(name, spec.get("class_weights"), train_labels, len(labels.classes))
    return Task(name, labels.type, len(labels.classes), labels.classes, weights)


def _class_weights(name: str, setting: Any, train_labels: np.ndarray, num_classes: int):
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(train_labels, minlength=num_classes)
        if (counts == 0).any():
            log.warning(
                "task %s: a class has no training row; its balanced weight uses a count of 1",
                name,
            )
        return tuple(float(w) for w in len(train_labels) / (num_classes * np.maximum(counts, 1)))
    if isinstance(setting, str) or not isinstance(setting, Sequence):
        raise ConfigError(
            f"dataset.tasks.{name}.class_weights={setting!r} is not allowed: use a list of "
            f"{num_classes} positive numbers or 'balanced'"
        )
    try:
        weights = tuple(float(w) for w in setting)
    except (TypeError, ValueError):
        weights = ()
    if len(weights) != num_classes or not all(w > 0 and math.isfinite(w) for w in weights):
        raise ConfigError(
            f"dataset.tasks.{name}.class_weights={list(setting)} is not allowed: use "
            f"{num_classes} positive numbers (one per class) or 'balanced'"
        )
    return weights


# --- splitting ------------------------------------------------------------------------------


def _split_rows(labels, frame, split, folds, fold, seed) -> dict[str, np.ndarray]:
    stratify = _stratify_tasks(split["stratify"], labels)
    strata = strata_matrix(
        len(frame), [labels[t].values for t in stratify], [len(labels[t].classes) for t in stratify]
    )
    column = split["group"]
    groups = group_codes(None if column is None else frame[column].to_numpy(object), len(frame))
    if folds is None:
        fractions = (float(split["train"]), float(split["val"]), float(split["test"]))
        _check_fractions(fractions)
        train, val, test = holdout_split(strata, groups, fractions, seed)
    else:
        _check_folds(folds, fold, float(split["test"]))
        train, val, test = kfold_split(strata, groups, float(split["test"]), folds, fold, seed)
    return {"train": train, "val": val, "test": test}


def _stratify_tasks(setting: Any, labels: Mapping[str, Labels]) -> list[str]:
    names = [] if setting is None else [setting] if isinstance(setting, str) else list(setting)
    classification = [n for n, lab in labels.items() if lab.classes]
    for name in names:
        if name not in classification:
            raise ConfigError(
                f"dataset.split.stratify={name!r} is not allowed: use a classification task "
                f"(one of {classification}) or null"
            )
    return [str(n) for n in names]


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            f"dataset.split={dict(zip(('train', 'val', 'test'), fractions))} is not allowed: "
            "the three fractions must be positive and sum to 1"
        )


def _check_folds(folds: int, fold: int, test: float) -> None:
    if folds < 2:
        raise ConfigError(
            f"dataset.folds={folds} is not allowed: use at least 2, or null for one split"
        )
    if not 0 <= fold < folds:
        raise ConfigError(f"dataset.fold={fold} is not allowed: use 0 <= fold < {folds}")
    if not 0 < test < 1:
        raise ConfigError(
            f"dataset.split.test={test} is not allowed: the held-out test fraction must be "
            "between 0 and 1"
        )


# --- tensors, info and log ------------------------------------------------------------------


def _tensors(pre: Preprocessor, features: pd.DataFrame, labels, rows: np.ndarray) -> Split:
    return Split(
        torch.from_numpy(pre.transform(features.iloc[rows])),
        {
            name: torch.from_numpy(np.ascontiguousarray(lab.values[rows]))
            for name, lab in labels.items()
        },
    )


def _split_info(split, folds, fold, seed, frame, parts) -> dict[str, object]:
    column = split["group"]
    info: dict[str, object] = {
        "stratify": split["stratify"],
        "group": column,
        "seed": seed,
        "folds": folds,
        "fold": fold if folds is not None else None,
        "fractions": {k: float(split[k]) for k in ("train", "val", "test")},
    }
    if column is not None:
        info["groups"] = {n: int(frame[column].iloc[r].nunique()) for n, r in parts.items()}
    return info


def _log_summary(info: dict, tasks: tuple[Task, ...]) -> None:
    """One line on the source and the split (run.py logs the per-task prevalence), plus a
    warning for each class or task that a split lacks."""
    split = info["split"]
    how = f"fold {split['fold']} of {split['folds']}" if split["folds"] else "holdout"
    if split["stratify"]:
        how += f", stratified on {split['stratify']}"
    if split["group"]:
        how += f", grouped by {split['group']} ({split['groups']} groups)"
    sizes = " / ".join(f"{name} {n}" for name, n in info["n"].items())
    source = info["source"]
    log.info(
        "dataset %s (%d rows, sha256 %s): %s rows, %s; %d features",
        source["path"],
        source["rows"],
        source["sha256"][:12],
        sizes,
        how,
        len(info["preprocessing"]["feature_names"]),
    )
    for task in tasks:
        _warn_absent_classes(info, task)


def _warn_absent_classes(info: dict, task: Task) -> None:
    for split_name in info["n"]:
        if info["labelled"][split_name][task.name] == 0:
            log.warning("task %s: the %s split has no labelled row", task.name, split_name)
        elif task.is_classification:
            absent = [c for c, p in info["prevalence"][split_name][task.name].items() if p == 0]
            if absent:
                log.warning(
                    "task %s: class(es) %s have no labelled row in the %s split (too rare for "
                    "every split); metrics that need every class are NaN there",
                    task.name,
                    absent,
                    split_name,
                )


def _more(count: int) -> str:
    return f" and {count - 1} more row(s)" if count > 1 else ""


def _list(values: tuple[float, ...] | None) -> list[float] | None:
    return None if values is None else list(values)


def _plain(value: Any) -> Any:
    """An enum from the typed schema as its value (``Scaling.robust`` -> ``"robust"``)."""
    return getattr(value, "value", value)
