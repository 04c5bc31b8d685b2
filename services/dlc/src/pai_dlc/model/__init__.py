"""dlc's job model: spec defaults and checks, the replica environment, exit verdicts, sweep search.

Not a `domain/` package of plain-Python entities (as the other services have): dlc keeps a job as its
API resource (`pai.dlc.v1.Job`, stored whole), so these pure functions work on the protobuf messages
directly instead of on a copy of them. They do no I/O and know nothing of the store or the engines.
"""
