"""Plain-Python domain of the scheduler: resources, filters, fragmentation and placement."""
