"""Fixtures for every test in the repository: a real nats-server and real databases."""

pytest_plugins = ["pai_common.testing"]
