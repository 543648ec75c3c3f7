"""Partial summaries: how whole metrics (ratios, means, quantiles) get all of their facts.

Leads are partitioned by ``lead_id``, so one rep's facts lie on every partition. Each
worker publishes, per owned partition and owner key, the window accumulators that the
partition contributes (``key = owner key + partition``), to the partition of the internal
topic that the owner key hashes to. The worker that owns that partition keeps the latest
summary per (owner key, source partition) in a changelogged table and merges them: it
alone exports the key's whole metrics. A summary replaces the previous one from the same
source partition, so re-publishing after a crash or a rebalance never double counts.

A summary the previous owner of a partition sent, for an owner key the new owner never
has, would stay forever (a worker killed after a lead's late lead-created moved its close
away from source ``unknown``, before it retracted that summary). So every full round of a
partition, and the first round of a partition newly owned, is bracketed by sweep markers
on every partition of the topic: the owner side (``PartialsInbox``) drops the summaries of
that partition the bracket did not send again.
"""
