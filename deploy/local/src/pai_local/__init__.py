"""pai-local: the single-machine stack (`make up`), NATS and every service under one supervisor."""
