"""Conversions between Python values and the protobuf well-known types, shared by the mappings."""

from __future__ import annotations

import datetime as dt
from typing import overload

from google.protobuf import duration_pb2, timestamp_pb2

from pai_common.errors import FieldViolation, InvalidArgument


@overload
def ts(value: dt.datetime) -> timestamp_pb2.Timestamp: ...
@overload
def ts(value: None) -> None: ...
@overload
def ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None: ...


def ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """The one datetime → Timestamp conversion; None (the field stays unset) for None."""
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def from_ts(value: timestamp_pb2.Timestamp, field: str) -> dt.datetime:
    """A request timestamp; one out of range is INVALID_ARGUMENT on `field`."""
    try:
        return value.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError) as exc:
        message = "not a valid timestamp"
        raise InvalidArgument(
            "INVALID_ARGUMENT", f"{field}: {message}", violations=[FieldViolation(field, message)]
        ) from exc


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(dt.timedelta(seconds=seconds))
    return out
