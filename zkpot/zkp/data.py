"""scikit-learn's bundled digits (offline): public test set and non-IID private shards.

The held-out split is stratified and seeded; the task's public test set is a class-balanced prefix
of it, so every task with the same seed and size fixes the same samples. Inputs are pixels / 16
(exactly representable at any ezkl input scale >= 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from zkpot.zkp.arch import Arch

N_FEATURES = 64
N_CLASSES = 10
HELD_OUT_FRACTION = 0.2
HELD_OUT_SIZE = 360  # ceil(0.2 * 1,797 digits): the held-out split of every seed (tests check it)


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32 (n, 64) in [0, 1]
    y: np.ndarray  # int64 (n,)

    def __len__(self) -> int:
        return len(self.y)


def load_all() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return Dataset((digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64))


def _split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    data = load_all()
    idx = np.arange(len(data))
    train_idx, held_idx = train_test_split(
        idx, test_size=HELD_OUT_FRACTION, stratify=data.y, random_state=seed, shuffle=True
    )
    return np.sort(train_idx), np.sort(held_idx)


def _balanced_order(y: np.ndarray, seed: int) -> np.ndarray:
    """Indices of y ordered round-robin over classes (shuffled within each class, seeded)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(int(y.max()) + 1)]
    order: list[int] = []
    for rank in range(max(len(p) for p in per_class)):
        order.extend(int(p[rank]) for p in per_class if rank < len(p))
    return np.array(order, dtype=np.int64)


def public_test_set(size: int, seed: int) -> Dataset:
    """The task's public test set: `size` class-balanced samples of the held-out split."""
    data = load_all()
    _, held = _split(seed)
    if not 1 <= size <= len(held):
        raise ValueError(f"test set size must be 1..{len(held)}, got {size}")
    chosen = held[_balanced_order(data.y[held], seed)[:size]]
    return Dataset(data.x[chosen], data.y[chosen])


def held_out(seed: int) -> Dataset:
    """The whole held-out split (the public test set is a class-balanced prefix of it)."""
    data = load_all()
    _, held = _split(seed)
    return Dataset(data.x[held], data.y[held])


def training_pool(seed: int) -> Dataset:
    """Everything not held out: the material participants' private shards are cut from."""
    data = load_all()
    train, _ = _split(seed)
    return Dataset(data.x[train], data.y[train])


def dirichlet_shards(n_participants: int, alpha: float, seed: int, min_size: int = 10,
                     pool: Dataset | None = None) -> list[Dataset]:
    """Non-IID shards: each class is divided among participants in Dirichlet(alpha) proportions.

    Small alpha gives skewed label mixes. Redrawn (seeded) until every shard has min_size samples.
    `pool`: the samples to cut (default: the digits' training split of the seed).
    """
    if n_participants < 1:
        raise ValueError("need at least one participant")
    if alpha <= 0:
        raise ValueError("alpha must be positive")
    pool = training_pool(seed) if pool is None else pool
    rng = np.random.default_rng(seed + 1)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(n_participants)]
        for c in range(int(pool.y.max()) + 1):
            idx = rng.permutation(np.flatnonzero(pool.y == c))
            props = rng.dirichlet([alpha] * n_participants)
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for p, chunk in enumerate(np.split(idx, cuts)):
                parts[p].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_size:
            break
    else:
        raise ValueError(f"cannot give {n_participants} shards {min_size} samples each at alpha={alpha}")
    return [Dataset(pool.x[np.sort(p)], pool.y[np.sort(p)]) for p in parts]


def save(path: Path, data: Dataset) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # file handle: np.savez would append .npz to a bare name
        np.savez(fh, x=data.x.astype(np.float32), y=data.y.astype(np.int64))


def takes_digits(arch: Arch) -> bool:
    """Whether a model can run on the bundled digits (64 features, 10 classes) without a user's data."""
    return (arch.n_features, arch.n_classes) == (N_FEATURES, N_CLASSES)


def load(path: Path, arch: Arch | None = None) -> Dataset:
    """A data set from a file a user has: .npz (x, y), CSV or a folder of per-class images, checked
    against the task's architecture (None: the digits' 64 features and 10 classes;
    zkpot.zkp.datafiles: a DataFileError, a ValueError, says what is wrong)."""
    from zkpot.zkp.datafiles import load_dataset, load_for  # it imports this module

    return load_dataset(Path(path)) if arch is None else load_for(Path(path), arch)
