"""dataset=csv and dataset=penguins: reading, label maps, missing labels, splits, preprocessing
fitted on training rows only, and one-line errors for every bad file or config."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from mtl_runner.data.csv import make_csv_dataset
from mtl_runner.errors import ConfigError
from mtl_runner.schema import CsvDatasetConf
from mtl_runner.tasks import MISSING_CLASS

DATA = Path(__file__).parent / "data"
MESSY_CSV = DATA / "messy_cohort.csv"
SPLITS = ("train", "val", "test")


def build(**config):
    """Merge ``config`` into the typed schema, as Hydra does, and build the dataset."""
    merged = OmegaConf.merge(OmegaConf.structured(CsvDatasetConf), config)
    kwargs = OmegaConf.to_container(merged, resolve=True)
    kwargs.pop("_target_")
    return make_csv_dataset(**kwargs)


def messy_config(**changes) -> dict:
    config = OmegaConf.load(DATA / "dataset" / "messy_cohort.yaml")
    config.pop("defaults")
    config.path = str(MESSY_CSV)
    return OmegaConf.to_container(OmegaConf.merge(config, changes))


def messy(**changes):
    return build(**messy_config(**changes))


def raw_messy() -> pd.DataFrame:
    return pd.read_csv(MESSY_CSV, dtype=str, keep_default_na=False)


def write(tmp_path: Path, text: str, name: str = "table.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def all_targets(data, task: str) -> np.ndarray:
    """One task's targets in file row order, from the three splits."""
    out = None
    for name in SPLITS:
        values = getattr(data, name).targets[task].numpy()
        if out is None:
            out = np.empty(sum(len(data.info["rows"][s]) for s in SPLITS), dtype=values.dtype)
        out[data.info["rows"][name]] = values
    return out


TINY = "x,y\n" + "".join(f"{i},{'a' if i < 10 else 'b' if i < 15 else ''}\n" for i in range(20))


# --- preprocessing fitted on training rows only ----------------------------------------------


def test_imputation_scaling_and_encoding_are_fitted_on_training_rows_only(tmp_path) -> None:
    base = messy()
    raw = raw_messy()
    held_out = base.info["rows"]["val"] + base.info["rows"]["test"]
    changed = raw.copy()
    for column in ("age", "bmi", "alt", "ast", "ggt", "platelets", "triglycerides", "hba1c"):
        changed.loc[held_out, column] = "1000000"
    changed.loc[held_out, "sex"] = "Z"  # a category training never saw
    changed.loc[held_out, "centre"] = "Q"
    path = write(tmp_path, changed.to_csv(index=False))
    after = messy(path=path)

    assert after.info["rows"] == base.info["rows"]  # labels unchanged, so the split is too
    fitted = ("fill", "center", "scale_by", "categories", "missing_indicators", "feature_names")
    for key in fitted:
        assert after.info["preprocessing"][key] == base.info["preprocessing"][key], key
    assert torch.equal(after.train.features, base.train.features)
    assert not torch.equal(after.test.features, base.test.features)
    # unseen categories: all-zero one-hot blocks, and counted
    names = after.feature_names
    one_hot = [i for i, n in enumerate(names) if n.startswith(("sex=", "centre="))]
    assert after.test.features[:, one_hot].abs().sum() == 0
    assert after.info["preprocessing"]["unseen_categories"]["test"] == {
        "sex": len(after.test),
        "centre": len(after.test),
    }


def test_fitted_statistics_are_those_of_the_training_rows() -> None:
    data = messy()  # robust scaling: (x - median) / IQR of the observed training values
    raw = raw_messy()
    train = raw.iloc[data.info["rows"]["train"]]
    alt = pd.to_numeric(train["alt"], errors="coerce").dropna()
    pre = data.info["preprocessing"]
    assert pre["fill"]["alt"] == pytest.approx(alt.median())
    assert pre["scale_by"]["alt"] == pytest.approx(alt.quantile(0.75) - alt.quantile(0.25))
    assert pre["categories"]["sex"] == sorted(set(train["sex"]) - {""})
    column = data.feature_names.index("alt")
    missing = train["alt"].str.strip().str.casefold().isin(["", "na", "n/a", "unknown"])
    assert data.train.features[np.array(missing), column].abs().max() == 0  # median -> 0
    indicator = data.feature_names.index("alt_missing")
    assert data.train.features[:, indicator].numpy().tolist() == missing.astype(float).tolist()
    assert not torch.isnan(data.train.features).any()


def test_standard_scaling_gives_zero_mean_unit_sd_on_complete_training_columns() -> None:
    data = messy(preprocessing={"scale": "standard", "missing_indicators": False})
    column = data.feature_names.index("age")  # age has no missing value
    train = data.train.features[:, column].double()
    assert train.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert train.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    assert "age_missing" not in data.feature_names


# --- labels -----------------------------------------------------------------------------------


def test_label_map_collapses_sub_stages_and_keeps_the_order() -> None:
    data = messy()
    fibrosis = data.tasks[data.task_names.index("fibrosis")]
    assert fibrosis.classes == ("F0", "F1", "F2", "F3", "F4")
    raw = raw_messy()["fibrosis"].str.strip()
    targets = all_targets(data, "fibrosis")
    expected = {"F0": 0, "F1a": 1, "F1b": 1, "F1c": 1, "F2": 2, "F3": 3, "F4": 4}
    for value, code in expected.items():
        assert (targets[(raw == value).to_numpy()] == code).all(), value
    assert (raw.isin(["F1a", "F1b", "F1c"])).sum() > 0


def test_missing_labels_are_marked_and_the_rows_kept() -> None:
    data = messy()
    raw = raw_messy()
    assert sum(len(getattr(data, s)) for s in SPLITS) == len(raw)
    for task in ("fibrosis", "ballooning", "mash"):
        missing = raw[task].str.strip().isin(["", "NA"]).to_numpy()
        assert missing.any()
        targets = all_targets(data, task)
        assert (targets[missing] == MISSING_CLASS).all()
        assert (targets[~missing] >= 0).all()


def test_numbers_written_as_floats_match_integer_class_names() -> None:
    data = messy()  # ballooning is written "0", "1.0", "2"; classes are [0, 1, 2]
    raw = raw_messy()["ballooning"]
    targets = all_targets(data, "ballooning")
    assert (targets[(raw == "1.0").to_numpy()] == 1).all()
    assert (targets[(raw == "2").to_numpy()] == 2).all()


def test_regression_target_missing_is_nan(tmp_path) -> None:
    path = write(tmp_path, "x,nas\n1,3\n2,\n3,NA\n4,5.5\n5,1\n6,2\n7,0\n8,4\n9,2\n10,3\n")
    data = build(path=path, features={"numeric": ["x"]}, tasks={"nas": {"type": "regression"}})
    targets = all_targets(data, "nas")
    assert targets.dtype == np.float32
    assert np.isnan(targets[[1, 2]]).all() and not np.isnan(np.delete(targets, [1, 2])).any()
    assert targets[3] == pytest.approx(5.5)


def test_classes_without_a_list_are_the_sorted_labels_of_the_whole_column(tmp_path) -> None:
    rows = "".join(f"{i},{v}\n" for i, v in enumerate(["10", "2", "1", "2.0", "10", "1"] * 3))
    data = build(
        path=write(tmp_path, "x,y\n" + rows),
        features={"numeric": ["x"]},
        tasks={"y": {"type": "ordinal"}},
    )
    assert data.tasks[0].classes == ("1", "2", "10")  # numerically, "2.0" is "2"


def test_balanced_class_weights_come_from_training_rows() -> None:
    data = messy()
    fibrosis = data.tasks[data.task_names.index("fibrosis")]
    y = data.train.targets["fibrosis"]
    y = y[y != MISSING_CLASS]
    counts = torch.bincount(y, minlength=5).double()
    expected = len(y) / (5 * counts)
    assert fibrosis.class_weights == pytest.approx(expected.tolist())
    assert data.tasks[data.task_names.index("mash")].class_weights is None


def test_explicit_class_weights_are_passed_on() -> None:
    data = messy(tasks={"mash": {"class_weights": [1.0, 2.5]}})
    assert data.tasks[data.task_names.index("mash")].class_weights == (1.0, 2.5)


# --- splits -----------------------------------------------------------------------------------


def _groups_per_split(data) -> list[set]:
    patients = raw_messy()["patient_id"]
    return [set(patients.iloc[data.info["rows"][s]]) for s in SPLITS]


def test_group_splits_never_share_a_group() -> None:
    for seed in range(3):
        train, val, test = _groups_per_split(messy(seed=seed))
        assert not (train & val) and not (train & test) and not (val & test)
        assert train and val and test


def test_kfold_partitions_the_non_test_rows_and_keeps_the_test_split() -> None:
    folds = [messy(folds=4, fold=i) for i in range(4)]
    test = folds[0].info["rows"]["test"]
    vals = []
    for data in folds:
        rows = data.info["rows"]
        assert rows["test"] == test
        assert torch.equal(data.test.targets["fibrosis"], folds[0].test.targets["fibrosis"])
        assert not set(rows["train"]) & set(rows["val"])
        assert set(rows["train"]) | set(rows["val"]) | set(test) == set(range(140))
        train_groups, val_groups, test_groups = _groups_per_split(data)
        assert not (train_groups & val_groups) and not (val_groups & test_groups)
        vals.append(set(rows["val"]))
    assert set().union(*vals) == set(range(140)) - set(test)
    assert sum(len(v) for v in vals) == 140 - len(test)  # disjoint


def test_kfold_without_groups(tmp_path) -> None:
    data = [
        build(
            path=write(tmp_path, TINY),
            features={"numeric": ["x"]},
            tasks={"y": {"type": "binary"}},
            split={"test": 0.2, "stratify": "y"},
            folds=4,
            fold=i,
        )
        for i in range(4)
    ]
    assert all(d.info["rows"]["test"] == data[0].info["rows"]["test"] for d in data)
    assert sorted(r for d in data for r in d.info["rows"]["val"]) == sorted(
        set(range(20)) - set(data[0].info["rows"]["test"])
    )


def test_stratification_keeps_prevalence_close() -> None:
    data = build(path="pkg://palmerpenguins/data/penguins.csv", **_penguins_tail())
    overall = {"Adelie": 152 / 344, "Chinstrap": 68 / 344, "Gentoo": 124 / 344}
    for split in SPLITS:
        prevalence = data.info["prevalence"][split]["species"]
        for name, expected in overall.items():
            assert prevalence[name] == pytest.approx(expected, abs=0.02), (split, name)


def test_split_fractions_are_respected() -> None:
    data = build(path="pkg://palmerpenguins/data/penguins.csv", **_penguins_tail())
    assert [len(data.train), len(data.val), len(data.test)] == pytest.approx(
        [0.7 * 344, 0.15 * 344, 0.15 * 344], abs=1.5
    )


def test_split_is_deterministic_with_the_seed() -> None:
    first, again, other = messy(seed=3), messy(seed=3), messy(seed=4)
    assert first.info["rows"] == again.info["rows"]
    assert torch.equal(first.train.features, again.train.features)
    assert first.info["rows"] != other.info["rows"]


def test_rare_class_does_not_break_stratification(tmp_path, caplog) -> None:
    text = "x,y\n" + "".join(
        f"{i},{'a' if i < 15 else 'b' if i < 19 else 'c'}\n" for i in range(20)
    )
    with caplog.at_level(logging.WARNING, logger="mtl_runner"):
        data = build(
            path=write(tmp_path, text),
            features={"numeric": ["x"]},
            tasks={"y": {"type": "multiclass"}},
            split={"stratify": "y"},
        )
    assert sum(len(getattr(data, s)) for s in SPLITS) == 20
    assert "class(es) ['c'] have no labelled row" in caplog.text


def test_prevalence_summary_on_a_tiny_table(tmp_path) -> None:
    # 10 x "a", 5 x "b", 5 missing; stratified 60/20/20 -> a 6/2/2, b 3/1/1, missing 3/1/1
    data = build(
        path=write(tmp_path, TINY),
        features={"numeric": ["x"]},
        tasks={"y": {"type": "binary"}},
        split={"train": 0.6, "val": 0.2, "test": 0.2, "stratify": "y"},
    )
    info = data.info
    assert info["n"] == {"train": 12, "val": 4, "test": 4}
    assert info["labelled"] == {"train": {"y": 9}, "val": {"y": 3}, "test": {"y": 3}}
    assert info["prevalence"]["train"]["y"] == pytest.approx({"a": 6 / 9, "b": 3 / 9})
    assert info["prevalence"]["test"]["y"] == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert info["classes"] == {"y": ["a", "b"]}


# --- penguins ---------------------------------------------------------------------------------


def _penguins_tail() -> dict:
    config = OmegaConf.load(Path(__file__).parents[1] / "conf" / "dataset" / "penguins.yaml")
    config.pop("defaults")
    config.pop("path")
    return OmegaConf.to_container(config)


def test_penguins_composes_and_loads(compose_config) -> None:
    from mtl_runner.run import instantiate

    cfg = compose_config("dataset=penguins")
    data = instantiate(cfg.dataset)
    assert data.task_names == ("species", "island", "sex")
    assert [t.num_classes for t in data.tasks] == [3, 3, 2]
    assert sum(data.info["n"].values()) == 344
    assert (all_targets(data, "sex") == MISSING_CLASS).sum() == 11
    assert (all_targets(data, "species") == MISSING_CLASS).sum() == 0
    assert data.feature_names == (
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
    )
    assert not torch.isnan(torch.cat([data.train.features, data.test.features])).any()


# --- errors -----------------------------------------------------------------------------------


def _bad(tmp_path, text: str, **config):
    base = {"features": {"numeric": ["x"]}, "tasks": {"y": {"type": "binary"}}}
    return build(path=write(tmp_path, text), **{**base, **config})


GOOD = "x,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(20))


@pytest.mark.parametrize(
    ("text", "config", "message"),
    [
        (GOOD, {"features": {"numeric": ["x", "alt"]}}, r"column 'alt' is not in .*columns: x, y"),
        (GOOD, {"tasks": {"y": {"type": "binary", "column": "z"}}}, r"tasks.y.column: column 'z'"),
        (GOOD, {"split": {"group": "patient"}}, r"split.group: column 'patient' is not in"),
        (
            GOOD,
            {"tasks": {"y": {"type": "binary", "classes": ["a", "c"]}}},
            r"dataset.tasks.y: label 'b' \(column 'y', row 2; 10 row\(s\) hold unknown labels: "
            r"'b'\) is not one of the allowed labels \['a', 'c'\]",
        ),
        (
            GOOD.replace("3,b", "3,high"),
            {"features": {"numeric": ["y"]}, "tasks": {"x": {"type": "regression"}}},
            r"column 'y' must be numeric but holds 'a' at row 1",
        ),
        (
            GOOD.replace("\n3,", "\nhigh,"),
            {},
            r"dataset.features.numeric: column 'x' must be numeric but holds 'high' at row 4 "
            r"\(file line 5\)",
        ),
        (
            "x,y\n" + "".join(f"{i},a\n" for i in range(10)),
            {"tasks": {"y": {"type": "multiclass"}}},
            r"dataset.tasks.y has 1 class\(es\) \['a'\]: a multiclass task needs at least 2",
        ),
        (
            GOOD.replace("4,a", "4,c"),
            {},
            r"dataset.tasks.y is binary but has 3 classes \['a', 'b', 'c'\]",
        ),
        (
            GOOD.replace("5,b", "5,moderate"),
            {"features": {"numeric": ["x"]}, "tasks": {"y": {"type": "regression"}}},
            r"regression target column 'y' must be numeric but holds 'a' at row 1",
        ),
        (
            GOOD,
            {"tasks": {"y": {"type": "binary", "classes": ["no", "yes"]}}},
            r"label 'a' .* is not one of the allowed labels \['no', 'yes'\]",
        ),
        (
            GOOD,
            {"tasks": {"y": {"type": "binary", "class_weights": [1, 2, 3]}}},
            r"class_weights=\[1, 2, 3\] is not allowed: use 2 positive numbers",
        ),
        (
            GOOD,
            {"tasks": {"y": {"type": "binary", "class_weights": "inverse"}}},
            r"class_weights='inverse' is not allowed",
        ),
        (GOOD, {"split": {"stratify": "z"}}, r"split.stratify='z' is not allowed: .*\['y'\]"),
        (GOOD, {"split": {"train": 0.8}}, r"the three fractions must be positive and sum to 1"),
        (GOOD, {"folds": 5, "fold": 5}, r"dataset.fold=5 is not allowed: use 0 <= fold < 5"),
        (GOOD, {"folds": 1}, r"dataset.folds=1 is not allowed"),
        (GOOD, {"features": {"numeric": ["x", "y"]}}, r"label column 'y' is also listed"),
        (GOOD, {"features": {"numeric": []}}, r"dataset.features lists no column"),
        (GOOD, {"tasks": {}}, r"dataset.tasks is empty"),
        (
            GOOD,
            {"tasks": {"y": {"type": "binary", "label_map": {"a": "A"}, "classes": ["a", "b"]}}},
            r"label_map maps 'a' to 'A', which is not one of dataset.tasks.y.classes",
        ),
        (
            GOOD,
            {"tasks": {"y": {"type": "regression", "classes": ["a"]}}},
            r"dataset.tasks.y.classes is only for classification tasks",
        ),
        ("x,y\n", {}, r"has a header but no data rows"),
        ("", {}, r"cannot be read as CSV: No columns to parse"),
        ("x,y\n1,a\n2,b,c\n", {}, r"cannot be read as CSV: .*Expected 2 fields in line 3"),
        ("x,y\n1,a\n2,b\n", {}, r"split would be empty"),
    ],
)
def test_bad_tables_and_configs_give_one_line_errors(tmp_path, text, config, message) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        _bad(tmp_path, text, **config)
    assert "\n" not in str(error.value)


def test_yaml_booleans_get_a_hint(tmp_path) -> None:
    text = "x,mash\n" + "".join(f"{i},{['no', 'yes'][i % 2]}\n" for i in range(10))
    with pytest.raises(ConfigError, match=r"quote them"):
        build(
            path=write(tmp_path, text),
            features={"numeric": ["x"]},
            # what `classes: [no, yes]` (unquoted) becomes in YAML
            tasks={"mash": {"type": "binary", "classes": [False, True]}},
        )


def test_task_without_training_labels(tmp_path) -> None:
    # z is labelled on two rows only (classes c and d), so a seed can leave train without one
    z = ["c", "d"] + [""] * 18
    text = "x,y,z\n" + "".join(f"{i},{'ab'[i % 2]},{z[i]}\n" for i in range(20))
    for seed in range(20):  # some seed puts both labelled rows outside the training split
        try:
            _bad(
                tmp_path,
                text,
                tasks={"y": {"type": "binary"}, "z": {"type": "binary"}},
                seed=seed,
                split={"train": 0.5, "val": 0.25, "test": 0.25},
            )
        except ConfigError as error:
            assert "dataset.tasks.z: no row of the training split has a label" in str(error)
            assert "has 2 labelled rows in all" in str(error)
            return
    pytest.fail("no seed left the training split without a label of z")


def test_missing_file_names_the_path_and_the_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"dataset.path='nope.csv' is not a file .*relative"):
        build(path="nope.csv", features={"numeric": ["x"]}, tasks={"y": {"type": "binary"}})


def test_relative_paths_are_relative_to_the_current_directory(tmp_path, monkeypatch) -> None:
    write(tmp_path, GOOD, name="cohort.csv")
    monkeypatch.chdir(tmp_path)
    data = build(path="cohort.csv", features={"numeric": ["x"]}, tasks={"y": {"type": "binary"}})
    assert sum(data.info["n"].values()) == 20


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "pkg://no_such_package_xyz/data.csv",
            r"needs the Python package 'no_such_package_xyz'.*pip install no-such-package-xyz",
        ),
        (
            "pkg://palmerpenguins/data/nope.csv",
            r"package 'palmerpenguins' has no file 'data/nope.csv'",
        ),
        ("pkg://palmerpenguins", r"use pkg://<package>/<path inside the package>"),
    ],
)
def test_package_paths(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(path=path, features={"numeric": ["x"]}, tasks={"y": {"type": "binary"}})


def test_missing_value_tokens_are_configurable(tmp_path) -> None:
    text = "x,y\n" + "".join(f"{'unknown' if i == 3 else i},{'ab'[i % 2]}\n" for i in range(20))
    with pytest.raises(ConfigError, match=r"holds 'unknown'"):
        _bad(tmp_path, text)
    data = _bad(tmp_path, text, missing_values=["NA", "Unknown"])  # case-insensitive
    assert not torch.isnan(data.train.features).any()


def test_stratifying_on_two_tasks_keeps_both_close() -> None:
    tail = _penguins_tail()
    tail["split"]["stratify"] = ["species", "sex"]
    data = build(path="pkg://palmerpenguins/data/penguins.csv", **tail)
    overall = {"species": {"Adelie": 152 / 344}, "sex": {"female": 165 / 333}}
    for split in SPLITS:
        for task, classes in overall.items():
            for name, expected in classes.items():
                got = data.info["prevalence"][split][task][name]
                assert got == pytest.approx(expected, abs=0.03), (split, task)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.tasks.sex.clases=[a,b]", "Key 'clases' not in 'CsvTaskConf'"),
        ("dataset.preprocessing.scale=minmax", "Invalid value 'minmax'"),
        ("dataset.folds=five", "could not be converted to Integer"),
        ("dataset.tasks.sex.type=boolean", "Invalid value 'boolean'"),
    ],
)
def test_schema_rejects_typos_at_composition(compose_config, override, message) -> None:
    with pytest.raises(Exception) as raised:
        compose_config("dataset=penguins", override)
    chain = [raised.value, raised.value.__cause__]
    assert any(message in str(error) for error in chain), [str(e) for e in chain]


def test_penguins_kfold_composes_from_overrides(compose_config) -> None:
    from mtl_runner.run import instantiate

    cfg = compose_config("dataset=penguins", "dataset.folds=5", "dataset.fold=4")
    data = instantiate(cfg.dataset)
    assert data.info["split"]["folds"] == 5 and data.info["split"]["fold"] == 4
    assert len(data.val) == pytest.approx((344 - len(data.test)) / 5, abs=1)


def test_mtl_run_trains_on_penguins(mtl_run) -> None:
    outcome = mtl_run(
        "dataset=penguins",
        "trainer.epochs=1",
        "trainer.progress=log",
        "trainer.checkpoint=false",
        "device=cpu",
        fast=False,
    )
    assert outcome.code == 0, outcome.stderr
    assert np.isfinite(outcome.metrics["train/loss/sex"]).all()
    assert outcome.results["n"] == {"train": 241, "val": 51, "test": 52}
