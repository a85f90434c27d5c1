"""RocksDB layout of one validator's ledger (rocksdict, raw bytes keys, one column family per kind).

Column families:
  blocks  u64_key(height)            -> StoredBlock (deterministic protobuf bytes)
  index   b"h" + block_hash          -> u64 height
          b"t" + tx_id               -> u64 height || u32 position in the block
  state   state-machine keys         -> values (see services/ledger/state.py)
  blobs   content id (utf-8)         -> bytes (models)
  meta    b"head"                    -> u64 height of the newest committed block
          b"genesis"                 -> genesis fingerprint (see ledger.genesis_fingerprint)

Every committed block is ONE WriteBatch written with sync=True holding the block, its indexes, its
state writes, its blobs and the head pointer, so a crash (even kill -9) leaves either all of a
block or none of it, and the head always points at a complete block.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import AccessType, Checkpoint, Options, Rdict, WriteBatch, WriteOptions

from zkpot.codec import u64_key

CF_BLOCKS, CF_INDEX, CF_STATE, CF_BLOBS, CF_META = "blocks", "index", "state", "blobs", "meta"
COLUMN_FAMILIES = (CF_BLOCKS, CF_INDEX, CF_STATE, CF_BLOBS, CF_META)

META_HEAD = b"head"
META_GENESIS = b"genesis"

_TX_LOC = struct.Struct(">QI")
_U64 = struct.Struct(">Q")


def block_index_key(block_hash: bytes) -> bytes:
    return b"h" + block_hash


def tx_index_key(tx_id: bytes) -> bytes:
    return b"t" + tx_id


@dataclass
class Commit:
    """Everything one block writes; applied atomically by Store.commit."""

    height: int
    stored_block: bytes
    block_hash: bytes
    tx_ids: list[bytes]
    state: dict[bytes, bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    skip_tx_index: set[int] = field(default_factory=set)  # positions whose id is indexed already


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    return opts


class Store:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Open (read-write: create) the ledger database. read_only opens an existing one without
        taking its lock or writing anything (verification of backups and stopped ledgers)."""
        self.path = Path(path)
        cfs = {name: Options(raw_mode=True) for name in COLUMN_FAMILIES}
        if read_only:
            self._db = Rdict(str(self.path), Options(raw_mode=True), column_families=cfs,
                             access_type=AccessType.read_only())
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(self.path), _options(), column_families=cfs)
        self._cf = {name: self._db.get_column_family(name) for name in COLUMN_FAMILIES}
        self._handles = {name: self._db.get_column_family_handle(name) for name in COLUMN_FAMILIES}
        self._sync = WriteOptions()
        self._sync.sync = True  # durability: a block acknowledged to consensus survives power loss
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()
            # rocksdict keeps the DB (and its LOCK) alive while any handle object is referenced
            self._cf.clear()
            self._handles.clear()
            del self._db

    # -- reads ---------------------------------------------------------------------------------

    def head_height(self) -> int | None:
        raw = self._cf[CF_META].get(META_HEAD)
        return None if raw is None else _U64.unpack(raw)[0]

    def meta(self, key: bytes) -> bytes | None:
        return self._cf[CF_META].get(key)

    def block_bytes(self, height: int) -> bytes | None:
        return self._cf[CF_BLOCKS].get(u64_key(height))

    def blocks_from(self, height: int) -> Iterator[tuple[int, bytes]]:
        for key, value in self._cf[CF_BLOCKS].items(from_key=u64_key(height)):
            yield _U64.unpack(key)[0], value

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self._cf[CF_INDEX].get(block_index_key(block_hash))
        return None if raw is None else _U64.unpack(raw)[0]

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        raw = self._cf[CF_INDEX].get(tx_index_key(tx_id))
        return None if raw is None else _TX_LOC.unpack(raw)  # type: ignore[return-value]

    def state_get(self, key: bytes) -> bytes | None:
        return self._cf[CF_STATE].get(key)

    def blob(self, cid: str) -> bytes | None:
        return self._cf[CF_BLOBS].get(cid.encode())

    def state_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """State entries whose key starts with `prefix`, in key order."""
        for key, value in self._cf[CF_STATE].items(from_key=prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    def items(self, cf: str) -> Iterator[tuple[bytes, bytes]]:
        """Every entry of one column family in key order (verification, tests)."""
        yield from self._cf[cf].items()

    def last_block_height(self) -> int | None:
        """Height of the highest key in `blocks` (must equal the head on a sound store)."""
        for key in self._cf[CF_BLOCKS].keys(backwards=True):
            return _U64.unpack(key)[0]
        return None

    # -- backup --------------------------------------------------------------------------------

    def checkpoint(self, path: Path) -> None:
        """A RocksDB checkpoint at `path` (must not exist): hard links to the SST files plus the
        WAL, one consistent point of the write sequence. Blocks are single batches, so the
        checkpoint holds whole blocks only, whatever append was running at the time."""
        Checkpoint(self._db).create_checkpoint(str(path))

    # -- the one write path ----------------------------------------------------------------------

    def commit(self, c: Commit, extra_meta: Mapping[bytes, bytes] | None = None) -> None:
        """Write block + indexes + state + blobs + head as one synced batch."""
        self.commit_group([c], extra_meta)

    def commit_group(self, commits: Sequence[Commit], extra_meta: Mapping[bytes, bytes] | None = None) -> None:
        """Consecutive blocks in ONE synced batch (group commit): all of them are durable, or none
        is; each block's writes are whole inside it and the head pointer ends at the last."""
        wb = WriteBatch(raw_mode=True)
        h = self._handles
        for c in commits:
            for cf, key, value in batch_entries(c, extra_meta):
                wb.put(key, value, h[cf])
        self._db.write(wb, self._sync)


def batch_entries(c: Commit, extra_meta: Mapping[bytes, bytes] | None = None) -> list[tuple[str, bytes, bytes]]:
    """(column family, key, value) of every write of one block's batch, head pointer last."""
    out = [
        (CF_BLOCKS, u64_key(c.height), c.stored_block),
        (CF_INDEX, block_index_key(c.block_hash), _U64.pack(c.height)),
    ]
    out += [
        (CF_INDEX, tx_index_key(tid), _TX_LOC.pack(c.height, pos))
        for pos, tid in enumerate(c.tx_ids)
        if pos not in c.skip_tx_index
    ]
    out += [(CF_STATE, key, value) for key, value in c.state.items()]
    out += [(CF_BLOBS, cid.encode(), data) for cid, data in c.blobs.items()]
    out += [(CF_META, key, value) for key, value in (extra_meta or {}).items()]
    out.append((CF_META, META_HEAD, _U64.pack(c.height)))
    return out
