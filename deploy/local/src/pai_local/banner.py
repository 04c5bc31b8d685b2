"""What the supervisor prints once everything has started: where things are, what to do next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pai_local.console import Console

LAST_LINE = "Ctrl-C stops everything."


@dataclass(frozen=True)
class ServiceLine:
    """One service in the summary."""

    name: str
    address: str
    log: Path
    ready: bool


@dataclass(frozen=True)
class Facts:
    """Everything the summary mentions."""

    nats_url: str
    nats_embedded: bool
    nats_ready: bool
    nats_store: Path
    services: Sequence[ServiceLine]
    credentials: Path | None  # None when auth is not part of this stack
    new_admin_key: str | None  # set only on the run that created it


def print_banner(console: Console, facts: Facts) -> None:
    """Print the summary, the new admin key (once) and the next steps."""
    say = console.say
    width = max([4, *(len(service.name) for service in facts.services)])
    say("")
    if facts.nats_embedded:
        state = "" if facts.nats_ready else "  NOT READY"
        say(f"{'nats':<{width}}  {facts.nats_url}  (JetStream, data in {facts.nats_store}){state}")
    else:
        say(f"{'nats':<{width}}  {facts.nats_url}  (external, PAI_NATS_URL)")
    for service in facts.services:
        state = "" if service.ready else "  NOT READY yet, see the log"
        say(f"{service.name:<{width}}  {service.address}  (log {service.log}){state}")
    say("")
    if facts.new_admin_key:
        say("Admin API key (shown once; saved with the endpoint in the credentials file):")
        say(f"    {facts.new_admin_key}")
    if facts.credentials is not None:
        say(f"The pai CLI reads {facts.credentials}. Next steps:")
        say("    pai status              health of NATS and every service")
        say("    pai workspace list      the `default` workspace is there already")
        say("    pai key create --help   API keys for other users and service accounts")
    say(LAST_LINE)
