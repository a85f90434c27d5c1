"""Proof verifier service: checks SubmitProof transactions against the chain's task.

Modules: ``worker`` (zkpot.zkp.verify in a worker process, task loaded once), ``cache`` (verdicts by
transaction), ``server`` (gRPC Verifier service), ``cli`` (`zkpot verifier serve`).
"""
