"""Write scikit-learn's breast-cancer data (569 samples, 30 features, 2 classes) as the CSV files a
user would bring: train.csv (the participants' pool) and test.csv (the publisher's public test set).

Features are min-max scaled to [0, 1] with the training split's ranges (the circuit's inputs are
fixed point in [0, 1]; zkpot refuses anything outside) and clipped there for the test split; the
label is the last column, named "label". A stratified 80/20 split, seeded.

    python examples/breast-cancer/make_data.py --out data/breast-cancer
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("data/breast-cancer"))
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bc = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(bc.data, bc.target, test_size=0.2, stratify=bc.target,
                                                        random_state=a.seed)
    lo, hi = x_train.min(axis=0), x_train.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    a.out.mkdir(parents=True, exist_ok=True)
    names = [n.replace(" ", "_") for n in bc.feature_names]
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        scaled = np.clip((x - lo) / scale, 0.0, 1.0)
        with open(a.out / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([*names, "label"])
            for row, label in zip(scaled, y, strict=True):
                w.writerow([f"{v:.6f}" for v in row] + [int(label)])
        print(f"{a.out / (name + '.csv')}: {len(y)} samples, {x.shape[1]} features, labels {np.bincount(y).tolist()}")


if __name__ == "__main__":
    main()
