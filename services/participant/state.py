"""The participant's durable state: what it signed for which round, and its mask secrets.

Persist before you promise: every transaction is written (and fsynced) here before it is sent the
first time, so a participant killed at any point and restarted resends the very same bytes (same
transaction id: the chain takes it at most once) instead of proving and signing again. The mask
secrets of a secure-aggregation round are in the same record as the SubmitProof that deals their
shares, so a secret whose shares went out is never lost.

Layout: <data-dir>/identity.json (which key and task the directory belongs to) and, per round,
rounds/<round>.json: the record, its transactions and secrets in one file written in one atomic
rename (mode 0600: it holds secrets), so a crash leaves either all of it or the previous version.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from zkpot.durable import write_atomic
from zkpot.errors import StartupError
from zkpot.v1 import participant_pb2, types_pb2

TX_KINDS = ("submit", "masked", "reveal")


class StateDirError(StartupError):
    """The data directory belongs to another participant or task, or cannot be read."""


@dataclass
class RoundRecord:
    """One round as this participant has played it (the secrets are never sent anywhere)."""

    round: int
    stage: str = "proving"
    tx_id: str = ""               # hex; the SubmitProof's id once signed
    admitted: bool = False
    reason: str = ""              # why it was refused or skipped, for people
    ledger_reason: str = ""
    refusal: int = 0              # zkpot.v1.Reason of a validator's refusal (0: none)
    ledger_refusal: int = 0       # zkpot.v1.Reason of the ledger's refusal (0: none)
    height: int = 0
    aggregated: bool = False
    claimed_correct: int = 0
    test_set_size: int = 0
    float_accuracy: float = 0.0
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    witness_seconds: float = 0.0
    prove_seconds: float = 0.0
    prover_wall_seconds: float = 0.0
    admission_seconds: float = 0.0
    commit_seconds: float = 0.0
    validator: str = ""
    attempts: int = 0
    masked_height: int = 0
    reveal_height: int = 0
    # secure aggregation (hex); written with the SubmitProof that deals their shares
    mask_secret: str = ""
    self_seed: str = ""
    committed_params: str = ""    # base64 of the committed int64 vector (big-endian), never sent
    txs: dict[str, str] = field(default_factory=dict)  # kind (TX_KINDS) -> base64 of the signed transaction

    def tx(self, kind: str) -> types_pb2.Transaction | None:
        assert kind in TX_KINDS, kind
        if kind not in self.txs:
            return None
        return types_pb2.Transaction.FromString(base64.b64decode(self.txs[kind], validate=True))

    def set_tx(self, kind: str, tx: types_pb2.Transaction) -> None:
        assert kind in TX_KINDS, kind
        self.txs[kind] = base64.b64encode(tx.SerializeToString()).decode()

    def to_proto(self) -> participant_pb2.ParticipantRound:
        names = {f.name for f in participant_pb2.ParticipantRound.DESCRIPTOR.fields}
        values = {k: v for k, v in asdict(self).items() if k in names and k != "tx_id"}
        return participant_pb2.ParticipantRound(tx_id=bytes.fromhex(self.tx_id), **values)


class ParticipantState:
    """The records of one (participant key, task) in a data directory."""

    def __init__(self, data_dir: Path, participant: bytes, task_id: bytes) -> None:
        self.dir = data_dir
        self.rounds_dir = data_dir / "rounds"
        try:
            self.rounds_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(f"cannot create the participant's data dir {data_dir}: {exc.strerror}") from exc
        ident = data_dir / "identity.json"
        mine = {"participant": participant.hex(), "task_id": task_id.hex()}
        if ident.exists():
            try:
                theirs = json.loads(ident.read_text())
            except (OSError, ValueError) as exc:
                raise StateDirError(f"{ident} is unreadable ({exc}); restore it or choose another --data-dir") from exc
            if theirs.get("participant") != mine["participant"]:
                raise StateDirError(f"{data_dir} holds the state of participant {theirs.get('participant', '?')[:16]}, "
                                    f"not of this key ({mine['participant'][:16]}); use that key or another --data-dir")
            if theirs.get("task_id") != mine["task_id"]:
                raise StateDirError(f"{data_dir} holds the state of task {theirs.get('task_id', '?')[:16]}, not of "
                                    f"this genesis's task {mine['task_id'][:16]}; use another --data-dir")
        else:
            write_atomic(ident, json.dumps(mine).encode(), 0o644)
        self.records: dict[int, RoundRecord] = {}
        known = {f.name for f in fields(RoundRecord)}
        for path in sorted(self.rounds_dir.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                rec = RoundRecord(**{k: v for k, v in raw.items() if k in known})
                for kind in rec.txs:
                    rec.tx(kind)  # parse now: a damaged record fails the start, not a later resend
            except Exception as exc:
                raise StateDirError(f"{path} is unreadable ({exc}); the participant will not guess what it "
                                    "already sent for that round") from exc
            self.records[rec.round] = rec

    def get(self, round_: int) -> RoundRecord | None:
        return self.records.get(round_)

    def save(self, rec: RoundRecord) -> None:
        self.records[rec.round] = rec
        write_atomic(self.rounds_dir / f"{rec.round}.json", json.dumps(asdict(rec), sort_keys=True).encode())

    def last_accepted_round(self) -> int:
        return max((r.round for r in self.records.values() if r.height and not r.ledger_reason), default=0)
