"""The zero-knowledge pipeline shared by the task publisher, the prover and the verifier.

data     — digits data, the public test set, non-IID private shards
arch     — a task's architecture spec (MLP, CNN layers) and its torch module
model    — the task's module, its fixed-point encoding, local training
circuit  — the accuracy circuit, ezkl settings / witness / prove / verify, instance rebuilding
task     — task creation (publisher) and loading (prover, verifier)
"""
