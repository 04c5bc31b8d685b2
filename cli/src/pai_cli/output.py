"""`--output table|json`: aligned columns for people, one JSON document for scripts."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

FORMATS = ("table", "json")
EMPTY = "-"


@dataclass(frozen=True)
class Column:
    """A table column: its header and how to read its cell from a message."""

    header: str
    cell: Callable[[Any], str]


def to_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping of a message, with unset scalars shown, so scripts see every field."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


# Cell readers, for building columns.


def field(name: str) -> Callable[[Any], str]:
    """A scalar field as text; empty strings shown as `-`."""

    def read(message: Any) -> str:
        value = getattr(message, name)
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value) if value not in ("", None) else EMPTY

    return read


def last_segment(name: str) -> Callable[[Any], str]:
    """The id at the end of a resource name (`workspaces/ml` → `ml`)."""

    def read(message: Any) -> str:
        value = str(getattr(message, name))
        return value.rsplit("/", 1)[-1] or EMPTY

    return read


def enum(name: str, strip: str = "") -> Callable[[Any], str]:
    """An enum field by its value name (`ACTIVE`), with an optional prefix removed."""

    def read(message: Any) -> str:
        descriptor = message.DESCRIPTOR.fields_by_name[name].enum_type
        value = descriptor.values_by_number.get(getattr(message, name))
        return value.name.removeprefix(strip) if value is not None else str(getattr(message, name))

    return read


def timestamp(name: str) -> Callable[[Any], str]:
    """A `google.protobuf.Timestamp` field in UTC, to the second; `-` when unset."""

    def read(message: Any) -> str:
        if not message.HasField(name):
            return EMPTY
        moment: dt.datetime = getattr(message, name).ToDatetime(tzinfo=dt.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%SZ")

    return read


class Output:
    """Writes results in the chosen format to stdout, and notes for people to stderr."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt

    @property
    def json(self) -> bool:
        """Whether scripts are reading."""
        return self.format == "json"

    def resources(self, items: Sequence[Message], columns: Sequence[Column], noun: str) -> None:
        """A list: a JSON array, or a table with one row per item."""
        if self.json:
            self.document([to_dict(item) for item in items])
        elif not items:
            self.line(f"no {noun}")
        else:
            self.table([c.header for c in columns], [[c.cell(item) for c in columns] for item in items])

    def resource(self, item: Message, columns: Sequence[Column]) -> None:
        """One resource: a JSON object, or one `HEADER  value` line per column."""
        if self.json:
            self.document(to_dict(item))
        else:
            self.record([(c.header, c.cell(item)) for c in columns])

    def document(self, value: Any) -> None:
        """One JSON document on stdout."""
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Left-aligned columns separated by two spaces."""
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        for row in [headers, *rows]:
            self.line("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def record(self, pairs: Sequence[tuple[str, str]]) -> None:
        """`KEY:  value` lines, values aligned."""
        width = max((len(key) for key, _ in pairs), default=0) + 1
        for key, value in pairs:
            self.line(f"{key + ':':<{width}}  {value}")

    def line(self, text: str = "") -> None:
        """A line on stdout."""
        sys.stdout.write(text + "\n")

    def note(self, text: str) -> None:
        """A line for people on stderr, out of the way of the data on stdout."""
        sys.stderr.write(text + "\n")
