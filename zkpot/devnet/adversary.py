"""The devnet's attack checks: an outsider with a real committed proof in hand tries the cheats a
participant could (tampered proof, raised claim, the proof under another key, a replay into the next
round); every one must be refused at admission. Not a participant's role: this is the adversary."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from zkpot import chain, refusal
from zkpot.crypto import KeyPair
from zkpot.v1 import consensus_pb2, consensus_pb2_grpc, types_pb2

if TYPE_CHECKING:
    from zkpot.devnet.network import Devnet


def forged_variants(net: Devnet, tx: types_pb2.Transaction) -> list[tuple[str, types_pb2.Transaction]]:
    """Cheats a participant could try with a real proof in hand; each must be refused."""
    owner = KeyPair.load(net.plan.participants[0].key_path)
    thief = KeyPair.load(net.plan.participants[-1].key_path) if len(net.plan.participants) > 1 else KeyPair.generate()
    variants = []

    def variant(name: str, key: KeyPair, edit: Callable[[types_pb2.SubmitProof], None]) -> None:
        forged = types_pb2.Transaction()
        forged.CopyFrom(tx)
        edit(forged.submit_proof)
        forged.submit_proof.participant = key.public
        forged.nonce = 1  # a new transaction, not a duplicate of the honest one
        variants.append((name, chain.sign_tx(key, forged)))

    def tamper(sp: types_pb2.SubmitProof) -> None:
        target = sp.shards[0] if sp.shards else sp
        proof = bytearray(target.proof)
        proof[len(proof) // 2] ^= 0x01
        target.proof = bytes(proof)

    def inflate(sp: types_pb2.SubmitProof) -> None:
        sp.claimed_correct = sp.claimed_correct + 1

    def replay(sp: types_pb2.SubmitProof) -> None:
        sp.round = sp.round + 1

    variant("tampered_proof", owner, tamper)
    variant("inflated_claim", owner, inflate)
    variant("copied_to_other_submitter", thief, lambda sp: None)
    variant("replayed_next_round", owner, replay)
    return variants


async def run_attack_checks(net: Devnet, consensus: consensus_pb2_grpc.ConsensusStub,
                            tx: types_pb2.Transaction, r: int) -> None:
    for name, forged in forged_variants(net, tx):
        resp = await consensus.SubmitTx(consensus_pb2.SubmitTxRequest(txs=[forged]), timeout=120)
        result = resp.results[0]
        rejected = result.reason != refusal.ACCEPTED
        net.attacks.append({"round": r, "attack": name, "rejected": rejected, "reason": refusal.label(result.reason),
                            "detail": result.detail})
        verdict = "rejected" if rejected else "ADMITTED (bug!)"
        net.progress.say(f"attack check, round {r}: {name} {verdict}: {refusal.text(result.reason, result.detail)}")
