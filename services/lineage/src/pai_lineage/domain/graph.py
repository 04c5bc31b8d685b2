"""The lineage graph's rules: which edge types join which kinds, edge ids, and walks over edges.

Kinds and types are the proto enum value names (`DATASET_VERSION`, `CONSUMED_BY`, ...) as strings,
so this module needs no generated code. Edges point with the flow of data, source -> target.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pai_common.errors import FailedPrecondition, bad_request

DATASET_VERSION = "DATASET_VERSION"
JOB = "JOB"
MODEL_VERSION = "MODEL_VERSION"
SERVICE_REVISION = "SERVICE_REVISION"
NOTEBOOK = "NOTEBOOK"
EXTERNAL = "EXTERNAL"

CONSUMED_BY = "CONSUMED_BY"
PRODUCED = "PRODUCED"
DEPLOYED_AS = "DEPLOYED_AS"
DERIVED_INTO = "DERIVED_INTO"

UPSTREAM = "UPSTREAM"
DOWNSTREAM = "DOWNSTREAM"
BOTH = "BOTH"

_DATA = frozenset({DATASET_VERSION, MODEL_VERSION, EXTERNAL})
_RUNS = frozenset({JOB, NOTEBOOK, EXTERNAL})

# type -> (allowed source kinds, allowed target kinds), as lineage.proto lists them
ALLOWED: Mapping[str, tuple[frozenset[str], frozenset[str]]] = {
    CONSUMED_BY: (_DATA, _RUNS),
    PRODUCED: (_RUNS, _DATA),
    DEPLOYED_AS: (frozenset({MODEL_VERSION}), frozenset({SERVICE_REVISION})),
    DERIVED_INTO: (_DATA, _DATA),
}

_W = r"workspaces/[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
_ID = r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
_VID = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
NAME_PATTERNS: Mapping[str, re.Pattern[str]] = {
    DATASET_VERSION: re.compile(f"^{_W}/datasets/{_ID}/versions/{_VID}$"),
    JOB: re.compile(f"^{_W}/jobs/{_ID}$"),
    MODEL_VERSION: re.compile(f"^{_W}/models/{_ID}/versions/{_VID}$"),
    SERVICE_REVISION: re.compile(f"^{_W}/services/{_ID}/revisions/{_VID}$"),
    NOTEBOOK: re.compile(f"^{_W}/notebooks/{_ID}$"),
    EXTERNAL: re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$"),
}


@dataclass(frozen=True)
class Edge:
    """One relation, as the walk sees it."""

    id: str
    source: str
    target: str
    type: str


def edge_id(source: str, type_: str, target: str) -> str:
    """The id of the relation: the same (source, type, target) always gets the same id."""
    digest = hashlib.sha256(f"{source}\n{type_}\n{target}".encode()).hexdigest()
    return f"e{digest[:39]}"


def workspace_of(name: str) -> str | None:
    """`workspaces/{w}` of a pai resource name; None for URIs."""
    parts = name.split("/")
    if len(parts) >= 2 and parts[0] == "workspaces" and parts[1] and "://" not in name:
        return f"workspaces/{parts[1]}"
    return None


def check_edge(
    source: str, source_kind: str, type_: str, target: str, target_kind: str, workspace: str, index: int = 0
) -> None:
    """An edge recorded through the API: kinds fit the type, names fit the kinds, no self-loop, and
    both pai ends in `workspace`."""
    where = f"edges[{index}]"
    for end, name, kind in (("source", source, source_kind), ("target", target, target_kind)):
        pattern = NAME_PATTERNS.get(kind)
        if pattern is None or not pattern.match(name):
            message = f"{name!r} is not the name of a {kind}"
            raise bad_request(f"{where}.{end}", message, "INVALID_EDGE")
        if kind != EXTERNAL and workspace_of(name) != workspace:
            message = f"{name} is not in {workspace}"
            raise bad_request(
                f"{where}.{end}", message, "WORKSPACE_MISMATCH", resource=name, workspace=workspace
            )
    sources, targets = ALLOWED[type_]
    if source_kind not in sources or target_kind not in targets:
        message = (
            f"{type_} joins {'/'.join(sorted(sources))} to {'/'.join(sorted(targets))}, "
            f"not {source_kind} to {target_kind}"
        )
        raise bad_request(f"{where}.type", message, "INVALID_EDGE")
    if source == target:
        message = "an edge cannot join an entity to itself"
        raise bad_request(f"{where}.target", message, "INVALID_EDGE")


def reaches(edges: Iterable[Edge], start: str, goal: str) -> bool:
    """Whether `goal` is downstream of `start` (or is it)."""
    forward: dict[str, list[str]] = {}
    for e in edges:
        forward.setdefault(e.source, []).append(e.target)
    seen = {start}
    todo = deque([start])
    while todo:
        node = todo.popleft()
        if node == goal:
            return True
        for nxt in forward.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def check_no_cycle(edges: Iterable[Edge], source: str, target: str) -> None:
    """Adding source -> target must not close a cycle: `source` may not be downstream of `target`."""
    if reaches(edges, target, source):
        raise FailedPrecondition(
            "LINEAGE_CYCLE",
            f"{source} is already downstream of {target}; the edge would close a cycle",
            source=source,
            target=target,
        )


@dataclass
class Walk:
    """The result of a walk: each node reached with its distance (nearest first), the edges among
    them, and whether a limit cut it short."""

    distances: dict[str, int] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    truncated: bool = False


def walk(start: str, edges: Iterable[Edge], direction: str, max_depth: int, max_nodes: int) -> Walk:
    """Breadth-first from `start` over `edges`: UPSTREAM against the edges, DOWNSTREAM along them,
    BOTH as the union of the two walks (not zig-zagging: a dataset's other consumers are not a
    model's lineage). The nearest `max_nodes` nodes within `max_depth` hops are kept."""
    all_edges = list(edges)
    forward: dict[str, list[str]] = {}
    backward: dict[str, list[str]] = {}
    for e in all_edges:
        forward.setdefault(e.source, []).append(e.target)
        backward.setdefault(e.target, []).append(e.source)
    ways = {UPSTREAM: [backward], DOWNSTREAM: [forward]}.get(direction, [backward, forward])
    distances: dict[str, int] = {start: 0}
    truncated = False
    # one frontier per way, advanced together so the nearest nodes are taken first
    frontiers = [[start] for _ in ways]
    seen = [{start} for _ in ways]
    depth = 0
    while any(frontiers):
        if depth >= max_depth:
            truncated = truncated or any(
                any(n not in s for node in f for n in adj.get(node, ()))
                for f, s, adj in zip(frontiers, seen, ways, strict=True)
            )
            break
        depth += 1
        for i, adj in enumerate(ways):
            nxt: list[str] = []
            for node in frontiers[i]:
                for n in adj.get(node, ()):
                    if n in seen[i]:
                        continue
                    if n not in distances and len(distances) >= max_nodes:
                        truncated = True
                        continue
                    seen[i].add(n)
                    nxt.append(n)
                    distances.setdefault(n, depth)
            frontiers[i] = nxt
    kept = [e for e in all_edges if e.source in distances and e.target in distances]
    ordered = dict(sorted(distances.items(), key=lambda kv: (kv[1], kv[0])))
    return Walk(ordered, _unique(kept), truncated)


def _unique(edges: list[Edge]) -> list[Edge]:
    seen: set[str] = set()
    out = []
    for e in edges:
        if e.id not in seen:
            seen.add(e.id)
            out.append(e)
    return out
