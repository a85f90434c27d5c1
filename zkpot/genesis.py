"""The genesis file: chain id, validator set, participants and the signed task publication."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from zkpot import chain
from zkpot.coin import CoinError, CoinPublic
from zkpot.errors import StartupError
from zkpot.v1 import types_pb2


class GenesisFileError(StartupError, ValueError):
    """A genesis file that is missing, unreadable or not a valid genesis."""

@dataclass(frozen=True)
class Member:
    name: str
    public_key: bytes
    validator: bytes = b""  # for a participant: the validator it operates (may lead); empty: none


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time_ms: int
    validators: tuple[Member, ...]
    participants: tuple[Member, ...]
    publish_task: types_pb2.Transaction
    extra: dict = field(default_factory=dict, compare=False)
    # the asynchronous fallback's common coin (threshold BLS keys, genesis validator order); None: fast path only
    coin: CoinPublic | None = None

    @property
    def validator_keys(self) -> frozenset[bytes]:
        return frozenset(m.public_key for m in self.validators)

    @property
    def participant_keys(self) -> frozenset[bytes]:
        return frozenset(m.public_key for m in self.participants)

    @property
    def member_keys(self) -> frozenset[bytes]:
        """Every key genesis names (validators, participants, the task's publisher): the only senders
        of payload transactions, which carry no rule of their own (issue 18.3)."""
        return self.validator_keys | self.participant_keys | {self.manifest.publisher}

    @property
    def quorum(self) -> int:
        return chain.quorum_size(len(self.validators))

    @property
    def manifest(self) -> types_pb2.TaskManifest:
        return self.publish_task.publish_task.manifest

    @property
    def task_id(self) -> bytes:
        return self.publish_task.publish_task.task_id

    def name_of(self, key: bytes) -> str:
        for m in (*self.validators, *self.participants):
            if m.public_key == key:
                return m.name
        return key[:4].hex()

    def block(self) -> types_pb2.Block:
        """Block 0: the task publication, identical on every replica."""
        txs = [self.publish_task]
        header = types_pb2.BlockHeader(
            chain_id=self.chain_id,
            height=0,
            view=0,
            parent_hash=chain.GENESIS_PARENT,
            proposer=self.publish_task.sender,
            txs_root=chain.txs_root(txs),
            timestamp_ms=self.genesis_time_ms,
        )
        return types_pb2.Block(header=header, txs=txs)

    def to_json(self) -> str:
        return json.dumps(
            {
                "chain_id": self.chain_id,
                "genesis_time_ms": self.genesis_time_ms,
                "validators": [{"name": m.name, "public_key": m.public_key.hex()} for m in self.validators],
                "participants": [
                    {"name": m.name, "public_key": m.public_key.hex(), "validator": m.validator.hex()}
                    for m in self.participants
                ],
                "task_id": self.task_id.hex(),
                "publish_task_tx": base64.b64encode(self.publish_task.SerializeToString()).decode(),
                **({"coin": self.coin.to_json()} if self.coin is not None else {}),
                **self.extra,
            },
            indent=2,
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> Genesis:
        try:
            return cls._load(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # json, base64, protobuf, hex, coin, check()
            raise GenesisFileError(f"genesis {path}: cannot use it ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _load(cls, path: Path) -> Genesis:
        data = json.loads(Path(path).read_text())
        tx = types_pb2.Transaction.FromString(base64.b64decode(data["publish_task_tx"]))
        genesis = cls(
            chain_id=data["chain_id"],
            genesis_time_ms=int(data["genesis_time_ms"]),
            validators=tuple(Member(m["name"], bytes.fromhex(m["public_key"])) for m in data["validators"]),
            participants=tuple(
                Member(m["name"], bytes.fromhex(m["public_key"]), bytes.fromhex(m.get("validator", "")))
                for m in data["participants"]
            ),
            publish_task=tx,
            extra={k: v for k, v in data.items() if k not in _KNOWN},
            coin=CoinPublic.from_json(data["coin"]) if "coin" in data else None,
        )
        genesis.check()
        return genesis

    def check(self) -> None:
        if not self.validators:
            raise ValueError("genesis names no validators")
        if len(self.validator_keys) != len(self.validators):
            raise ValueError("genesis lists a validator key twice")
        if self.publish_task.WhichOneof("body") != "publish_task":
            raise ValueError("genesis transaction is not a task publication")
        if not chain.tx_signature_ok(self.publish_task):
            raise ValueError("genesis task publication has a bad signature")
        if self.publish_task.sender != self.manifest.publisher:
            raise ValueError("genesis task is not signed by its publisher")
        if chain.task_id(self.manifest) != self.task_id:
            raise ValueError("genesis task id does not match its manifest")
        if self.coin is not None:
            n = len(self.validators)
            if len(self.coin.share_keys) != n:
                raise CoinError(f"genesis coin has {len(self.coin.share_keys)} share keys for {n} validators")
            f = n - self.quorum
            if self.coin.threshold < f + 1:  # f Byzantine shares alone must not make it
                raise CoinError(f"genesis coin threshold {self.coin.threshold} is below f+1 = {f + 1}")
            if self.coin.threshold > n - f:  # f silent validators must not block every coin
                raise CoinError(f"genesis coin threshold {self.coin.threshold} is above n-f = {n - f}")


_KNOWN = {"chain_id", "genesis_time_ms", "validators", "participants", "task_id", "publish_task_tx", "coin"}
