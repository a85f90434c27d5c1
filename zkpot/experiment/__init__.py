"""`zkpot experiment`: federated learning under attack, measured.

Centralized training, plain FedAvg without proofs (in-process, same shards, same local training,
same fixed-point aggregation) and ZKPoT on the real services (one devnet per scenario), at several
fractions of Byzantine participants; writes results.json, results.md and PNG plots.
"""
