"""Clients of the other services dlc calls (scheduler, lineage), behind the app's ports."""
