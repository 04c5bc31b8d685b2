"""The single writer (`engine.Scheduler`) and the use cases that go through it, one module per
resource (`groups`, `nodes`, `quotas`, `workloads`) and `stats`."""
