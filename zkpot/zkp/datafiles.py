"""Data from files a user already has: `.npz` (x, y), CSV (feature columns + a label column), or
a folder of images with one sub-folder per class (issue 14).

Each loader checks what the task needs — feature count, label range, the circuit's input range
[0, 1], finite numbers, at least one sample — and refuses with a `DataFileError` naming the file
and the row, column or path, never a stack trace and never a silently shortened set. Features
are float32 in [0, 1] (what the circuit's fixed-point inputs represent exactly at the task's
scale), labels int64 in 0..classes-1.
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path

import numpy as np

from zkpot.zkp.arch import Arch
from zkpot.zkp.data import N_CLASSES, N_FEATURES, Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".tif", ".tiff")
MAX_REPORTED = 3  # offending rows or files named in one message


class DataFileError(ValueError):
    """A data file that cannot be used for the task (the message names the file and where)."""


def load_for(path: Path, arch: Arch) -> Dataset:
    """`path` checked against a task's architecture: its input's feature count, its class count, and
    for a folder of images its one-channel image shape."""
    if Path(path).is_dir() and arch.image_shape is None:
        raise DataFileError(f"{path}: a folder of grey images, but the task's input {arch.input_shape} is not "
                            f"one-channel images (use .npz or CSV)")
    return load_dataset(path, arch.n_features, arch.n_classes, arch.image_shape or (8, 8))


def load_dataset(path: Path, n_features: int = N_FEATURES, n_classes: int = N_CLASSES,
                 image_shape: tuple[int, int] = (8, 8)) -> Dataset:
    """x (n, n_features) float32 in [0, 1] and y (n,) int64 in 0..n_classes-1 from `path`: an
    .npz, a .csv, or a directory of per-class image folders (images of `image_shape`, grey)."""
    path = Path(path)
    if path.is_dir():
        return _images(path, n_features, n_classes, image_shape)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file or directory")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz(path, n_features, n_classes)
    if suffix in (".csv", ".tsv", ".txt"):
        return _csv(path, n_features, n_classes)
    raise DataFileError(f"{path}: unknown data format {suffix or '(no suffix)'!r}: use .npz (arrays x, y), "
                        f".csv (feature columns + a label column) or a folder of per-class image folders")


def _check(path: Path, x: np.ndarray, y: np.ndarray, n_features: int, n_classes: int,
           where: str = "sample", ids: list[str] | None = None) -> Dataset:
    """The checks every format shares; `where` names a sample in messages ('row' for CSV) and
    `ids` what to call each one (default: its index)."""
    if len(y) == 0:
        raise DataFileError(f"{path}: no samples")
    if x.shape != (len(y), n_features):
        raise DataFileError(f"{path}: {x.shape[1] if x.ndim == 2 else x.shape} features per {where}, "
                            f"the task's model takes {n_features}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise DataFileError(f"{path}: {where}(s) {_first(bad, ids)} hold NaN or infinite features")
    bad = np.flatnonzero((x < 0).any(axis=1) | (x > 1).any(axis=1))
    if len(bad):
        lo, hi = float(x.min()), float(x.max())
        raise DataFileError(f"{path}: features must lie in [0, 1] (the circuit's input range; scale them), "
                            f"{where}(s) {_first(bad, ids)} do not (values span {lo:g}..{hi:g})")
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if len(bad):
        raise DataFileError(f"{path}: labels must be 0..{n_classes - 1} (the task has {n_classes} classes), "
                            f"{where}(s) {_first(bad, ids)} have {sorted({int(v) for v in y[bad]})[:MAX_REPORTED]}")
    return Dataset(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64))


def _first(indices: np.ndarray, ids: list[str] | None = None) -> str:
    shown = ", ".join(ids[int(i)] if ids is not None else str(int(i)) for i in indices[:MAX_REPORTED])
    return shown + (f" (and {len(indices) - MAX_REPORTED} more)" if len(indices) > MAX_REPORTED else "")


def _labels(path: Path, raw: np.ndarray, where: str) -> np.ndarray:
    """Integer labels from any numeric array; a fractional label is refused, not truncated."""
    if raw.dtype.kind in "iub":
        return raw.astype(np.int64)
    if raw.dtype.kind != "f":
        raise DataFileError(f"{path}: labels are {raw.dtype}, not numbers")
    bad = np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))
    if len(bad):
        raise DataFileError(f"{path}: labels must be whole numbers, {where}(s) {_first(bad)} are not")
    return raw.astype(np.int64)


def _npz(path: Path, n_features: int, n_classes: int) -> Dataset:
    if not zipfile.is_zipfile(path):
        raise DataFileError(f"{path}: not a readable .npz (not a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                raise DataFileError(f"{path}: no array {' or '.join(missing)} (it holds {sorted(npz.files)}; "
                                    f"expected x: features, y: labels)")
            x_raw, y_raw = npz["x"], npz["y"]
    except DataFileError:
        raise
    except ValueError as exc:  # object arrays (pickles) are refused by allow_pickle=False
        raise DataFileError(f"{path}: not a plain numeric .npz ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise DataFileError(f"{path}: not a readable .npz ({exc})") from exc
    if x_raw.dtype.kind not in "iufb":
        raise DataFileError(f"{path}: x is {x_raw.dtype}, not numbers")
    if y_raw.ndim != 1:
        raise DataFileError(f"{path}: y has shape {y_raw.shape}, expected one label per sample (n,)")
    if x_raw.ndim < 1 or x_raw.shape[0] != len(y_raw):
        raise DataFileError(f"{path}: x has {x_raw.shape[0] if x_raw.ndim else 0} samples, y {len(y_raw)}")
    x = x_raw.reshape(len(y_raw), -1) if x_raw.ndim > 2 else x_raw  # images (n, 1, 8, 8) -> (n, 64)
    return _check(path, x.astype(np.float64), _labels(path, y_raw, "sample"), n_features, n_classes)


def _csv(path: Path, n_features: int, n_classes: int) -> Dataset:
    """Rows of n_features numbers and a label: the column named 'label' (or 'y', 'target',
    'class') when the first row is a header, else the last column. Rows are numbered as in the
    file (1 = the first line)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read it as text ({exc})") from exc
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(text.splitlines(), delimiter=delimiter))]
    rows = [(n, r) for n, r in rows if any(cell.strip() for cell in r)]  # blank lines carry nothing
    if not rows:
        raise DataFileError(f"{path}: no rows")
    label_col = -1
    first = rows[0][1]
    if not all(_is_number(c) for c in first):  # a header
        names = [c.strip().lower() for c in first]
        for name in ("label", "y", "target", "class"):
            if name in names:
                label_col = names.index(name)
                break
        rows = rows[1:]
        if not rows:
            raise DataFileError(f"{path}: a header and no rows")
    width = n_features + 1
    xs, ys = [], []
    for line, row in rows:
        if len(row) != width:
            raise DataFileError(f"{path}: row {line} has {len(row)} columns, expected {width} "
                                f"({n_features} features + the label)")
        values = []
        for col, cell in enumerate(row, start=1):
            try:
                values.append(float(cell))
            except ValueError:
                raise DataFileError(f"{path}: row {line} column {col}: {cell.strip()[:40]!r} is not a number") from None
        label = values.pop(label_col)
        if not math.isfinite(label) or label != round(label):
            raise DataFileError(f"{path}: row {line}: label {row[label_col].strip()!r} is not a whole number")
        xs.append(values)
        ys.append(int(label))
    lines = [str(line) for line, _ in rows]  # messages name the file's lines
    return _check(path, np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.int64), n_features, n_classes,
                  where="row", ids=lines)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _images(root: Path, n_features: int, n_classes: int, shape: tuple[int, int]) -> Dataset:
    """root/<class>/<image>: class folders named 0..classes-1; every image grey (or converted
    from colour), exactly `shape` pixels; pixel values / 255."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - Pillow comes with matplotlib
        raise DataFileError(f"{root}: reading images needs Pillow ({exc})") from exc
    if shape[0] * shape[1] != n_features:
        raise DataFileError(f"{root}: images of {shape[0]}x{shape[1]} pixels give {shape[0] * shape[1]} features, "
                            f"the task's model takes {n_features}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataFileError(f"{root}: no class folders (expected {root}/0/, {root}/1/, ... holding images)")
    strays = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if strays:
        raise DataFileError(f"{root}: files beside the class folders: {strays[:MAX_REPORTED]} "
                            f"(every image goes into its class's folder)")
    xs, ys, names = [], [], []
    for folder in folders:
        if not folder.name.isdigit() or int(folder.name) >= n_classes:
            raise DataFileError(f"{folder}: class folders are named 0..{n_classes - 1} (the task's classes); "
                                f"{folder.name!r} is not one")
        label = int(folder.name)
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        for f in files:
            if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataFileError(f"{f}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
            try:
                with Image.open(f) as im:
                    im.load()
                    grey = im.convert("L")
            except (UnidentifiedImageError, OSError) as exc:
                raise DataFileError(f"{f}: cannot decode it as an image ({exc})") from exc
            if grey.size != (shape[1], shape[0]):
                raise DataFileError(f"{f}: {grey.size[0]}x{grey.size[1]} pixels, the task's images are "
                                    f"{shape[1]}x{shape[0]} (resize them; nothing is resized silently)")
            xs.append(np.asarray(grey, dtype=np.float64).reshape(-1) / 255.0)
            ys.append(label)
            names.append(str(f.relative_to(root)))
    if not ys:
        raise DataFileError(f"{root}: the class folders hold no images")
    return _check(root, np.asarray(xs), np.asarray(ys, dtype=np.int64), n_features, n_classes,
                  where="image", ids=names)
