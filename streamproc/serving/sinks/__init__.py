"""Where the KPI snapshots go: the metric topics and the Redis snapshot, behind one interface."""
