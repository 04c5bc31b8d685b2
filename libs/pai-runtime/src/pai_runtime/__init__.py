"""The shared runtime for processes on admitted capacity (training replicas, model servers, notebooks).

Charter: used by every service that runs user code (dlc, eas, dsw); holds no service's rules (what an
exit means, what a replica runs) and imports no service, nor grpc, SQLAlchemy or NATS. `types` is the
contract; `local`, `ray` and `kubernetes` are the backends; `logfile` is the replica log format that
owners read; `testing` starts a real two-node Ray cluster for tests.
"""
