"""Backups of a ledger as RocksDB checkpoints, restore, and verification of a stored chain.

A checkpoint (rocksdict Checkpoint) is one consistent point of RocksDB's write sequence: SST
files hard-linked (copied across file systems) plus the live WAL. Every committed block is one
WriteBatch, so a checkpoint holds whole blocks, indexes and state only, even when taken while
appends go on. Offline backups checkpoint a stopped ledger's directory; online backups are taken
by the running service (Backup RPC) and streamed to the client file by file.

Restore copies a backup into a scratch directory next to the target, verifies it there (genesis,
head, hash chain, indexes), and only then moves it into place; it refuses a non-empty target unless
forced, and never touches a directory a running ledger holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from services.ledger.ledger import genesis_fingerprint
from services.ledger.store import META_GENESIS, Store
from zkpot import chain
from zkpot.codec import merkle_root
from zkpot.genesis import Genesis
from zkpot.v1 import ledger_pb2

SCRATCH_MARK = ".zkpot-scratch-"  # names of scratch directories next to a data dir


class BackupError(RuntimeError):
    """A backup or restore that cannot be made or does not verify; the message says why."""


@dataclass(frozen=True)
class ChainSummary:
    height: int
    block_hash: bytes
    state_root: bytes
    blocks: int


def is_database(path: Path) -> bool:
    return (Path(path) / "CURRENT").is_file()


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def scratch_dir(beside: Path, purpose: str) -> Path:
    """A fresh (not yet existing) path on the same file system as `beside`, so that checkpoints
    can hard-link and renames are atomic."""
    beside = Path(beside).resolve()
    return beside.parent / f"{SCRATCH_MARK}{beside.name}.{purpose}.{uuid.uuid4().hex[:12]}"


def remove_stale_scratch(beside: Path) -> None:
    """Remove scratch directories a killed backup or restore of `beside` left behind."""
    beside = Path(beside).resolve()
    for p in beside.parent.glob(f"{SCRATCH_MARK}{beside.name}.*"):
        shutil.rmtree(p, ignore_errors=True)


def checkpoint_files(path: Path) -> Iterator[tuple[str, int]]:
    """(name, size) of each file of a checkpoint, in name order."""
    for p in sorted(Path(path).iterdir()):
        if not p.is_file():
            raise BackupError(f"unexpected entry {p.name!r} in checkpoint {path}")
        yield p.name, p.stat().st_size


def safe_file_name(name: str) -> bool:
    """A checkpoint file name: one plain path component (what a client may write)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def head_summary(store: Store) -> ChainSummary:
    height = store.head_height()
    if height is None:
        raise BackupError(f"{store.path}: no head pointer")
    raw = store.block_bytes(height)
    if raw is None:
        raise BackupError(f"{store.path}: head {height} points at a missing block")
    sb = ledger_pb2.StoredBlock.FromString(raw)
    return ChainSummary(height, sb.block_hash, sb.state_root, height + 1)


def verify_chain(path: Path, genesis: Genesis | None) -> ChainSummary:
    """Open `path` read-only and check the whole stored chain (BackupError on the first fault):
    genesis fingerprint and block 0 match `genesis` (when given), the head is readable and is the
    highest block, heights are contiguous from 0, every block hashes to its stored hash and links
    to its parent, its QC names it, its txs_root matches, and the hash and tx indexes point at it."""
    path = Path(path)
    if not is_database(path):
        raise BackupError(f"{path} holds no ledger database")
    try:
        store = Store(path, read_only=True)
    except Exception as exc:  # rocksdict raises plain Exception on open errors
        raise BackupError(f"{path}: cannot open: {exc}") from exc
    try:
        return _verify(store, genesis)
    finally:
        store.close()


def _verify(store: Store, genesis: Genesis | None) -> ChainSummary:
    where = store.path
    if genesis is not None:
        stored = store.meta(META_GENESIS)
        if stored != genesis_fingerprint(genesis):
            raise BackupError(f"{where}: genesis does not match the genesis file (another chain?)")
    head = head_summary(store)
    last = store.last_block_height()
    if last != head.height:
        raise BackupError(f"{where}: blocks up to {last} stored, but the head is {head.height}")
    prev_hash = b""
    expected = 0
    for height, raw in store.blocks_from(0):
        if height != expected:
            raise BackupError(f"{where}: block {expected} is missing")
        sb = ledger_pb2.StoredBlock.FromString(raw)
        hdr = sb.block.header
        bh = chain.block_hash(hdr)
        if hdr.height != height or sb.block_hash != bh:
            raise BackupError(f"{where}: block at {height} does not hash to its stored hash")
        if height == 0:
            if genesis is not None and bh != chain.block_hash(genesis.block().header):
                raise BackupError(f"{where}: block 0 is not the genesis block")
        else:
            if hdr.parent_hash != prev_hash:
                raise BackupError(f"{where}: block {height} does not link to block {height - 1}")
            if (sb.qc.block_hash, sb.qc.height) != (bh, height):
                raise BackupError(f"{where}: block {height} carries a QC for another block")
        tx_ids = [chain.tx_id(tx) for tx in sb.block.txs]
        if height > 0 and merkle_root(tx_ids) != hdr.txs_root:
            raise BackupError(f"{where}: block {height} txs_root does not match its transactions")
        if store.height_of(bh) != height:
            raise BackupError(f"{where}: hash index of block {height} is missing or wrong")
        for tid in tx_ids:
            loc = store.tx_location(tid)
            if loc is None or loc[0] > height:
                raise BackupError(f"{where}: tx {tid.hex()[:16]} of block {height} is not indexed")
        prev_hash = bh
        expected += 1
    if expected != head.height + 1:
        raise BackupError(f"{where}: {expected} blocks stored, head is {head.height}")
    return head


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not is_empty_dir(out):
            raise BackupError(f"{out} exists and is not an empty directory")
        out.rmdir()  # the checkpoint creates it
    out.parent.mkdir(parents=True, exist_ok=True)


def backup_offline(data_dir: Path, out: Path, genesis: Genesis | None) -> ChainSummary:
    """Checkpoint a stopped ledger's directory into `out` and verify the copy."""
    data_dir, out = Path(data_dir), Path(out)
    if not is_database(data_dir):
        raise BackupError(f"{data_dir} holds no ledger database")
    _prepare_out(out)
    try:
        store = Store(data_dir)
    except Exception as exc:
        raise BackupError(
            f"cannot open {data_dir} ({exc}); if its ledger is running, back it up online with --target"
        ) from exc
    try:
        store.checkpoint(out)
    finally:
        store.close()
    return verify_chain(out, genesis)


async def receive_backup(
    chunks: AsyncIterator[ledger_pb2.BackupChunk], out: Path, genesis: Genesis | None
) -> ChainSummary:
    """Write a Backup RPC stream into `out` (staged beside it, checked, verified, then renamed)."""
    out = Path(out)
    _prepare_out(out)
    staged = scratch_dir(out, "backup")
    staged.mkdir()
    info: ledger_pb2.BackupInfo | None = None
    sizes: dict[str, int] = {}
    current: tuple[str, BinaryIO] | None = None  # (name, open file)

    def finish_file() -> None:
        if current is not None:
            name, f = current
            f.flush()
            os.fsync(f.fileno())
            f.close()
            if (staged / name).stat().st_size != sizes[name]:
                raise BackupError(f"backup stream: {name} is truncated")

    try:
        async for msg in chunks:
            part = msg.WhichOneof("part")
            if part == "info":
                if info is not None:
                    raise BackupError("backup stream: info sent twice")
                info = msg.info
                continue
            if part != "file" or info is None:
                raise BackupError("backup stream: file data before the checkpoint info")
            fc = msg.file
            if current is None or current[0] != fc.path:
                finish_file()
                current = None
                if not safe_file_name(fc.path) or fc.path in sizes:
                    raise BackupError(f"backup stream: bad or repeated file name {fc.path!r}")
                sizes[fc.path] = fc.file_size
                current = (fc.path, open(staged / fc.path, "wb"))
            name, f = current
            if fc.offset != f.tell() or fc.file_size != sizes[name]:
                raise BackupError(f"backup stream: {name} chunk at {fc.offset} out of order")
            f.write(fc.data)
        finish_file()
        current = None
        if info is None:
            raise BackupError("backup stream ended before the checkpoint info")
        if len(sizes) != info.files or sum(sizes.values()) != info.total_bytes:
            raise BackupError(f"backup stream: {len(sizes)} files received, {info.files} announced")
        _fsync_dir(staged)
        summary = verify_chain(staged, genesis)
        if (summary.height, summary.block_hash) != (info.height, info.block_hash):
            raise BackupError(f"backup verifies at height {summary.height}, server announced {info.height}")
        os.replace(staged, out)
        _fsync_dir(out.parent)
        return summary
    finally:
        if current is not None:
            current[1].close()
        shutil.rmtree(staged, ignore_errors=True)


def lock_held(data_dir: Path) -> bool:
    """Whether a process holds the RocksDB LOCK of `data_dir` (a running ledger, even in this process).

    Asked from a child process: RocksDB's lock is a POSIX record lock, which a process cannot see
    when it holds it itself, and which closing any descriptor of the file would release."""
    lock = data_dir / "LOCK"
    if not lock.exists():
        return False
    probe = ("import fcntl, os, sys\n"
             "fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", probe, str(lock)], timeout=30).returncode == 3


def restore(src: Path, data_dir: Path, genesis: Genesis, *, force: bool = False) -> ChainSummary:
    """Install the backup at `src` as `data_dir`, verified before it replaces anything."""
    src, data_dir = Path(src), Path(data_dir)
    if not is_database(src):
        raise BackupError(f"{src} holds no ledger backup")
    if src.resolve() == data_dir.resolve():
        raise BackupError("--from and --data-dir are the same directory")
    occupied = data_dir.exists() and not is_empty_dir(data_dir)
    if occupied and not force:
        raise BackupError(f"{data_dir} is not empty; pass --force to replace it")
    # a held lock refuses; an unreadable (corrupt) ledger that nobody holds is what --force replaces
    if occupied and lock_held(data_dir):
        raise BackupError(f"{data_dir} is in use: a process holds its RocksDB lock; stop its ledger first")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = scratch_dir(data_dir, "restore")
    try:
        shutil.copytree(src, staged, copy_function=copy_synced)
        summary = verify_chain(staged, genesis)
        if data_dir.exists():
            old = scratch_dir(data_dir, "old")
            os.replace(data_dir, old)
            os.replace(staged, data_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, data_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    _fsync_dir(data_dir.parent)
    return summary


def copy_synced(src: str, dst: str) -> str:
    """shutil.copy2, then fsync: a restored ledger must survive a power cut right after restore."""
    shutil.copy2(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return dst


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
