"""The table work ``make run`` ships: a simulated compaction of every demo table."""
