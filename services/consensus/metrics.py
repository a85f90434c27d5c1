"""The consensus service's Prometheus series (names are what the dashboards query)."""

from __future__ import annotations

from zkpot import metrics

height = metrics.gauge("zkpot_consensus_height", "Committed height (decided by consensus)")
appended_height = metrics.gauge("zkpot_consensus_appended_height", "Highest height appended to the local ledger")
view = metrics.gauge("zkpot_consensus_view", "Current view")
view_changes = metrics.counter("zkpot_consensus_view_changes_total", "View changes by cause", ["cause"],
                               known=("qc", "tc", "join", "fallback"))
commit_latency = metrics.histogram(
    "zkpot_consensus_commit_latency_seconds", "From first sight of a proposal to its commit on this replica"
)
qc_formation = metrics.histogram(
    "zkpot_consensus_qc_formation_seconds", "From this leader's first vote for a block to its QC"
)
mempool_txs = metrics.gauge("zkpot_consensus_mempool_txs", "Transactions in the mempool")
mempool_bytes = metrics.gauge("zkpot_consensus_mempool_bytes", "Bytes of transactions in the mempool")
evicted_txs = metrics.counter("zkpot_consensus_evicted_txs_total",
                              "Admitted transactions evicted from a full mempool for a lighter sender's")
votes_sent = metrics.counter("zkpot_consensus_votes_sent_total", "Votes this replica signed")
votes_received = metrics.counter("zkpot_consensus_votes_received_total", "Valid votes received")
timeouts_sent = metrics.counter("zkpot_consensus_timeouts_sent_total", "Timeouts this replica signed")
proposals = metrics.counter("zkpot_consensus_proposals_total", "Blocks this replica proposed")
committed_blocks = metrics.counter("zkpot_consensus_committed_blocks_total", "Blocks committed")
views_led = metrics.counter("zkpot_consensus_views_led_total",
                            "Committed blocks by proposer: views each validator led (proven scores weight it)",
                            ["validator"])
committed_txs = metrics.counter("zkpot_consensus_committed_txs_total", "Transactions committed")
sync_requests = metrics.counter("zkpot_consensus_sync_requests_total", "FetchBlocks requests sent", ["result"],
                                 known=("ok", "not_found"))
sync_blocks = metrics.counter("zkpot_consensus_sync_blocks_total", "Blocks fetched by the walk back through parents",
                              ["outcome"], known=("delivered", "refused"))
catchup_requests = metrics.counter("zkpot_consensus_catchup_requests_total",
                                   "Forward catch-up requests (FetchBlocks by height), by result", ["result"],
                                   known=("ok", "not_found", "invalid"))
catchup_blocks = metrics.counter("zkpot_consensus_catchup_blocks_total",
                                 "Blocks received by forward catch-up, by outcome", ["outcome"],
                                 known=("committed", "uncommitted_tail", "refused"))
rejected = metrics.counter("zkpot_consensus_rejected_messages_total", "Rejected consensus messages", ["reason"],
                            known=("bad_signature", "unknown_signer", "bad_qc", "wrong_leader", "stale"))
rejected_txs = metrics.counter("zkpot_consensus_rejected_txs_total", "Transactions refused admission", ["reason"],
                                known=("bad_signature", "invalid_proof", "duplicate", "malformed"))
admitted_txs = metrics.counter("zkpot_consensus_admitted_txs_total", "Transactions admitted to the mempool")
send_failures = metrics.counter("zkpot_consensus_send_failures_total", "Failed sends to peers", ["rpc"],
                                known=("Propose", "SendVote", "StreamVotes", "SendTimeout", "SendCoinShare"))
append_failures = metrics.counter("zkpot_consensus_ledger_append_failures_total", "Failed ledger appends")
stale_timers = metrics.counter("zkpot_consensus_stale_timers_total",
                               "View timers that ran out for a view the replica had already left")
gossip_dropped = metrics.counter("zkpot_consensus_gossip_dropped_txs_total",
                                 "Transactions not gossiped to a peer that had too many bytes in flight")
regossiped_txs = metrics.counter("zkpot_consensus_regossiped_txs_total", "Mempool transactions gossiped again")

# the asynchronous fallback (fallback.py)
fallback_entries = metrics.counter("zkpot_consensus_fallback_entries_total",
                                   "Fallbacks entered (a fast-path view timed out)")
fallback_exits = metrics.counter("zkpot_consensus_fallback_exits_total",
                                 "Fallbacks left, by what the coin's chain had: commit (height 2 certified), "
                                 "certified (height 1), nothing; overtaken: a later certificate arrived first",
                                 ["outcome"], known=("commit", "certified", "nothing", "overtaken"))
fallback_active = metrics.gauge("zkpot_consensus_fallback_active", "1 while in the fallback")
fallback_coin_latency = metrics.histogram("zkpot_consensus_fallback_coin_latency_seconds",
                                          "From entering a fallback to holding its coin")
fallback_seconds = metrics.histogram("zkpot_consensus_fallback_seconds", "From entering a fallback to leaving it")
fallback_views = metrics.histogram("zkpot_consensus_fallback_views",
                                   "Views from the timed-out view v to the fast view resumed (3: v+1 and v+2 "
                                   "were the fallback's; more: it was overtaken)", buckets=(3, 4, 6, 10, 20, 50))
fallback_helped = metrics.counter("zkpot_consensus_fallback_coins_resent_total",
                                  "Coins sent to a replica still in a fallback this one had left")
fallback_votes_sent = metrics.counter("zkpot_consensus_fallback_votes_total", "Fallback votes this replica sent")
fallback_resends = metrics.counter("zkpot_consensus_fallback_resends_total",
                                   "Rounds of resending this replica's fallback messages")
