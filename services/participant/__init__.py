"""The participant service: the federated-learning client of one identity.

It follows the chain (Ledger.StreamBlocks), and for every round that opens asks its prover for a
proof, builds and signs the SubmitProof (zkpot.zkp.submission), submits it to a validator (failing
over to the next), waits for inclusion and, under secure aggregation, runs the masking and
unmasking phases. Its state (what it signed for which round, its mask secrets) is written to disk
before anything is sent, so a restart never submits twice. It loads neither torch nor ezkl.
"""
