"""``groundrec eval``: splits, systems, metrics, statistics and the report."""
