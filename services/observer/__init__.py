"""The observer: a read-only client of one ledger that turns committed rounds into learning metrics
(global accuracy per round, accepted participants, leader schedule) for Prometheus and Grafana.

It evaluates each round's aggregated global model on the task's public test set, which every
observer can do: the test set and the aggregate are public; individual models are never needed.
"""
