"""Update masks (AIP-134): which fields an Update may change."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pai_common.errors import FieldViolation, InvalidArgument


def paths(
    mask_paths: Sequence[str], allowed: Iterable[str], default: Iterable[str] | None = None
) -> set[str]:
    """The fields to update: the mask's paths, each checked.

    An empty mask means `default` (every allowed field unless given): sensitive fields can be
    left out of the default so that they change only when named.
    """
    allowed_set = set(allowed)
    if not mask_paths:
        return set(default) if default is not None else allowed_set
    if list(mask_paths) == ["*"]:
        return allowed_set
    unknown = [p for p in mask_paths if p not in allowed_set]
    if unknown:
        message = f"cannot update {', '.join(unknown)}; updatable: {', '.join(sorted(allowed_set))}"
        raise InvalidArgument(
            "INVALID_UPDATE_MASK",
            message,
            violations=[FieldViolation("update_mask", message)],
        )
    return set(mask_paths)
