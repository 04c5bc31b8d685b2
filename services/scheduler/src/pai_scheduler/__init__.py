"""pai scheduler: decides where workloads run; it never runs anything."""
