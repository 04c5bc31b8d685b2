"""Request ids (AIP-155): a retried create gets what the first one made; an id reused for another
request is refused."""

from __future__ import annotations

from pai_common.errors import InvalidArgument, bad_request


def request_id_conflict() -> InvalidArgument:
    return bad_request(
        "request_id",
        "request_id was already used for another request",
        "REQUEST_ID_CONFLICT",
        description="already used for another request",
    )


def same_request(created: object, key: object) -> bool:
    """Whether the request id that created `created` (None: nothing yet) made the resource at `key`
    (so this is a retry); one that created something else is a conflict."""
    if created is None:
        return False
    if created == key:
        return True
    raise request_id_conflict()
