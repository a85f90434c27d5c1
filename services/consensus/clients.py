"""The validator's own ledger and verifier services, as seen from consensus."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import grpc

from zkpot import chain, grpcutil, refusal
from zkpot.refusal import Refusal
from zkpot.v1 import ledger_pb2, ledger_pb2_grpc, types_pb2, verifier_pb2, verifier_pb2_grpc

from .checks import tx_shape_refusal
from .runtime import REAL, Runtime

LEDGER_DEADLINE_S = 30.0
VERIFY_DEADLINE_S = 600.0  # a batch of real proofs takes a while
CACHE_ENTRIES = 200_000
SIGNATURE_PARTS = 2  # a batch's signature checks run in this many parts at once (the bulk pool has 2 workers)
SPLIT_FROM = 32  # smaller batches stay in one part: two thread hand-offs would save them little
BAD_SIGNATURE = Refusal(refusal.BAD_SIGNATURE, "transaction signature does not verify")
NO_VERDICT = Refusal(refusal.VERIFIER_UNAVAILABLE, "no verdict for this transaction")


class LedgerClient:
    def __init__(self, target: str) -> None:
        self.target = target
        # the ledger is this replica's own: when it restarts, be back within a second or two
        self._channel = grpcutil.channel(target, options=grpcutil.FAST_RECONNECT_OPTIONS)
        self.stub = ledger_pb2_grpc.LedgerStub(self._channel)

    async def head(self) -> ledger_pb2.HeadResponse:
        return await self.stub.Head(ledger_pb2.HeadRequest(), timeout=LEDGER_DEADLINE_S)

    async def block_at(self, height: int) -> ledger_pb2.StoredBlock | None:
        return await self._get(ledger_pb2.GetBlockRequest(height=height))

    async def block_by_hash(self, block_hash: bytes) -> ledger_pb2.StoredBlock | None:
        return await self._get(ledger_pb2.GetBlockRequest(block_hash=block_hash))

    async def _get(self, req: ledger_pb2.GetBlockRequest) -> ledger_pb2.StoredBlock | None:
        try:
            return await self.stub.GetBlock(req, timeout=LEDGER_DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def blocks(self, from_height: int, limit: int) -> list[ledger_pb2.StoredBlock]:
        resp = await self.stub.GetBlocks(
            ledger_pb2.GetBlocksRequest(from_height=from_height, limit=limit), timeout=LEDGER_DEADLINE_S
        )
        return list(resp.blocks)

    async def append(self, block: types_pb2.Block, qc: types_pb2.QuorumCert) -> ledger_pb2.AppendResponse:
        return await self.stub.Append(ledger_pb2.AppendRequest(block=block, qc=qc), timeout=LEDGER_DEADLINE_S)

    async def leader_schedule(self) -> ledger_pb2.LeaderScheduleResponse:
        return await self.stub.LeaderSchedule(ledger_pb2.LeaderScheduleRequest(), timeout=LEDGER_DEADLINE_S)

    async def close(self) -> None:
        await self._channel.close()


class _Lru(OrderedDict):
    def put(self, key: object, value: object) -> None:
        self[key] = value
        if len(self) > CACHE_ENTRIES:
            self.popitem(last=False)


class TxChecker:
    """Signature and proof checks of transactions, cached so a tx admitted earlier is free in a block.

    Signatures are cached by (tx id, signature) — the id does not cover the signature — and
    verifier verdicts by tx id (the id covers the proof and every claim it binds).
    """

    def __init__(self, verifier_target: str | None, runtime: Runtime = REAL) -> None:
        self.rt = runtime
        self.verifier_target = verifier_target
        self._channel = grpcutil.channel(verifier_target) if verifier_target else None
        self._stub = verifier_pb2_grpc.VerifierStub(self._channel) if self._channel else None
        self._sig_ok: _Lru = _Lru()
        self._sig_inflight: dict[tuple[bytes, bytes], asyncio.Future] = {}
        self._verdicts: _Lru = _Lru()
        self._failures: _Lru = _Lru()  # last failure to get a verdict (not a verdict: retried next time)
        self._inflight: dict[bytes, asyncio.Future] = {}

    async def refusals(
        self, txs: list[types_pb2.Transaction], ids: list[bytes], bulk: bool = False, split: bool = False
    ) -> list[Refusal | None]:
        """Per transaction: None if it is valid, else why not. `bulk`: admission (its own pool),
        not a proposal's check. `split`: check the signatures in parts at once (_check_signatures)."""
        out: list[Refusal | None] = [tx_shape_refusal(tx) for tx in txs]
        await self._check_signatures(txs, ids, out, bulk, split)
        proofs = [i for i in range(len(txs)) if out[i] is None and txs[i].WhichOneof("body") == "submit_proof"]
        if proofs and self._stub is None:
            for i in proofs:
                out[i] = Refusal(refusal.VERIFIER_UNAVAILABLE,
                                 "this replica has no verifier configured for submit_proof")
            return out
        # one Verify call for the txs nobody is verifying yet; wait for the ones in flight
        # (a proposal often arrives while the gossip copy of the same proof is being verified)
        ask = [i for i in proofs if ids[i] not in self._verdicts and ids[i] not in self._inflight]
        if ask:
            call = asyncio.ensure_future(self._verify([txs[i] for i in ask], [ids[i] for i in ask]))
            for i in ask:
                self._inflight[ids[i]] = call
        waits = {self._inflight[ids[i]] for i in proofs if ids[i] in self._inflight}
        if waits:
            await asyncio.gather(*(asyncio.shield(w) for w in waits))  # a cancelled caller must not cancel others
        for i in proofs:
            if out[i] is not None:
                continue
            verdict = self._verdicts.get(ids[i])
            if verdict is None:
                out[i] = self._failures.get(ids[i], NO_VERDICT)
            elif verdict.reason != refusal.ACCEPTED:
                out[i] = verdict
        return out

    async def _check_signatures(
        self, txs: list[types_pb2.Transaction], ids: list[bytes], out: list[Refusal | None], bulk: bool = False,
        split: bool = False,
    ) -> None:
        """Each signature is verified once per replica: cached when good, and a tx whose check
        is already running (its gossip copy, while its proposal arrives) waits for that check
        instead of verifying it a second time."""
        mine: list[int] = []
        theirs: dict[int, asyncio.Future] = {}
        for i in range(len(txs)):
            key = (ids[i], txs[i].signature)
            if out[i] is not None or key in self._sig_ok:
                continue
            running = self._sig_inflight.get(key)
            if running is not None:
                theirs[i] = running
            else:
                mine.append(i)
        done: asyncio.Future | None = None
        if mine:
            done = asyncio.get_running_loop().create_future()
            for i in mine:
                self._sig_inflight[(ids[i], txs[i].signature)] = done
            try:
                offload = self.rt.offload_bulk if bulk else self.rt.offload
                # `split`: in parts, one per worker. PyNaCl releases the GIL, so on an idle replica a
                # batch of 250 is checked on both cores at once (25.7 -> 16.6 ms); under load the
                # caller does not split (the workers are busy anyway, and two threads taking turns
                # at the GIL for each check's Python part cost ~10 % more CPU per transaction)
                step = -(-len(mine) // SIGNATURE_PARTS) if split and len(mine) >= SPLIT_FROM else len(mine)
                parts = [mine[k : k + step] for k in range(0, len(mine), step)]
                checked = await asyncio.gather(*(
                    offload(lambda part: [chain.tx_signature_ok(txs[i], ids[i]) for i in part], part) for part in parts
                ))
                oks = [ok for part_oks in checked for ok in part_oks]
            except BaseException:
                done.cancel()  # whoever waits on this check decides for itself
                raise
            finally:
                for i in mine:
                    self._sig_inflight.pop((ids[i], txs[i].signature), None)
            bad: set[tuple[bytes, bytes]] = set()
            for i, ok in zip(mine, oks, strict=True):
                if ok:
                    self._sig_ok.put((ids[i], txs[i].signature), True)
                else:
                    out[i] = BAD_SIGNATURE
                    bad.add((ids[i], txs[i].signature))
            done.set_result(bad)
        if theirs:
            results = await asyncio.gather(*(asyncio.shield(f) for f in set(theirs.values())), return_exceptions=True)
            refused = set().union(*(r for r in results if isinstance(r, set)))
            again: list[int] = []
            for i in theirs:
                key = (ids[i], txs[i].signature)
                if key in refused:
                    out[i] = BAD_SIGNATURE
                elif key not in self._sig_ok:
                    again.append(i)
            if again:  # the other check never finished (its caller was cancelled): decide here
                oks = await self.rt.offload(lambda: [chain.tx_signature_ok(txs[i], ids[i]) for i in again])
                for i, ok in zip(again, oks, strict=True):
                    if ok:
                        self._sig_ok.put((ids[i], txs[i].signature), True)
                    else:
                        out[i] = BAD_SIGNATURE

    async def _verify(self, txs: list[types_pb2.Transaction], ids: list[bytes]) -> None:
        """Ask the verifier once; verdicts go to the cache, failures (not cached) to _failures."""
        assert self._stub is not None
        try:
            try:
                resp = await self._stub.Verify(verifier_pb2.VerifyRequest(txs=txs), timeout=VERIFY_DEADLINE_S)
            except grpc.aio.AioRpcError as exc:
                for tx_id in ids:
                    self._failures.put(tx_id, Refusal(refusal.VERIFIER_UNAVAILABLE, f"Verify: {exc.code().name}"))
                return
            by_id = {r.tx_id: r for r in resp.results}
            for tx_id in ids:
                r = by_id.get(tx_id)
                if r is None:
                    self._failures.put(tx_id, NO_VERDICT)
                    continue
                # accepted only when both say so; a refusal without a reason (or a contradictory
                # verdict) is an invalid proof, never a pass
                if r.valid and r.reason == refusal.ACCEPTED:
                    code = refusal.ACCEPTED
                elif not r.valid and r.reason not in (refusal.ACCEPTED, refusal.UNSPECIFIED):
                    code = r.reason
                else:
                    code = refusal.INVALID_PROOF
                self._verdicts.put(tx_id, Refusal(code, r.detail))
                self._failures.pop(tx_id, None)
        finally:
            for tx_id in ids:
                self._inflight.pop(tx_id, None)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
