"""HotStuff-style replica (2-chain, Jolteon-style) as a grpc.aio service.

Modules, one job each (in the spirit of asonnino/hotstuff):
- ``safety``      persisted safety state (last voted view, high QC, highest timeout view) + the voting rule
- ``aggregator``  votes -> QC, timeouts -> TC (a second message from one signer never counts)
- ``leader``      leader of a view from the ledger's leader schedule (zkpot.schedule), skipping
                  validators that failed to lead earlier in the epoch (evidence: committed TC gaps)
- ``runtime``     clocks and off-loop CPU work (virtual time and inline work in the simulator)
- ``blockstore``  the tree of uncommitted blocks above the committed tip + the 2-chain commit rule
- ``mempool``     admitted transactions: dedupe by id, count/byte caps, batches for proposals
- ``checks``      stateless validation of proposals, blocks, certificates and transactions
- ``network``     one grpc.aio channel per peer, fire-and-forget sends with deadlines
- ``clients``     the local ledger and verifier services
- ``synchronizer`` fetches missing ancestors from peers (FetchBlocks), bounded walks
- ``pacemaker``   view timer with exponential backoff
- ``core``        the event handlers (proposal, vote, timeout, local timeout, propose, commit)
- ``server``      the Consensus servicer and process wiring; ``cli`` the command line

Why 2-chain (Jolteon, Gelashvili et al. 2021) rather than 3-chain HotStuff: a block commits as
soon as its child is certified and the two views are consecutive, so the happy path commits in
~5 message delays instead of 7. The price is that the view change is no longer linear: a new
leader entering a view by timeout must carry a timeout certificate (TC, 2f+1 signed timeouts each
naming its sender's highest QC), and a replica votes for a block in view v only if
v == parent_qc.view + 1 or the proposal carries a TC for v-1 and parent_qc.view is at least the
highest QC view inside that TC. Any block committed by a 2-chain has a QC held by f+1 honest
replicas, so every TC contains a QC at least that high and every later certified block extends
it: the same safety as 3-chain HotStuff. A replica that signed a timeout for view v never votes
in v (highest_timeout_view), and the safety state is fsynced before any vote or timeout leaves.

Departure from the textbook message pattern: votes are sent to every replica, not only to
leader(v+1). With n = 4 that is 12 small messages per view instead of 3, and it buys two things:
a crashed next leader costs one timeout (its own view) instead of two (the QC of the view before
would die with it), and every replica commits when it sees the QC rather than one proposal later.

Flow of one view v (happy path): leader(v) holds QC(v-1) -> proposes B_v extending it ->
replicas check B_v (signatures, parent QC, every tx: signature + verifier, cached), persist
last_voted_view = v, broadcast their vote -> anyone with 2f+1 votes holds QC(v): it updates its
high QC, commits B_{v-1} and its ancestors if B_v.view == B_{v-1}.view + 1 (appending them to the
local ledger in height order, each with the QC carried by its child), and enters view v+1.
Pacing: a leader proposes within --min-block-interval-ms when there is work (new txs, or txs in
the last two certified blocks that still need two more blocks to commit), else an empty block
after --idle-block-ms. Pacemaker: see ``pacemaker``; a view's timer covers the idle wait.
"""
