"""Regenerate messy_cohort.csv: a small, made-up NAFLD-like biopsy cohort with every messy case
the CSV loader must handle (run: python tests/data/make_messy_cohort.py). Not real patients.

- several rows per patient (serial biopsies) and three centres -> grouped splits;
- sex as text, with a missing value; a categorical level ("X") that only a few rows have;
- labs with missing values written as empty cells, "NA", " unknown " and "n/a";
- fibrosis "F0".."F4" with sub-stages "F1a"/"F1b"/"F1c" (collapsed to F1 by the label map),
  few F4, some missing; ballooning 0..2 written as "0", "1.0", "2", some missing; MASH yes/no with
  missing labels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("messy_cohort.csv")
COLUMNS = [
    "patient_id", "centre", "sex", "age", "bmi", "alt", "ast", "ggt", "platelets",
    "triglycerides", "hba1c", "fibrosis", "ballooning", "mash",
]  # fmt: skip
MISSING_TOKENS = ["", "NA", " unknown ", "n/a"]


def main(seed: int = 7, patients: int = 50) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        centre = "ABC"[p % 3]
        sex = "F" if rng.random() < 0.45 else "M"
        if p == 5:
            sex = "X"  # a rare level: most splits never see it in training
        age = rng.normal(52, 11)
        for visit in range(int(rng.integers(1, 5))):
            rows.append(_row(rng, f"P{p:03d}", centre, sex, age + 2 * visit, visit))
    rows[3]["sex"] = ""  # one missing categorical value
    with OUT.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


def _row(rng: np.random.Generator, patient: str, centre: str, sex: str, age: float, visit: int):
    stage = int(np.clip(np.rint(rng.normal(1.5 + 0.3 * visit, 1.2)), 0, 4))
    if stage == 4 and rng.random() < 0.5:
        stage = 3  # keep F4 rare
    fat = rng.normal(0, 1)
    row = {
        "patient_id": patient,
        "centre": centre,
        "sex": sex,
        "age": f"{age:.0f}",
        "bmi": f"{31 + 4 * fat:.1f}",
        "alt": f"{np.exp(rng.normal(3.6 + 0.15 * stage, 0.4)):.0f}",
        "ast": f"{np.exp(rng.normal(3.3 + 0.2 * stage, 0.35)):.0f}",
        "ggt": f"{np.exp(rng.normal(3.8, 0.6)):.0f}",
        "platelets": f"{rng.normal(250 - 25 * stage, 50):.0f}",
        "triglycerides": f"{np.exp(rng.normal(0.5 + 0.1 * fat, 0.3)):.2f}",
        "hba1c": f"{rng.normal(6.0 + 0.2 * stage, 0.8):.1f}",
        "fibrosis": _fibrosis(rng, stage),
        "ballooning": ["0", "1.0", "2"][int(np.clip(np.rint(rng.normal(0.4 * stage, 0.7)), 0, 2))],
        "mash": "yes" if rng.random() < 0.25 + 0.15 * stage else "no",
    }
    for column in ("bmi", "alt", "ggt", "triglycerides", "hba1c"):
        if rng.random() < 0.12:
            row[column] = MISSING_TOKENS[int(rng.integers(len(MISSING_TOKENS)))]
    for column, rate in (("fibrosis", 0.06), ("ballooning", 0.15), ("mash", 0.1)):
        if rng.random() < rate:
            row[column] = MISSING_TOKENS[int(rng.integers(2))]
    return row


def _fibrosis(rng: np.random.Generator, stage: int) -> str:
    if stage == 1:
        return "F1" + "abc"[int(rng.integers(3))]
    return f"F{stage}"


if __name__ == "__main__":
    main()
