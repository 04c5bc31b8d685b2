"""The scheduler's rules in plain Python: records and names, the quota tree, the placement engine, a
group's scheduler in layers (capacity → queues → admission → preemption → scheduling), explanations,
list filters, usage and stats."""
