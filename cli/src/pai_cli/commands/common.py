"""What every command shares: the options on each of them, the run context, resource-name helpers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import cached_property
from typing import Any

from google.protobuf.message import Message

from pai.auth.v1 import identity_pb2
from pai_cli import config
from pai_cli.client import Client, collect
from pai_cli.output import FORMATS, Output

ROLES = ("owner", "admin", "developer", "viewer")

Handler = Callable[["Context"], int]
Subparsers = Any  # argparse's _SubParsersAction is private


def global_options(suppress: bool) -> argparse.ArgumentParser:
    """`--output`, `--endpoint`, `--api-key`, accepted before the command and after it.

    On the subcommands the defaults are suppressed, so `pai -o json workspace list` is not
    overridden by the subcommand's own default.
    """
    parser = argparse.ArgumentParser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=argparse.SUPPRESS if suppress else "table",
        help="output format (default: table)",
    )
    parser.add_argument("--endpoint", default=default, metavar="HOST:PORT", help="pai's gRPC address")
    parser.add_argument("--api-key", default=default, metavar="KEY", help="API key to call with")
    return parser


_LEAF_OPTIONS = global_options(suppress=True)


def add_command(
    subparsers: Subparsers, name: str, handler: Handler, help_text: str
) -> argparse.ArgumentParser:
    """A leaf command that runs `handler` and takes the global options."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text, parents=[_LEAF_OPTIONS]
    )
    parser.set_defaults(handler=handler)
    return parser


def add_group(subparsers: Subparsers, name: str, help_text: str) -> Subparsers:
    """A command with subcommands (`pai workspace ...`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(title="commands", metavar="COMMAND", required=True)


def add_workspace_option(parser: argparse.ArgumentParser) -> None:
    """`--workspace`, defaulting to PAI_WORKSPACE, the credentials' `workspace`, then `default`."""
    parser.add_argument(
        "-w",
        "--workspace",
        metavar="WORKSPACE",
        help="workspace id (default: $PAI_WORKSPACE, `workspace` in the credentials, else `default`)",
    )


def add_limit_option(parser: argparse.ArgumentParser) -> None:
    """`--limit N`: stop after N items instead of reading every page."""
    parser.add_argument("--limit", type=positive_int, metavar="N", help="show at most N items (default: all)")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def role(text: str) -> identity_pb2.Role.ValueType:
    """The `Role` enum value of `owner|admin|developer|viewer`."""
    return identity_pb2.Role.Value(text.upper())


def qualify(value: str, collection: str) -> str:
    """`bob` → `users/bob`; a value that already is a resource name is kept."""
    return value if "/" in value else f"{collection}/{value}"


class Context:
    """One run of one command: its arguments, the resolved config, a client made on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._client: Client | None = None

    @cached_property
    def config(self) -> config.Config:
        """Flags, then environment, then credentials file."""
        return config.load(endpoint=self.args.endpoint, api_key=self.args.api_key)

    @cached_property
    def output(self) -> Output:
        """The chosen output format."""
        return Output(self.args.output)

    @property
    def client(self) -> Client:
        """A client for the configured endpoint and key; the "not logged in" error if there are none."""
        if self._client is None:
            endpoint, api_key = self.config.require_login()
            self._client = Client(endpoint, api_key)
        return self._client

    @property
    def workspace(self) -> str:
        """The workspace's resource name, `workspaces/{id}`."""
        chosen = getattr(self.args, "workspace", None) or self.config.workspace
        return qualify(chosen, "workspaces")

    def in_workspace(self, collection: str, value: str) -> str:
        """`mnist` → `workspaces/{w}/{collection}/mnist` in the chosen workspace; a full name is kept."""
        return value if value.startswith("workspaces/") else f"{self.workspace}/{collection}/{value}"

    def list_all(
        self, method: Callable[..., Any], request: Callable[[str, int], Message], field: str
    ) -> list[Any]:
        """Every item of a List method (or the first `--limit`), page after page; `request(token, size)`
        makes one page's request and `field` names the items in its response."""

        def fetch(token: str, size: int) -> tuple[list[Any], str]:
            page = self.client.call(method, request(token, size))
            return list(getattr(page, field)), str(getattr(page, "next_page_token"))  # noqa: B009

        return collect(fetch, getattr(self.args, "limit", None))

    def close(self) -> None:
        """Close the client if one was made."""
        if self._client is not None:
            self._client.close()
            self._client = None


def report_deleted(ctx: Context, name: str) -> None:
    """What a delete prints: `{"name": ..., "deleted": true}` or `deleted <name>`."""
    if ctx.output.json:
        ctx.output.document({"name": name, "deleted": True})
    else:
        ctx.output.line(f"deleted {name}")
