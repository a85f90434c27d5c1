"""Issue 14, data: the public test set and private shards come from files a user has (.npz, CSV,
a folder of per-class images); every loader refuses bad data with a message naming the file and
the row, column or path — never a traceback, never a silently shortened set."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ledger_process import REPO
from PIL import Image

from zkpot.zkp import data
from zkpot.zkp.datafiles import DataFileError, load_dataset

SAMPLE = data.public_test_set(20, 7)  # digits: x (20, 64) in [0, 1], y in 0..9


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, header: bool = True, label_first: bool = False) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        names = [f"px{i}" for i in range(x.shape[1])]
        if header:
            w.writerow(["label", *names] if label_first else [*names, "label"])
        for xi, yi in zip(x, y, strict=True):
            w.writerow([int(yi), *xi.tolist()] if label_first else [*xi.tolist(), int(yi)])
    return path


def write_images(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
        (root / str(int(yi))).mkdir(parents=True, exist_ok=True)
        Image.fromarray((xi.reshape(8, 8) * 255).round().astype(np.uint8), "L").save(root / str(int(yi)) / f"{i}.png")
    return root


def test_every_format_loads_the_same_samples(tmp_path: Path) -> None:
    data.save(tmp_path / "t.npz", SAMPLE)
    a = load_dataset(tmp_path / "t.npz")
    assert np.array_equal(a.x, SAMPLE.x) and np.array_equal(a.y, SAMPLE.y)
    b = load_dataset(write_csv(tmp_path / "t.csv", SAMPLE.x, SAMPLE.y))
    assert np.array_equal(b.x, SAMPLE.x) and np.array_equal(b.y, SAMPLE.y)
    c = load_dataset(write_csv(tmp_path / "first.csv", SAMPLE.x, SAMPLE.y, label_first=True))  # named column
    assert np.array_equal(c.y, SAMPLE.y) and np.array_equal(c.x, SAMPLE.x)
    d = load_dataset(write_csv(tmp_path / "bare.csv", SAMPLE.x, SAMPLE.y, header=False))  # last column
    assert np.array_equal(d.y, SAMPLE.y)
    e = load_dataset(write_images(tmp_path / "img", SAMPLE.x, SAMPLE.y))
    assert len(e) == len(SAMPLE) and sorted(e.y.tolist()) == sorted(SAMPLE.y.tolist())
    assert np.abs(np.sort(e.x.sum(1)) - np.sort(SAMPLE.x.sum(1))).max() < 64 / 255  # 8-bit pixels
    np.savez(tmp_path / "images.npz", x=SAMPLE.x.reshape(-1, 1, 8, 8), y=SAMPLE.y.astype(np.float64))
    assert np.array_equal(load_dataset(tmp_path / "images.npz").x, SAMPLE.x)  # (n, 1, 8, 8), whole-number floats
    assert data.load(tmp_path / "t.csv").x.shape == (20, 64)  # the prover's --shard takes every format


def _npz(tmp_path: Path, name: str, **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def test_npz_refusals(tmp_path: Path) -> None:
    x, y = SAMPLE.x.copy(), SAMPLE.y.copy()
    nan = x.copy()
    nan[3, 5] = np.nan
    big = x.copy()
    big[[2, 7], 0] = 16.0  # raw pixels, not scaled
    cases = {
        "missing.npz": (None, "no such file"),
        "no_y.npz": ({"x": x}, "no array y"),
        "pickled.npz": ({"x": np.array([{"a": 1}] * 20, dtype=object), "y": y}, "not a plain numeric"),
        "strings.npz": ({"x": np.array([["a"] * 64] * 20), "y": y}, "not numbers"),
        "short_y.npz": ({"x": x, "y": y[:-1]}, "x has 20 samples, y 19"),
        "y_2d.npz": ({"x": x, "y": y.reshape(-1, 1)}, "one label per sample"),
        "features.npz": ({"x": x[:, :60], "y": y}, "60 features per sample, the task's model takes 64"),
        "nan.npz": ({"x": nan, "y": y}, "sample\\(s\\) 3 hold NaN"),
        "range.npz": ({"x": big, "y": y}, "sample\\(s\\) 2, 7 do not"),
        "label.npz": ({"x": x, "y": np.where(np.arange(20) == 4, 10, y)}, "sample\\(s\\) 4 have \\[10\\]"),
        "negative.npz": ({"x": x, "y": np.where(np.arange(20) == 0, -1, y)}, "labels must be 0..9"),
        "fraction.npz": ({"x": x, "y": y + 0.5}, "whole numbers"),
        "empty.npz": ({"x": np.zeros((0, 64)), "y": np.zeros(0)}, "no samples"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / name if arrays is None else _npz(tmp_path, name, **arrays)
        with pytest.raises(DataFileError, match=message) as err:
            load_dataset(path)
        assert str(path) in str(err.value), err.value
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFileError, match="not a readable .npz"):
        load_dataset(tmp_path / "junk.npz")
    (tmp_path / "data.parquet").write_bytes(b"x")
    with pytest.raises(DataFileError, match="unknown data format"):
        load_dataset(tmp_path / "data.parquet")


def test_csv_refusals_name_the_line_and_column(tmp_path: Path) -> None:
    good = write_csv(tmp_path / "good.csv", SAMPLE.x, SAMPLE.y)
    lines = good.read_text().splitlines()  # line 1 is the header, sample i is on line i + 2

    def variant(name: str, edit) -> Path:
        rows = list(lines)
        edit(rows)
        path = tmp_path / name
        path.write_text("\n".join(rows) + "\n")
        return path

    def set_cell(row: int, col: int, value: str):
        def edit(rows: list[str]) -> None:
            cells = rows[row - 1].split(",")
            cells[col - 1] = value
            rows[row - 1] = ",".join(cells)
        return edit

    cases = {
        "word.csv": (set_cell(5, 3, "abc"), "row 5 column 3: 'abc' is not a number"),
        "short.csv": (lambda r: r.__setitem__(7, ",".join(r[6].split(",")[:-2])), "row 8 has 63 columns, expected 65"),
        "label.csv": (set_cell(4, 65, "12"), "row\\(s\\) 4 have \\[12\\]"),
        "fraction.csv": (set_cell(9, 65, "2.5"), "row 9: label '2.5' is not a whole number"),
        "range.csv": (set_cell(6, 1, "255"), "row\\(s\\) 6 do not"),
        "nan.csv": (set_cell(3, 2, "nan"), "row\\(s\\) 3 hold NaN"),
        "header_only.csv": (lambda r: r.__delitem__(slice(1, None)), "a header and no rows"),
    }
    for name, (edit, message) in cases.items():
        path = variant(name, edit)
        with pytest.raises(DataFileError, match=message) as err:
            load_dataset(path)
        assert str(path) in str(err.value)
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(DataFileError, match="no rows"):
        load_dataset(tmp_path / "empty.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataFileError, match="cannot read it as text"):
        load_dataset(tmp_path / "binary.csv")
    # blank lines are skipped and the line numbers stay the file's
    path = variant("blank.csv", lambda r: (r.insert(3, ""), r.__setitem__(10, r[10].replace(",", ",x", 1))))
    with pytest.raises(DataFileError, match="row 11 column 2"):
        load_dataset(path)


def test_image_folder_refusals_name_the_path(tmp_path: Path) -> None:
    root = write_images(tmp_path / "ok", SAMPLE.x, SAMPLE.y)
    assert len(load_dataset(root)) == 20

    def fresh(name: str) -> Path:
        return write_images(tmp_path / name, SAMPLE.x[:6], SAMPLE.y[:6])

    big = fresh("big")
    Image.new("L", (28, 28)).save(big / str(int(SAMPLE.y[0])) / "large.png")
    broken = fresh("broken")
    (broken / str(int(SAMPLE.y[1])) / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    text = fresh("text")
    (text / str(int(SAMPLE.y[1])) / "notes.txt").write_text("hello")
    badclass = fresh("badclass")
    (badclass / "cats").mkdir()
    toomany = fresh("toomany")
    (toomany / "10").mkdir()
    stray = fresh("stray")
    Image.new("L", (8, 8)).save(stray / "loose.png")
    empty = tmp_path / "empty"
    (empty / "0").mkdir(parents=True)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    cases = {
        big: "large.png: 28x28 pixels, the task's images are 8x8",
        broken: "cut.png: cannot decode it as an image",
        text: "notes.txt: not an image file",
        badclass: "cats.*class folders are named 0..9",
        toomany: "'10' is not one",
        stray: "files beside the class folders: \\['loose.png'\\]",
        empty: "the class folders hold no images",
        nothing: "no class folders",
    }
    for path, message in cases.items():
        with pytest.raises(DataFileError, match=message):
            load_dataset(path)
    colour = fresh("colour")  # colour images are converted to grey, not refused
    Image.new("RGB", (8, 8), (255, 0, 0)).save(colour / "3" / "red.png") if (colour / "3").exists() else None
    assert len(load_dataset(colour)) >= 6


def test_task_create_refuses_a_bad_test_set_file_in_one_line(tmp_path: Path) -> None:
    """The refusal comes before any key is made: a message with the file and the line, exit 1."""
    bad = write_csv(tmp_path / "test.csv", SAMPLE.x, SAMPLE.y)
    rows = bad.read_text().splitlines()
    rows[4] = rows[4].replace(",", ",oops,", 1)
    bad.write_text("\n".join(rows) + "\n")
    key = tmp_path / "publisher.json"
    subprocess.run([sys.executable, "-m", "zkpot.cli", "keys", "gen", str(key)], cwd=REPO, check=True,
                   capture_output=True)
    for extra, message in (([], f"{bad}: row 5 has 66 columns"),
                           (["--test-set-size", "12"], None)):
        target = bad if message else write_csv(tmp_path / "good.csv", SAMPLE.x, SAMPLE.y)
        proc = subprocess.run([sys.executable, "-m", "zkpot.cli", "task", "create", "--out", str(tmp_path / "task"),
                               "--publisher-key", str(key), "--test-set", str(target), *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and "Traceback" not in out, out
        assert (message or "test_set_size 12, but") in out, out
        assert not (tmp_path / "task" / "pk.key").exists()


def test_a_task_made_from_a_csv_test_set_proves_on_exactly_those_samples(tmp_path: Path) -> None:
    """`zkpot task create --test-set FILE`: the file's samples, all of them, in its order, become the
    task's public test set (its size in the manifest); the bundled digits stay the default."""
    sample = data.public_test_set(16, 11)  # another seed's samples: not the default test set
    path = write_csv(tmp_path / "public.csv", sample.x, sample.y)
    key = tmp_path / "publisher.json"
    subprocess.run([sys.executable, "-m", "zkpot.cli", "keys", "gen", str(key)], cwd=REPO, check=True,
                   capture_output=True)
    out = tmp_path / "task"
    proc = subprocess.run([sys.executable, "-m", "zkpot.cli", "task", "create", "--out", str(out), "--publisher-key",
                           str(key), "--test-set", str(path), "--min-correct", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from zkpot.zkp.task import load_task

    task = load_task(out)
    assert task.manifest.test_set_size == 16
    assert np.array_equal(task.test_set.x, sample.x) and np.array_equal(task.test_set.y, sample.y)
