"""Participant's prover service: trains on the local private shard and proves the round's accuracy.

Modules: ``worker`` (the heavy steps, run in a worker process), ``server`` (gRPC Prover service),
``cli`` (`zkpot prover serve`).
"""
