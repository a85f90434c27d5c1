"""Write genesis.json from a published task and the network's members (run by the publisher Job).

members.json (public keys only; deploy/scripts/make-secrets.sh writes it):
  {"chain_id": "zkpot-kind",
   "validators":   [{"name": "validator-0", "public_key": "<hex>"}, ...],
   "participants": [{"name": "participant-0", "public_key": "<hex>", "validator": "validator-0"}, ...]}
A participant's "validator" names the validator it operates (it may lead); "" or absent: none.
An optional "coin" section (`zkpot keys deal-coin`'s coin-public.json) turns the asynchronous
fallback on: each validator then needs its coin share (make-secrets.sh puts it beside its key).
Validator names must be the StatefulSet's pod names: consensus uses them as --node.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from zkpot.coin import CoinPublic
from zkpot.genesis import Genesis, Member


def build(members: dict, publish_tx: object, genesis_time_ms: int) -> Genesis:
    validators = tuple(Member(v["name"], bytes.fromhex(v["public_key"])) for v in members["validators"])
    by_name = {v.name: v.public_key for v in validators}
    participants = []
    for p in members.get("participants", []):
        operated = p.get("validator") or ""
        if operated and operated not in by_name:
            raise ValueError(f"participant {p['name']} names unknown validator {operated!r}")
        participants.append(Member(p["name"], bytes.fromhex(p["public_key"]), by_name.get(operated, b"")))
    genesis = Genesis(chain_id=members["chain_id"], genesis_time_ms=genesis_time_ms, validators=validators,
                      participants=tuple(participants), publish_task=publish_tx,
                      coin=CoinPublic.from_json(members["coin"]) if "coin" in members else None)
    genesis.check()
    return genesis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task-dir", type=Path, required=True)
    parser.add_argument("--members", type=Path, required=True, help="members.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from zkpot.zkp.task import load_task  # imports torch and ezkl: only when run for real

    genesis = build(json.loads(args.members.read_text()), load_task(args.task_dir).publish_tx,
                    int(time.time() * 1000))
    genesis.save(args.out)
    print(f"genesis {genesis.chain_id}: {len(genesis.validators)} validators, "
          f"{len(genesis.participants)} participants, task {genesis.task_id.hex()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
